"""The work behind ``resnet bench``: resolve the switches, measure each workload, tabulate, write the JSON."""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from resnet.bench.timing import Measurement, environment, peak_memory_mib, reset_peak_memory, summarize, time_steps
from resnet.bench.workloads import (
    BenchSpec,
    Runner,
    infer_runners,
    model_family,
    single_process_group,
    train_runners,
)
from resnet.engine.distributed import resolve_device
from resnet.errors import ConfigError


def inductor_overrides(items: list[str], compiled: bool) -> tuple[tuple[str, Any], ...]:
    """``KEY=VALUE`` strings -> checked (key, Python value) pairs of torch._inductor.config."""
    if not items:
        return ()
    if not compiled:
        raise ConfigError("--inductor sets torch.compile's options: add --compile")
    from torch._inductor import config as inductor_config

    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--inductor {item!r}: expected KEY=VALUE, e.g. max_autotune=True")
        if not hasattr(inductor_config, key):
            raise ConfigError(f"--inductor {key}: torch._inductor.config has no such option "
                              f"(torch {torch.__version__})")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word: a string option such as a backend name
        out.append((key, value))
    return tuple(out)


def resolve_spec(args: argparse.Namespace) -> BenchSpec:
    """Fill every default for the device (GPU: bf16 + channels_last + graphs; CPU: the plain fp32 step, and for
    inference channels_last + folded BN, which are faster on CPUs too)."""
    device = resolve_device(args.device)
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
    if getattr(args, "check", False) and args.workload != "train":
        raise ConfigError("--check compares training steps; use it with resnet bench train")
    if getattr(args, "check", False) and args.check_iterations < 40:
        raise ConfigError(f"--check-iterations {args.check_iterations} must be >= 40 (two 20-step windows)")
    if getattr(args, "check", False) and 0 < args.check_run_iterations < 20:
        raise ConfigError(f"--check-run-iterations {args.check_run_iterations} must be 0 (no run) or >= 20")
    if getattr(args, "reference_compile", False) and not args.reference:
        raise ConfigError("--reference-compile adds to --reference; pass both")
    if getattr(args, "bucket_cap_mb", 25.0) <= 0:
        raise ConfigError(f"--bucket-cap-mb={args.bucket_cap_mb} must be > 0")
    if args.warmup < 0 or args.workers < 0:
        raise ConfigError("--warmup and --workers must be >= 0")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ConfigError(f"--threads={args.threads} must be >= 1")
    seeds = getattr(args, "seeds", None) or 1
    if seeds > 1 and args.workload != "train":
        raise ConfigError("--seeds groups training steps; use it with resnet bench train")
    if seeds > 1 and getattr(args, "ddp", False):
        raise ConfigError("--seeds and --ddp time different things; pass one of them")
    if cifar and batch > args.dataset_size:
        raise ConfigError(f"--batch-size {batch} is larger than --dataset-size {args.dataset_size}")
    compiled = cuda if args.compile is None else bool(args.compile)
    cpu_infer = args.workload == "infer" and not cuda  # inference on the CPU: NHWC + folded BN (prepare_inference)
    return BenchSpec(
        workload=args.workload, model=args.model, batch_size=batch,
        input_size=args.input_size or (32 if cifar else 224), device=device,
        precision=args.precision or ("bf16" if cuda else "fp32"),
        channels_last=(cuda or cpu_infer) if args.channels_last is None else args.channels_last,
        compile=compiled, cuda_graphs=cuda if args.cuda_graphs is None else args.cuda_graphs,
        iterations=args.iterations, warmup=args.warmup, reference=bool(args.reference), workers=args.workers,
        dataset_size=args.dataset_size, stride_in_1x1=args.stride_in_1x1,
        gpu_decode=cuda if getattr(args, "gpu_decode", None) is None else bool(args.gpu_decode),
        fold_bn=(compiled or cpu_infer) if getattr(args, "fold_bn", None) is None else bool(args.fold_bn),
        ddp=bool(getattr(args, "ddp", False)) and args.workload == "train",
        bucket_cap_mb=float(getattr(args, "bucket_cap_mb", 25.0)),
        reference_compile=bool(getattr(args, "reference_compile", False)) and args.workload == "train",
        inductor=inductor_overrides(getattr(args, "inductor", []), compiled), seeds=seeds,
    )  # fmt: skip


def measure(runner: Runner, spec: BenchSpec) -> Measurement:
    """Build, warm up, time and free one workload."""
    reset_peak_memory(spec.device)
    knobs: contextlib.AbstractContextManager = contextlib.nullcontext()
    if spec.inductor and runner.name.startswith("ours"):  # compiling happens in the warm-up: patch around both
        from torch._inductor import config as inductor_config

        knobs = inductor_config.patch(dict(spec.inductor))
    with knobs:
        built = runner.build()
        per_step, total = time_steps(built.step, spec.iterations, spec.warmup + built.setup_calls, spec.device,
                                     host_clock=built.host_clock)
    result = summarize(runner.name, runner.setup, runner.batch_size, per_step, total, peak_memory_mib(spec.device),
                       built.finish())
    del built
    gc.collect()
    return result


def measure_all(runners: list[Runner], spec: BenchSpec, repeats: int = 1) -> list[Measurement]:
    """Each runner ``repeats`` times, interleaved (ours, reference, ours, ...) so load drifts hit both sides;
    the round with the lowest median ms/step is kept (the least disturbed), the others noted in ``extra``."""
    rounds = [[measure(r, spec) for r in runners] for _ in range(max(1, repeats))]
    best = []
    for i in range(len(runners)):
        tries = [rnd[i] for rnd in rounds]
        keep = min(tries, key=lambda m: m.ms_median)
        if len(tries) > 1:
            keep.extra["repeat_ms_median"] = [round(m.ms_median, 3) for m in tries]
        best.append(keep)
    return best


def speed_ratio(ours: Measurement, ref: Measurement) -> float:
    """How many times more images per second ``ours`` does than ``ref``, at their median step times.

    Why medians: a mean (and img/s over the whole span) takes in every stall another process caused, so the
    ratio of two such figures measures the machine's load as much as the code; with ``--repeats`` each row is
    already the round with the lowest median.
    """
    return (ours.batch_size / ours.ms_median) / (ref.batch_size / ref.ms_median)


def ratios(results: list[Measurement]) -> dict[str, float]:
    """Each ``ours*`` row over each reference row of the same batch (``ours/reference`` etc.), by
    :func:`speed_ratio`."""

    def tag(name: str) -> str:
        return "-b1" if name.endswith("-b1") else ""

    out: dict[str, float] = {}
    by_name = {r.name: r for r in results}
    if "ours-ddp" in by_name and "ours-step" in by_name:  # DDP's own cost: the same step with and without it
        out["ours-ddp/ours-step"] = speed_ratio(by_name["ours-ddp"], by_name["ours-step"])
    if "ours-group" in by_name and "ours" in by_name:  # N nets as one vs N sequential runs (same img/s as one)
        out["ours-group/ours"] = speed_ratio(by_name["ours-group"], by_name["ours"])
    for ours in (r for r in results if r.name == "ours" or r.name.startswith("ours-b")):
        for ref in results:
            if ref.name.startswith("reference") and tag(ref.name) == tag(ours.name):
                out[f"{ours.name}/{ref.name}"] = speed_ratio(ours, ref)
    return out


def ratio_basis(repeats: int) -> str:
    """What the ratios are computed from, for the table."""
    rounds = f", each row the best of {repeats} interleaved rounds" if repeats > 1 else ""
    return f"ratios of img/s at the median ms/step{rounds}:"


def format_table(spec: BenchSpec, env: dict[str, Any], results: list[Measurement], rat: dict[str, float],
                 repeats: int = 1) -> str:
    """A small fixed-width table: one row per workload, then the ratios."""
    head = (f"resnet bench {spec.workload}: {spec.model if spec.workload != 'pipeline' else 'JPEG folder'}, "
            f"batch {spec.batch_size}, {spec.input_size}x{spec.input_size}, {env['device_name']}, "
            f"torch {env['torch']}, {env['date']}")
    lines = [head, f"{'run':<20} {'img/s':>10} {'ms/step med':>12} {'mean':>9} {'peak MiB':>9}  setup"]
    for r in results:
        mem = f"{r.peak_mem_mib:9.0f}" if r.peak_mem_mib is not None else f"{'-':>9}"
        lines.append(f"{r.name:<20} {r.img_s:10.1f} {r.ms_median:12.2f} {r.ms_mean:9.2f} {mem}  "
                     f"{r.setup} (batch {r.batch_size})")
    if rat:
        lines.append(ratio_basis(repeats))
    lines += [f"{name}: {value:.2f}x" for name, value in rat.items()]
    return "\n".join(lines)


def read_load() -> float | None:
    """The 1-minute load average, or None where the OS does not keep one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cores_used(spec: BenchSpec) -> int:
    """CPU cores the run keeps busy: torch's threads, plus loader workers where a loader runs."""
    workers = spec.workers if spec.workload in ("train", "pipeline") else 0
    return min(os.cpu_count() or 1, torch.get_num_threads() + workers)


def load_warning(before: float | None, after: float | None, cores: int) -> str | None:
    """A line when other processes competed for the cores during the run: the load average exceeded the cores
    the run itself uses (the 1-minute average lags, so both ends of the run are read)."""
    readings = [x for x in (before, after) if x is not None]
    if not readings or max(readings) <= cores:
        return None
    return f"warning: figures disturbed: load average {max(readings):.2f} on {cores} core{'s' * (cores != 1)}"


def run_bench(spec: BenchSpec, args: argparse.Namespace,
              load: Callable[[], float | None] | None = None) -> dict[str, Any]:
    """Measure every workload of ``spec`` and return the JSON record; ``load`` reads the load average
    (default :func:`read_load`)."""
    load = load or read_load
    if spec.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both sides: what any speed-minded training script sets
        torch.backends.cuda.matmul.allow_tf32 = True  # the references' published fp32 figures are fp32/TF32
        torch.backends.cudnn.allow_tf32 = True
    load_before = load()
    env = {**environment(spec.device), "load_avg_1m": load_before}
    if spec.workload == "pipeline":
        from resnet.bench.pipeline import image_folder, pipeline_runners

        w, h = args.image_size
        count = args.images or max(64, 4 * spec.batch_size)
        with image_folder(args.data, count, (w, h)) as root:
            results = measure_all(pipeline_runners(spec, root), spec, args.repeats)
    else:
        runners = train_runners(spec) if spec.workload == "train" else infer_runners(spec)
        with single_process_group(spec.device) if spec.ddp else contextlib.nullcontext():
            results = measure_all(runners, spec, args.repeats)
    load_after, cores = load(), cores_used(spec)
    rat = ratios(results)
    spec_dict = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in vars(spec).items()}
    disturbed = load_warning(load_before, load_after, cores)
    record = {"spec": spec_dict, "environment": {**env, "load_avg_1m_after": load_after, "cores_used": cores},
              "results": [r.to_dict() for r in results], "ratios": rat, "ratio_basis": ratio_basis(args.repeats),
              "warnings": [disturbed] if disturbed else [],
              "table": format_table(spec, env, results, rat, args.repeats) + (f"\n{disturbed}" if disturbed else "")}
    if getattr(args, "check", False):
        from resnet.bench.check import format_check, format_run, run_check, short_run

        record["check"] = run_check(spec, args.check_iterations)
        record["table"] += "\n" + format_check(record["check"])
        if args.check_run_iterations:
            record["check_run"] = short_run(spec, args.check_run_iterations)
            record["table"] += "\n" + format_run(record["check_run"])
    return record


def bench_command(args: argparse.Namespace) -> int:
    """``resnet bench``: resolve, measure, print the table, write the JSON record; returns the exit code."""
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
    failed = []
    check = record.get("check", {"passed": True})
    if not check["passed"] and any(not ok for k, ok in check["checks"].items() if k != "learned"):
        failed.append("the fast path's losses do not track the eager fp32 step's")
    elif not check["passed"]:  # tracking fine, but too short for both curves to fall far enough to judge
        failed.append(f"the check task was not learned in {check['iterations']} iterations; raise --check-iterations "
                      "(default 200)")
    run = record.get("check_run", {"passed": True})
    if not run["passed"] and not run["checks"]["learned"]:
        failed.append(f"the eager fp32 run did not learn in {run['iterations']} iterations; raise "
                      "--check-run-iterations")
    elif not run["passed"]:
        failed.append("the fast path's test error is outside the eager fp32 run's range")
    if failed:
        print(f"error: {'; '.join(failed)} (see the check lines); rerun with --precision fp32 or --no-compile to "
              "find the switch at fault", file=sys.stderr)
        return 1
    return 0


__all__ = ["bench_command", "load_warning", "measure_all", "ratios", "resolve_spec", "run_bench", "speed_ratio"]
