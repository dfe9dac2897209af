"""``resnet bench {train,infer,pipeline}``: our speed beside the reference's, measured in one process.

Each workload (ours, then the references) is built, warmed up, timed and freed before the next, so its peak
GPU memory is its own. Figures: img/s over the timed span, ms/step median and mean, peak CUDA memory, and
ours/reference ratios of img/s at the median step time (:func:`resnet.bench.run.speed_ratio`), with a warning
when other processes loaded the machine during the run. The table is printed; the full record (device, date,
versions, load average, every figure) is written as JSON. docs/benchmarks.md says what the references are and
what was measured before.

This module only declares the command (cheap to import: the CLI imports every command at start); the work is
in :mod:`resnet.bench.run`.
"""

from __future__ import annotations

import argparse

from resnet.cliargs import positive_int, width_by_height

WORKLOADS = ("train", "infer", "pipeline", "memory", "detect")  # memory: resnet.bench.memory (checkpointing's saving)
# detect: resnet.detection.bench (Faster R-CNN, ours beside torchvision's fasterrcnn_resnet50_fpn)


def _common(p: argparse.ArgumentParser, batch_help: str) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("--model", default="resnet50", help="architecture (resnet list shows them)")
    p.add_argument("--batch-size", type=positive_int, default=None, help=batch_help)
    p.add_argument("--iterations", type=positive_int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (graph capture adds its own)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--input-size", type=positive_int, default=None, help="image side; default 32 (CIFAR nets) or 224")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default torch's own); 1 avoids OpenMP stalls on a crowded machine")
    p.add_argument("--json", default=None, metavar="PATH", help="default runs/bench/<workload>-<model>-<time>.json")


def _measured(p: argparse.ArgumentParser, reference: str) -> None:
    """What the timed workloads (train, infer, pipeline) share: the reference beside ours, repeats."""
    p.add_argument("--reference", action="store_true", help=f"also time the reference ({reference}) in the same "
                                                            "process")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="measure every run this many times, interleaved; keep the least disturbed (noisy machines)")
    p.add_argument("--workers", type=int, default=2, help="loader workers (the pipeline; the CIFAR reference loader)")


def _ours(p: argparse.ArgumentParser) -> None:
    """Our speed switches (the engine's defaults when not given)."""
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="ours; default bf16 on CUDA, fp32 on CPU (the engine's); fp16 includes its loss scaling")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="ours; default on for CUDA, and for inference on the CPU")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="ours: torch.compile; default on for CUDA (the engine's); CPU inference compiles with "
                        "inductor's weight freezing")
    p.add_argument("--stride-in-1x1", action=argparse.BooleanOptionalAction, default=None,
                   help="ours; default torchvision's v1.5 layout when torchvision is the reference")
    dev = p.add_argument_group("developer knobs", "for trying the speed switches one by one; the defaults are "
                                                  "what the engine uses")
    dev.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                     help="ours: whole step as one CUDA graph; default on for CUDA")
    dev.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=None,
                     help="infer, ours: fold each BatchNorm into the convolution before it; default with --compile "
                          "and on the CPU")
    dev.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                     help="ours, with --compile: set torch._inductor.config.KEY for this run (repeatable), e.g. "
                          "max_autotune=True or conv_1x1_as_mm=True")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and one subcommand per workload, each with its own flags (``resnet bench train --help``)."""
    p = sub.add_parser("bench", help="speed of training, inference or the JPEG pipeline, beside the reference",
                       description=__doc__.splitlines()[0])
    workloads = p.add_subparsers(dest="workload", metavar="WORKLOAD")
    workloads.required = True
    batch = "default 256 (ImageNet nets), 128 (CIFAR nets)"

    t = workloads.add_parser("train", help="one training step: ours beside torchvision's eager (and compiled) loop")
    _common(t, batch)
    _measured(t, "torchvision's model in a plain eager loop")
    _ours(t)
    t.add_argument("--reference-compile", action="store_true",
                   help="also time the reference under torch.compile (bf16 channels_last on CUDA)")
    t.add_argument("--ddp", action="store_true", help="also time our step without the graph, and under "
                                                      "DistributedDataParallel in a one-process group")
    t.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP gradient bucket size (torch's default 25)")
    t.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                   help="also N nets (seeds 0..N-1) trained as one grouped net, beside the single run")
    t.add_argument("--check", action="store_true",
                   help="also run the correctness check: our step's losses beside the plain eager fp32 step's, same "
                        "seed and batches (exit 1 when they do not track)")
    t.add_argument("--check-iterations", type=positive_int, default=200, help="--check: steps of each side")
    t.add_argument("--check-run-iterations", type=int, default=600,
                   help="--check: also train the quick recipe end to end this long with our switches and as the "
                        "eager fp32 loop, and compare test errors (0 leaves it out)")
    t.add_argument("--dataset-size", type=positive_int, default=50_000, help="images in the synthetic CIFAR-shaped set")

    i = workloads.add_parser("infer", help="inference: ours (BN folded, channels_last) beside torchvision's model")
    _common(i, batch)
    _measured(i, "torchvision's model")
    _ours(i)

    q = workloads.add_parser("pipeline", help="JPEG decoding and augmentation: ours beside torchvision's loader")
    _common(q, "default 64")
    _measured(q, "torchvision's ImageFolder loader")
    q.add_argument("--data", default=None, help="an existing image folder (train/<class>/ or <class>/)")
    q.add_argument("--images", type=positive_int, default=None, help="JPEGs to generate (default 4 batches, >= 64)")
    q.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=None,
                   help="ours: workers read bytes, the device decodes (nvJPEG on CUDA); default on for CUDA")
    q.add_argument("--image-size", type=width_by_height, default=(500, 375), metavar="WxH",
                   help="generated JPEG size (default 500x375)")

    m = workloads.add_parser("memory", help="training memory with and without gradient checkpointing")
    _common(m, batch)
    d = workloads.add_parser("detect", help="Faster R-CNN training steps: ours beside torchvision's "
                                            "fasterrcnn_resnet50_fpn")
    _common(d, "default 2")

    # every workload's namespace holds every field the bench code reads (the others at their defaults)
    parsers = (t, i, q, m, d)
    defaults: dict[str, object] = {}
    for parser in parsers:
        for action in parser._actions:
            if action.dest not in ("help", "debug") and action.dest not in defaults:
                defaults[action.dest] = action.default
    for parser in parsers:
        parser.set_defaults(**{**defaults, **{a.dest: a.default for a in parser._actions
                                              if a.dest not in ("help", "debug")}},
                            handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Handler of ``resnet bench``: print the table, write the JSON record."""
    if args.workload == "memory":
        from resnet.bench.memory import memory_command

        return memory_command(args)
    if args.workload == "detect":
        from resnet.detection.bench import detect_command

        return detect_command(args)
    from resnet.bench.run import bench_command

    return bench_command(args)


__all__ = ["WORKLOADS", "cmd_bench", "register"]
