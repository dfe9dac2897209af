"""Submit runs as jobs through submitit, record their ids beside the run folders, wait for them with progress.

Bookkeeping is the run folders' own (finished = final.json; a checkpoint = resume) plus ``ROOT/jobs.json``: the job
id last submitted for each run folder under ROOT (a study's ``--runs``). A run gets a job only when no live job holds
it (the scheduler is asked: ``squeue``, or the process table for submitit's LocalExecutor) and no other process
writes its folder (the run-folder lock); submissions take ROOT's lock, so two commands submitting the same study at
once submit each run once. Job logs and submitit's pickles live in ``ROOT/submitit``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet.engine.runlock import LOCK_NAME, RunDirLock
from resnet.engine.runlog import last_line
from resnet.errors import ConfigError, ResNetError
from resnet.fsutil import write_atomic

if TYPE_CHECKING:
    from resnet.config import RunCfg
    from resnet.launch import Launch, SlurmCfg

Log = Callable[[str], None]
JOBS_FILE = "jobs.json"
SUBMITIT_DIR = "submitit"
MAX_TIMEOUTS = 20
"""Requeues at the time limit before submitit gives up (preemptions are not counted): an ImageNet run of several days
under a 24-hour limit needs a few."""
SIGNAL_DELAY_S = 120
"""SIGUSR2 this long before the time limit: time to finish a step and write a checkpoint."""
DEFAULT_TIME_MIN = 24 * 60
PENDING = ("PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED")


@dataclass(frozen=True)
class JobRun:
    """A run to train as a job: its folder's name under the root, its config, its folder."""

    folder: str
    cfg: RunCfg
    out: Path


def resources(cfg: RunCfg, slurm: SlurmCfg) -> dict[str, Any]:
    """submitit's parameters for one run: one GPU per CIFAR or digits run, 8 (one task each) per ImageNet run, none
    with ``--device cpu``; 10 CPUs per ImageNet task for JPEG decoding, else the partition's default (a default above
    a node's CPUs would leave the job pending forever). The flags and ``[slurm]`` table override each."""
    imagenet = cfg.data.dataset == "imagefolder"
    gpus = slurm.gpus_per_node if slurm.gpus_per_node is not None else (
        0 if cfg.train.device == "cpu" else 8 if imagenet else 1)
    params: dict[str, Any] = {
        "timeout_min": slurm.time or DEFAULT_TIME_MIN, "nodes": slurm.nodes or 1, "gpus_per_node": gpus,
        "tasks_per_node": slurm.tasks_per_node or max(1, gpus),
        "cpus_per_task": slurm.cpus_per_task or (10 if imagenet else None), "mem_gb": slurm.mem_gb,
        "slurm_partition": slurm.partition, "slurm_account": slurm.account, "slurm_qos": slurm.qos,
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
    }
    return {k: v for k, v in params.items() if v is not None}


def make_executor(launch: Launch, folder: Path) -> Any:
    """submitit's AutoExecutor for ``launch.cluster``: the same calls whichever executor it picks."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit: pip install 'resnet[slurm]'") from None
    return submitit.AutoExecutor(folder=folder, cluster=launch.cluster, slurm_max_num_timeout=MAX_TIMEOUTS,
                                 local_max_num_timeout=MAX_TIMEOUTS)


def job_state(cluster: str, job_id: str) -> str | None:
    """The scheduler's state of a live job (PENDING, RUNNING ...), None once it has ended or is unknown. Slurm is asked
    with squeue (active jobs only; sacct would need the accounting database); a LocalExecutor job is its controller
    process."""
    if cluster == "local":
        try:
            cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return "RUNNING" if b"submitit.local._local" in cmdline else None
    try:
        out = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format", "%T"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"cannot ask Slurm about job {job_id} (squeue: {e}); run this where squeue works") from None
    state = out.stdout.strip().splitlines()
    return state[0] if out.returncode == 0 and state else None


def read_jobs(root: Path) -> dict[str, dict[str, str]]:
    """``ROOT/jobs.json``: {run folder: {"job_id": ..., "cluster": ...}}; {} when none was submitted yet."""
    try:
        records = json.loads((root / JOBS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{root / JOBS_FILE} does not read ({e}); remove it once no job of this study runs") from None
    return records if isinstance(records, dict) else {}


def _writer(out: Path) -> str | None:
    """Why another process holds the run folder (its lock), or None."""
    if not (out / LOCK_NAME).exists():
        return None
    try:
        RunDirLock(out).acquire().release()
    except ConfigError as e:
        return str(e)
    return None


def submit(runs: Sequence[JobRun], root: Path, launch: Launch, log: Log, study: bool = True) -> tuple[
        dict[str, dict[str, str]], dict[str, str]]:
    """Give every run a live job, submitting only for those without one: (the jobs by run, runs held elsewhere)."""
    from resnet.config import to_dict
    from resnet.launch.job import RunJob

    lock = RunDirLock(root).acquire(wait=True)  # one submitter at a time; the other then sees the live jobs
    try:
        records = read_jobs(root)
        jobs: dict[str, dict[str, str]] = {}
        held: dict[str, str] = {}
        executor, fresh = None, 0
        for run in runs:
            if (run.out / "final.json").is_file():  # finished since the caller looked: nothing to submit
                continue
            record = records.get(run.folder)
            if record and job_state(record["cluster"], record["job_id"]) is not None:
                jobs[run.folder] = record
                continue
            writer = _writer(run.out)
            if writer is not None:
                held[run.folder] = writer
                continue
            executor = executor or make_executor(launch, root / SUBMITIT_DIR)
            executor.update_parameters(name=f"resnet-{run.folder}", **resources(run.cfg, launch.slurm))
            try:
                job = executor.submit(RunJob(to_dict(run.cfg), str(run.out.resolve()), study))
            except Exception as e:  # sbatch's refusal (partition, account, limits) in its own words
                text = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                raise ConfigError(f"the job for {run.folder} was not submitted: {text}") from None
            records[run.folder] = jobs[run.folder] = {"job_id": str(job.job_id), "cluster": launch.cluster}
            write_atomic(root / JOBS_FILE, json.dumps(records, indent=1))  # each at once: a later failure keeps it
            fresh += 1
            log(f"  {run.folder}: submitted as job {job.job_id}")
    finally:
        lock.release()
    log(f"{len(jobs)} job(s) for {len(runs)} run(s) ({launch.cluster}): {fresh} submitted now, "
        f"{len(jobs) - fresh} already queued or running" + (f", {len(held)} held by another process" if held else ""))
    return jobs, held


def _progress(runs: Sequence[JobRun], jobs: dict[str, dict[str, str]], states: dict[str, str | None]) -> str:
    groups: dict[str, list[str]] = {"pending": [], "running": [], "done": [], "failed": []}
    for run in runs:
        if run.folder not in jobs:
            continue
        state, job_id = states.get(run.folder), jobs[run.folder]["job_id"]
        what = ("done" if (run.out / "final.json").is_file() else "failed") if state is None else (
            "pending" if state in PENDING else "running")
        groups[what].append(f"{run.folder} ({job_id})")
    counts = ", ".join(f"{len(v)} {k}" for k, v in groups.items())
    live = [f"{k}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}" for k, v in groups.items()
            if v and k in ("pending", "running")]
    return f"jobs: {counts}" + (f" ({'; '.join(live)})" if live else "")


def wait(runs: Sequence[JobRun], root: Path, jobs: dict[str, dict[str, str]], launch: Launch, log: Log) -> None:
    """Poll the jobs until none is live, logging a progress line whenever it changes."""
    last = ""
    while True:
        states = {f: job_state(r["cluster"], r["job_id"]) for f, r in jobs.items()}
        line = _progress(runs, jobs, states)
        if line != last:
            log(line)
            last = line
        if all(s is None for s in states.values()):
            return
        time.sleep(launch.poll_s)


def failures(runs: Sequence[JobRun], root: Path, jobs: dict[str, dict[str, str]], held: dict[str, str]) -> dict[
        str, str]:
    """{run folder: one line} for every run without final.json: its job's ``error:`` line (or last log line)."""
    from submitit.core.utils import JobPaths

    errors: dict[str, str] = {}
    for run in runs:
        if (run.out / "final.json").is_file():
            continue
        if run.folder in held:
            errors[run.folder] = held[run.folder]
        elif run.folder in jobs:
            paths = JobPaths(root / SUBMITIT_DIR, jobs[run.folder]["job_id"], 0)
            errors[run.folder] = f"job {jobs[run.folder]['job_id']}: {last_line(paths.stdout, paths.stderr)}"
    return errors


def run_jobs(runs: Sequence[JobRun], root: Path, launch: Launch, log: Log, study: bool = True) -> dict[str, str] | None:
    """Submit what is missing; with ``launch.wait`` wait for every job and return {run folder: error line} of the runs
    that did not finish, else return None at once (the same call later collects)."""
    root.mkdir(parents=True, exist_ok=True)
    jobs, held = submit(runs, root, launch, log, study)
    if not launch.wait:
        log(f"not waiting (--no-wait): job logs in {root / SUBMITIT_DIR}; run the same command again to collect")
        return None
    try:
        wait(runs, root, jobs, launch, log)
    except KeyboardInterrupt:
        raise ResNetError("stopped waiting; the jobs go on. Run the same command again to collect them") from None
    return failures(runs, root, jobs, held)


__all__ = ["JOBS_FILE", "SUBMITIT_DIR", "JobRun", "failures", "job_state", "make_executor", "read_jobs", "resources",
           "run_jobs", "submit", "wait"]
