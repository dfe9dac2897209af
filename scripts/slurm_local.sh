#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (Debian's slurm-wlm and munge; as root, no network beyond the Debian
# mirror), then `resnet experiment --launcher slurm` on it: a smoke study whose running job is `scontrol requeue`d
# and resumes, and a 2-task CPU (gloo) run compared bit for bit with `torchrun --nproc_per_node 2`.
#
#   sudo scripts/slurm_local.sh [STATE_DIR]        (default /tmp/resnet-slurm; `stop` as the only argument stops it)
#
# Everything the cluster writes (config, munge key and socket, spool, state, logs) lives under STATE_DIR; nothing in
# /etc is changed, so the script can run beside a real installation. Daemons run as root (SlurmUser=root): a
# throw-away test cluster, not a deployment. Ports: SLURMCTLD_PORT / SLURMD_PORT (default 16817 / 16818).
set -euo pipefail

STATE=${1:-/tmp/resnet-slurm}
if [[ "${1:-}" == stop ]]; then
    STATE=${2:-/tmp/resnet-slurm}
    for name in slurmd slurmctld munged; do
        [[ -f "$STATE/$name.pid" ]] && kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
    done
    exit 0
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
CTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))

step() { printf '\n== %s\n' "$*"; }

step "install slurm-wlm and munge (Debian packages)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge
fi
slurmctld -V

step "munge: a private key and socket under $STATE"
mkdir -p "$STATE"/{munge,spool,state,log,out}
chmod 700 "$STATE/munge"
[[ -f "$STATE/munge/munge.key" ]] || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE/munge/munge.key"
SOCKET="$STATE/munge/munge.sock"
if ! munge -n --socket="$SOCKET" >/dev/null 2>&1; then
    munged --force --socket="$SOCKET" --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munge.seed"
fi
munge -n --socket="$SOCKET" | unmunge --socket="$SOCKET" | grep STATUS

step "slurm.conf: one node ($NODE, $CPUS CPUs, ${MEM_MB} MB), one partition"
cat > "$STATE/slurm.conf" <<EOF
ClusterName=resnet-local
SlurmctldHost=$NODE
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups in a container: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Requeued jobs start again at once (the default waits 60 s+ before a requeued job is eligible).
JobRequeue=1
KillWait=30
MinJobAge=60
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$STATE/slurm.conf"

step "start slurmctld and slurmd"
[[ -f "$STATE/slurmctld.pid" ]] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || slurmctld -i
[[ -f "$STATE/slurmd.pid" ]] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null || slurmd
for _ in $(seq 60); do
    sinfo --noheader --format '%t' 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo
srun --ntasks 1 hostname

export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
OUT="$STATE/out"
rm -rf "$OUT/study" "$OUT/reference" "$OUT/gloo-slurm" "$OUT/gloo-torchrun"
STUDY=(experiment depth --nets resnet20 --seeds 2 --iterations 300 --batch-size 8 --device cpu)
printf '[slurm]\ncpus_per_task = 1\ntime = "00:30:00"\n' > "$OUT/cluster.toml"  # both jobs fit on 2 CPUs

step "a smoke study submitted to Slurm (--no-wait), then one running job requeued with scontrol"
python -m resnet "${STUDY[@]}" --out "$OUT/study" --launcher slurm --slurm-config "$OUT/cluster.toml" --no-wait
JOB=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['resnet20-seed0']['job_id'])" \
    "$OUT/study/runs/jobs.json")
for _ in $(seq 300); do  # until seed 0 has trained a few iterations
    [[ -f "$OUT/study/runs/resnet20-seed0/train.jsonl" ]] && break
    sleep 1
done
squeue
scontrol requeue "$JOB"
sleep 2
squeue

step "the same command again: submits nothing, waits for the jobs, writes the report"
python -m resnet "${STUDY[@]}" --out "$OUT/study" --launcher slurm --slurm-config "$OUT/cluster.toml"
ls "$OUT/study/runs/resnet20-seed0"
test -f "$OUT/study/runs/resnet20-seed0/run-resumed.json" && echo "resnet20-seed0 resumed after the requeue"

step "the same study in one process: identical weights"
python -m resnet "${STUDY[@]}" --out "$OUT/reference" --jobs 1 >/dev/null 2>&1
python - "$OUT" <<'EOF'
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

out = Path(sys.argv[1])
for run in ("resnet20-seed0", "resnet20-seed1"):
    a = load_file(str(out / "study/runs" / run / "model.safetensors"))
    b = load_file(str(out / "reference/runs" / run / "model.safetensors"))
    same = sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    print(f"{run}: Slurm job vs in-process: {'bit-identical' if same else 'DIFFERENT'}")
    assert same
EOF

step "a 2-task CPU run on Slurm (one process group, gloo) vs torchrun --nproc_per_node 2"
TRAIN=(train --device cpu --iterations 20 --batch-size 16 --eval-every 10 --threads 1)
python -m resnet "${TRAIN[@]}" --launcher slurm --gpus-per-node 0 --tasks-per-node 2 --time 10 \
    --out "$OUT/gloo-slurm"
torchrun --standalone --nproc_per_node 2 -m resnet "${TRAIN[@]}" --out "$OUT/gloo-torchrun" >/dev/null 2>&1
python - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

out = Path(sys.argv[1])
a, b = load_file(str(out / "gloo-slurm/model.safetensors")), load_file(str(out / "gloo-torchrun/model.safetensors"))
assert json.loads((out / "gloo-slurm/run.json").read_text())["world_size"] == 2
same = sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
print(f"2 Slurm tasks vs torchrun --nproc_per_node 2: {'bit-identical' if same else 'DIFFERENT'} weights")
assert same
EOF

step "done (stop the cluster with: $0 stop $STATE)"
