#!/usr/bin/env bash
# The GPU measurements behind docs/benchmarks.md (one GPU machine; writes under $OUT).
# Usage: scripts/gpu_suite.sh SECTION...
#   sections: env tests loop track check knobs-r50 knobs-r56 knobs-r56-fusion decode experiment trainer cifar cifar-variants r50 r50-compile autotune infer
#             infer-nofold pipeline ddp e2e group detect modern
set -uo pipefail
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT/json"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
bench() { python3 -m resnet bench "$@"; }
# A CIFAR-10-format folder of random pixels (timing only) in /tmp/c10.
make_c10() { python3 - <<'PY'
import pickle, numpy as np, pathlib
root = pathlib.Path("/tmp/c10/cifar-10-batches-py"); root.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, 10000).tolist(),
             b"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8), b"filenames": [b"f.png"] * 10000}
    pickle.dump(batch, open(root / name, "wb"), protocol=2)
names = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]
pickle.dump({b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}, open(root / "batches.meta", "wb"))
PY
}
for section in "$@"; do
  echo "=== $section $(date -u +%H:%M:%S)"
  case $section in
    env) nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
         python3 -c "import torch,torchvision;print(torch.__version__,torchvision.__version__,torch.version.cuda,torch.backends.cudnn.version())";;
    tests) timeout 330 python3 -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors -m gpu tests \
             2>&1 | tee "$OUT/json/tests.log" | tail -40;;
    loop) make_c10  # the real loop on CIFAR-format data with the GPU defaults: SIGTERM, resume, eval, export
         python3 -m resnet train --recipe paper-cifar --dataset cifar10 --data /tmp/c10 --model resnet20 \
           --iterations 1500 --eval-every 750 --checkpoint-every 250 --out /tmp/loop > /tmp/loop.log 2>&1 & pid=$!
         for _ in $(seq 600); do [ -f /tmp/loop/checkpoints/ckpt-00000500.json ] && break; sleep 0.2; done
         kill -TERM $pid; wait $pid; echo "first run rc=$? (143 = stopped by SIGTERM)"; tail -4 /tmp/loop.log
         /usr/bin/time -f "resume wall %e s" python3 -m resnet train --resume /tmp/loop 2>&1 | grep -v "^ *$" | tail -8
         python3 -m resnet eval /tmp/loop --device cuda 2>&1 | tail -4
         python3 -m resnet export --weights /tmp/loop --format onnx --out /tmp/loop/m.onnx 2>&1 | tail -3
         cp /tmp/loop/metrics.jsonl "$OUT/json/loop-metrics.jsonl"; cp /tmp/loop/final.json "$OUT/json/loop-final.json";;
    cifar) for m in resnet20 resnet56 resnet110; do
             bench train --model $m --reference --iterations 300 --warmup 20 --workers 8 --json "$OUT/json/train-$m.json"
           done;;
    cifar-variants) for v in "--precision fp16" "--compile"; do
             bench train --model resnet56 $v --iterations 300 --warmup 20 --json "$OUT/json/train-resnet56-${v//[- ]/}.json"
           done;;
    track) python3 scripts/gpu_track.py;;
    ddp) for b in 25 100; do
           bench train --model resnet50 --no-compile --ddp --bucket-cap-mb $b --iterations 30 --warmup 8 \
             --json "$OUT/json/train-resnet50-ddp-bucket$b.json"
         done
         bench train --model resnet56 --no-compile --ddp --iterations 200 --warmup 20 --json "$OUT/json/train-resnet56-ddp.json";;
    decode) python3 scripts/gpu_decode_probe.py;;
    e2e) python3 -c "
from pathlib import Path
from resnet.bench.pipeline import make_jpeg_folder
make_jpeg_folder(Path('/tmp/folder/train'), 1024, classes=8); make_jpeg_folder(Path('/tmp/folder/val'), 128, classes=8, seed=1)"
         /usr/bin/time -f "e2e wall %e s" python3 -m resnet train --dataset imagefolder --data /tmp/folder --model resnet18 \
           --iterations 60 --batch-size 128 --eval-every 30 --workers 8 --device cuda --out /tmp/e2e 2>&1 | tail -6;;
    experiment) make_c10
         /usr/bin/time -f "experiment wall %e s" timeout 300 python3 -m resnet experiment degradation --dataset cifar10 \
           --data /tmp/c10 --scale short --iterations 2000 --nets resnet20,resnet56,resnet110,plain56 --jobs 4 \
           --out /tmp/exp 2>&1 | tail -15
         cp /tmp/exp/report.md "$OUT/json/experiment-report.md" 2>/dev/null;;
    trainer) make_c10  # the real training loop's img/s (its log line) beside the bench step of the same net
         for m in resnet20 resnet56; do
           timeout 240 python3 -m resnet train --recipe paper-cifar --dataset cifar10 --data /tmp/c10 --model $m \
             --iterations 3000 --eval-every 1500 --checkpoint-every 0 --out /tmp/trainer-$m 2>&1 | grep -E "img/s|final"
           bench train --model $m --iterations 300 --warmup 20 --json "$OUT/json/train-$m-beside-trainer.json"
         done;;
    check) # the quick-recipe run (600 iterations each way) for ResNet-56 only: the GPU tests train ResNet-20's
           bench train --model resnet20 --check --check-run-iterations 0 --iterations 50 --json "$OUT/json/check-resnet20.json"
           bench train --model resnet56 --check --iterations 50 --json "$OUT/json/check-resnet56.json"
           bench train --model resnet56 --precision fp16 --check --check-run-iterations 0 --iterations 50 \
             --json "$OUT/json/check-resnet56-fp16.json";;
    knobs-r50) # compiler options for the ResNet-50 training target (not met); max_autotune compiles for minutes
           for k in "--inductor conv_1x1_as_mm=True" "--inductor max_autotune=True"; do
             timeout 280 python3 -m resnet bench train --model resnet50 --compile $k --reference --reference-compile \
               --iterations 40 --warmup 8 --json "$OUT/json/knobs-resnet50-${k//[-= ]/}.json" 2>&1 | grep -E "^ours|^ref|x$|error"
           done;;
    knobs-r56) # the same for CIFAR ResNet-56 (45k img/s target, not met)
           for k in "--inductor coordinate_descent_tuning=True" "--inductor max_autotune=True --inductor coordinate_descent_tuning=True"; do
             timeout 280 python3 -m resnet bench train --model resnet56 --compile $k --iterations 300 --warmup 20 \
               --json "$OUT/json/knobs-resnet56-${k//[-= ]/}.json" 2>&1 | grep -E "^ours|error"
           done;;
    knobs-r56-fusion) # fewer, larger kernels: the ResNet-56 step is hundreds of small ones (one call)
           for k in "--inductor combo_kernels=True" "--inductor aggressive_fusion=True"; do
             timeout 280 python3 -m resnet bench train --model resnet56 --compile $k --iterations 300 --warmup 20 \
               --json "$OUT/json/knobs-resnet56-${k//[-= ]/}.json" 2>&1 | grep -E "^ours|error"
           done;;
    r50) bench train --model resnet50 --reference --iterations 40 --warmup 8 --json "$OUT/json/train-resnet50.json"
         bench train --model resnet50 --stride-in-1x1 --iterations 40 --warmup 8 --json "$OUT/json/train-resnet50-v1.json";;
    r50-compile) bench train --model resnet50 --compile --iterations 40 --warmup 8 --json "$OUT/json/train-resnet50-compile.json"
         bench train --model resnet50 --reference --reference-compile --iterations 40 --warmup 8 \
           --json "$OUT/json/train-resnet50-refcompile.json";;
    autotune) TORCHINDUCTOR_MAX_AUTOTUNE=1 timeout 180 python3 -m resnet bench train --model resnet56 --compile \
           --iterations 300 --warmup 20 --json "$OUT/json/train-resnet56-autotune.json";;
    infer) bench infer --model resnet50 --reference --iterations 50 --warmup 10 --json "$OUT/json/infer-resnet50.json"
           bench infer --model resnet50 --compile --iterations 50 --warmup 10 --json "$OUT/json/infer-resnet50-compile.json";;
    infer-nofold) bench infer --model resnet50 --no-fold-bn --compile --iterations 50 --warmup 10 \
           --json "$OUT/json/infer-resnet50-compile-nofold.json";;
    pipeline) bench pipeline --batch-size 256 --images 8192 --workers 15 --reference --iterations 64 --warmup 2 \
                --json "$OUT/json/pipeline.json";;
    group) # N nets of one architecture as one grouped net (resnet.models.grouped) beside one run of today's path;
           # the group's peak memory beside the single run's (N separate processes hold N times that)
           for m in resnet20 resnet56; do
             timeout 200 python3 -m resnet bench train --model $m --seeds 5 --iterations 200 --warmup 20 \
               --json "$OUT/json/train-$m-seeds5.json" 2>&1 | grep -E "^ours|x$|error"
           done;;
    detect) # detection on CUDA with the defaults (C4 and FPN): a SIGTERM mid-run, the resume, eval; then the
           # training step beside torchvision's own fasterrcnn_resnet50_fpn in the same process
           for d in c4 fpn; do
             python3 -m resnet detect train --design $d --device cuda --iterations 400 --eval-every 200 \
               --checkpoint-every 100 --out /tmp/det-$d > /tmp/det-$d.log 2>&1 & pid=$!
             for _ in $(seq 900); do [ -f /tmp/det-$d/checkpoints/ckpt-00000200.json ] && break; sleep 0.2; done
             kill -TERM $pid; wait $pid; echo "detect $d first run rc=$? (143 = stopped by SIGTERM)"; tail -3 /tmp/det-$d.log
             /usr/bin/time -f "detect $d resume wall %e s" timeout 240 python3 -m resnet detect train --resume /tmp/det-$d \
               2>&1 | tail -4
             timeout 120 python3 -m resnet detect eval /tmp/det-$d --device cuda 2>&1 | tail -3
             cp /tmp/det-$d/metrics.jsonl "$OUT/json/detect-$d-metrics.jsonl" 2>/dev/null
           done
           timeout 240 python3 -m resnet bench detect --model resnet50 --device cuda --batch-size 2 --iterations 20 \
             --warmup 5 --json "$OUT/json/bench-detect-resnet50.json" 2>&1 | tail -6;;
    modern) # the modern recipes' GPU paths: a shrunk tv-imagenet-v2 (EMA, mixup/cutmix, TrivialAugment, repeated
           # augmentation) and rsb-a3 (LAMB, BCE, timm's RandAugment, bicubic) on a JPEG folder, with a SIGTERM and
           # resume; then cifar-modern's fused-optimizer step under CUDA graphs
           python3 -c "
from pathlib import Path
from resnet.bench.pipeline import make_jpeg_folder
make_jpeg_folder(Path('/tmp/folder/train'), 1024, classes=8); make_jpeg_folder(Path('/tmp/folder/val'), 128, classes=8, seed=1)"
           for r in tv-imagenet-v2 rsb-a3; do
             timeout 200 python3 -m resnet train --recipe $r --data /tmp/folder --model resnet50 --iterations 120 \
               --epochs none --batch-size 64 --eval-every 60 --checkpoint-every 30 --workers 12 --device cuda \
               --out /tmp/modern-$r > /tmp/modern-$r.log 2>&1 & pid=$!
             for _ in $(seq 900); do [ -f /tmp/modern-$r/checkpoints/ckpt-00000060.json ] && break; sleep 0.2; done
             kill -TERM $pid; wait $pid; echo "$r first run rc=$? (143 = stopped by SIGTERM)"; tail -3 /tmp/modern-$r.log
             timeout 200 python3 -m resnet train --resume /tmp/modern-$r 2>&1 | tail -4
           done
           make_c10
           timeout 200 python3 -m resnet train --recipe cifar-modern --data /tmp/c10 --optimizer adamw --lr 1e-3 \
             --iterations 600 --eval-every 300 --out /tmp/modern-cifar 2>&1 | grep -E "img/s|final|error";;
    *) echo "unknown section $section"; exit 2;;
  esac
done
tar -C "$OUT" -czf "$OUT/json.tgz" json && rm -rf "$OUT/json"
