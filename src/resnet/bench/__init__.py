"""``resnet bench {train,infer,pipeline}``: our speed beside the reference's, measured in one process.

Each workload (ours, then the references) is built, warmed up, timed and freed before the next, so its peak
GPU memory is its own. Figures: img/s over the timed span, ms/step median and mean, peak CUDA memory, and
ours/reference ratios of img/s. The table is printed; the full record (device, date, versions, every figure)
is written as JSON. See REFERENCE.md "Speed figures" for what the references are and what was measured before.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

import torch

from resnet.bench.timing import Measurement, environment, peak_memory_mib, reset_peak_memory, summarize, time_steps
from resnet.bench.workloads import BenchSpec, Runner, infer_runners, model_family, train_runners
from resnet.errors import ConfigError

WORKLOADS = ("train", "infer", "pipeline")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser("bench", help="speed of training, inference or the JPEG pipeline, beside the reference",
                       description=__doc__.splitlines()[0])
    p.add_argument("workload", choices=WORKLOADS)
    p.add_argument("--model", default="resnet50", help="architecture (resnet list shows them)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 256 (ImageNet nets), 128 (CIFAR nets), 64 (pipeline)")
    p.add_argument("--reference", action="store_true", help="also time the reference in the same process")
    p.add_argument("--iterations", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (graph capture adds its own)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="ours; default bf16 on CUDA, fp32 on CPU (the engine's defaults)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="ours; default on for CUDA")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="ours: torch.compile")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="ours: whole step as one CUDA graph; default on for CUDA")
    p.add_argument("--input-size", type=int, default=None, help="image side; default 32 (CIFAR nets) or 224")
    p.add_argument("--stride-in-1x1", action=argparse.BooleanOptionalAction, default=None,
                   help="ours; default torchvision's v1.5 layout when torchvision is the reference")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default torch's own); 1 avoids OpenMP stalls on a crowded machine")
    p.add_argument("--workers", type=int, default=2, help="loader workers (pipeline; CIFAR reference loader)")
    p.add_argument("--dataset-size", type=int, default=50_000, help="images in the synthetic CIFAR-shaped set")
    p.add_argument("--data", default=None, help="pipeline: an existing image folder (train/<class>/ or <class>/)")
    p.add_argument("--images", type=int, default=None, help="pipeline: JPEGs to generate (default 4 batches, >= 64)")
    p.add_argument("--image-size", default="500x375", help="pipeline: generated JPEG size WxH")
    p.add_argument("--json", default=None, metavar="PATH", help="default runs/bench/<workload>-<model>-<time>.json")
    p.set_defaults(handler=cmd_bench)


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_spec(args: argparse.Namespace) -> BenchSpec:
    """Fill every default for the device (GPU: bf16 + channels_last + graphs; CPU: the plain fp32 step)."""
    device = _device(args.device)
    cuda = device.type == "cuda"
    if args.cuda_graphs and not cuda:
        raise ConfigError("--cuda-graphs needs CUDA; this run is on the CPU")
    pipeline = args.workload == "pipeline"
    cifar = not pipeline and model_family(args.model) == "cifar"
    batch = args.batch_size or (64 if pipeline else 128 if cifar else 256)
    for flag, value in (("--batch-size", batch), ("--iterations", args.iterations), ("--dataset-size",
                                                                                     args.dataset_size)):
        if value < 1:
            raise ConfigError(f"{flag}={value} must be >= 1")
    if args.warmup < 0 or args.workers < 0:
        raise ConfigError("--warmup and --workers must be >= 0")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ConfigError(f"--threads={args.threads} must be >= 1")
    if cifar and batch > args.dataset_size:
        raise ConfigError(f"--batch-size {batch} is larger than --dataset-size {args.dataset_size}")
    return BenchSpec(
        workload=args.workload, model=args.model, batch_size=batch,
        input_size=args.input_size or (32 if cifar else 224), device=device,
        precision=args.precision or ("bf16" if cuda else "fp32"),
        channels_last=cuda if args.channels_last is None else args.channels_last,
        compile=bool(args.compile), cuda_graphs=cuda if args.cuda_graphs is None else args.cuda_graphs,
        iterations=args.iterations, warmup=args.warmup, reference=bool(args.reference), workers=args.workers,
        dataset_size=args.dataset_size, stride_in_1x1=args.stride_in_1x1,
    )  # fmt: skip


def measure(runner: Runner, spec: BenchSpec) -> Measurement:
    """Build, warm up, time and free one workload."""
    reset_peak_memory(spec.device)
    built = runner.build()
    per_step, total = time_steps(built.step, spec.iterations, spec.warmup + built.setup_calls, spec.device,
                                 host_clock=built.host_clock)
    result = summarize(runner.name, runner.setup, runner.batch_size, per_step, total, peak_memory_mib(spec.device),
                       built.finish())
    del built
    gc.collect()
    return result


def ratios(results: list[Measurement]) -> dict[str, float]:
    """img/s of each ``ours*`` row over each reference row of the same batch (``ours/reference`` etc.)."""

    def tag(name: str) -> str:
        return "-b1" if name.endswith("-b1") else ""

    out: dict[str, float] = {}
    for ours in (r for r in results if r.name.startswith("ours")):
        for ref in results:
            if ref.name.startswith("reference") and tag(ref.name) == tag(ours.name):
                out[f"{ours.name}/{ref.name}"] = ours.img_s / ref.img_s
    return out


def format_table(spec: BenchSpec, env: dict[str, Any], results: list[Measurement], rat: dict[str, float]) -> str:
    """A small fixed-width table: one row per workload, then the ratios."""
    head = (f"resnet bench {spec.workload}: {spec.model if spec.workload != 'pipeline' else 'JPEG folder'}, "
            f"batch {spec.batch_size}, {spec.input_size}x{spec.input_size}, {env['device_name']}, "
            f"torch {env['torch']}, {env['date']}")
    lines = [head, f"{'run':<20} {'img/s':>10} {'ms/step med':>12} {'mean':>9} {'peak MiB':>9}  setup"]
    for r in results:
        mem = f"{r.peak_mem_mib:9.0f}" if r.peak_mem_mib is not None else f"{'-':>9}"
        lines.append(f"{r.name:<20} {r.img_s:10.1f} {r.ms_median:12.2f} {r.ms_mean:9.2f} {mem}  "
                     f"{r.setup} (batch {r.batch_size})")
    lines += [f"{name}: {value:.2f}x" for name, value in rat.items()]
    return "\n".join(lines)


def run_bench(spec: BenchSpec, args: argparse.Namespace) -> dict[str, Any]:
    """Measure every workload of ``spec`` and return the JSON record."""
    if spec.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both sides: what any speed-minded training script sets
        torch.backends.cuda.matmul.allow_tf32 = True  # REFERENCE.md's fp32 figures are fp32/TF32
        torch.backends.cudnn.allow_tf32 = True
    env = environment(spec.device)
    if spec.workload == "pipeline":
        from resnet.bench.pipeline import image_folder, pipeline_runners

        w, h = (int(v) for v in args.image_size.lower().split("x"))
        count = args.images or max(64, 4 * spec.batch_size)
        with image_folder(args.data, count, (w, h)) as root:
            results = [measure(r, spec) for r in pipeline_runners(spec, root)]
    else:
        runners = train_runners(spec) if spec.workload == "train" else infer_runners(spec)
        results = [measure(r, spec) for r in runners]
    rat = ratios(results)
    spec_dict = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in vars(spec).items()}
    return {"spec": spec_dict, "environment": env, "results": [r.to_dict() for r in results], "ratios": rat,
            "table": format_table(spec, env, results, rat)}


def cmd_bench(args: argparse.Namespace) -> int:
    """Handler of ``resnet bench``: print the table, write the JSON record."""
    if args.workload == "pipeline" and args.input_size is None:
        args.input_size = 224
    spec = resolve_spec(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = run_bench(spec, args)
    print(record["table"], flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    what = "jpeg" if spec.workload == "pipeline" else spec.model
    path = Path(args.json) if args.json else Path("runs") / "bench" / f"{spec.workload}-{what}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"json: {path}")
    return 0


__all__ = ["WORKLOADS", "cmd_bench", "register", "resolve_spec", "run_bench"]
