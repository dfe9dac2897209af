"""``resnet experiment NAME``: the paper's studies from the command line (registered in resnet.commands)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnet.cliargs import positive_int
from resnet.errors import ConfigError
from resnet.experiments.common import DATASETS, SCALE_NAMES, STUDY_NAMES, Context
from resnet.launch import add_launch_flags, launch_from_args

EPILOG = """studies:
  degradation  Fig. 1/6: plain-20..56 vs ResNet-20..110, training and test error curves
  depth        Table 6: ResNet-20..110 (1202 at paper scale), test error mean +- std over seeds
  shortcuts    Table 3: shortcut options A/B/C on one net, errors and parameter counts
  responses    Fig. 7: std of each 3x3 layer's response, plain-20/56 and ResNet-20/56/110
  norms        BN vs GN, LN, IN, FRN, BRN on one net
  init         He vs Xavier init, zero-init residual on/off
  preact       original ResNet-110 vs pre-activation ResNet-110 / 164
  ensemble     Table 5: ResNet-20..110 alone and their softmax-averaged ensemble
  detection    Tables 7/8: Faster R-CNN with plain-20 vs ResNet-20 backbones on the embedded digit scenes
  recipes      the paper's recipe vs a modern one (warm-up + cosine, label smoothing, MixUp, EMA) on the same nets
  all          every study but recipes, one report

scales: smoke (30 iterations per net on the CPU: a pipeline check, about a minute per study on 2 idle cores),
digits (the embedded digits at 8x8, 20- and 56-layer nets, 3 seeds, 1,200 iterations: the report says which of
the paper's claims held; `all` takes about 26 minutes on 2 CPU cores),
short (8k iterations per net: a meaningful CIFAR-10 study, well under an hour per study on one GPU),
paper (the paper's full 64k-iteration schedule).
--jobs N trains N runs at once as child processes (default 1 on CPU, one single-thread run per core at the
digits scale, up to 4 per GPU on CUDA); on a CPU shared with other work, --jobs 2 (one thread each) is often
faster than one two-thread run.
Finished runs in OUT/runs are reused; interrupted ones resume.
--launcher slurm submits each run as a Slurm job (submitit) and waits, showing the jobs' states; a preempted or
timed-out job checkpoints and is requeued, and resumes. With --no-wait it submits and returns: the same command
later submits only what no live job holds, collects the finished runs and writes the report."""


def _list(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:  # "--nets ," would silently train the study's own nets
        raise argparse.ArgumentTypeError(f"{value!r} names no nets; give comma-separated names, e.g. resnet20,resnet56")
    return names


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` subcommand."""
    p = sub.add_parser("experiment", help="run one of the paper's studies and write a report",
                       description="Train the nets a study needs and write OUT/report.md, OUT/report.html, "
                                   "PNG figures and a CSV per table.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", metavar="NAME", help=f"one of: {', '.join(STUDY_NAMES)}")
    p.add_argument("--dataset", default="digits", help=f"one of: {', '.join(DATASETS)} (default digits)")
    p.add_argument("--data", default=None, help="dataset folder (CIFAR batches or train/ and val/ class folders)")
    p.add_argument("--scale", default="smoke", help=f"one of: {', '.join(SCALE_NAMES)} (default smoke)")
    p.add_argument("--out", default=None, help="report folder (default runs/experiment-NAME-SCALE)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per net (default: depth 2, or 5 at paper "
                                                            "scale; 3 for degradation, depth and responses at "
                                                            "digits scale; others 1)")
    p.add_argument("--jobs", type=int, default=None, help="training processes at once")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--nets", type=_list, default=None, help="comma-separated nets replacing the study's own")
    p.add_argument("--runs", default=None, help="run-folder root shared between reports (default OUT/runs)")
    p.add_argument("--iterations", type=positive_int, default=None,
                   help="iterations per run instead of the scale's (the schedule's milestones scale with it)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size instead of the scale's")
    add_launch_flags(p)
    p.set_defaults(handler=cmd_experiment)


def context_from_args(args: argparse.Namespace) -> Context:
    """The experiment context the flags describe (validated by Context)."""
    out = Path(args.out) if args.out else Path("runs") / f"experiment-{args.study}-{args.scale}"
    launch = launch_from_args(args)
    if launch is not None and args.jobs is not None:
        raise ConfigError("--jobs sets how many runs train at once on this machine; with --launcher slurm each run is "
                          "its own job and the scheduler decides: drop --jobs")
    return Context(dataset=args.dataset, data=args.data, scale=args.scale, out=out, seeds=args.seeds,
                   jobs=args.jobs, device=args.device, iterations=args.iterations, batch_size=args.batch_size,
                   nets=args.nets, runs_dir=Path(args.runs) if args.runs else None, launch=launch)


def cmd_experiment(args: argparse.Namespace) -> int:
    """Handler of ``resnet experiment``: run the study, print where the report is."""
    from resnet.experiments.suite import check_study, train_and_report  # torch and the studies: only when run

    check_study(args.study)  # fail on a bad name before anything trains
    _, failed = train_and_report(args.study, context_from_args(args), log=lambda msg: print(msg, flush=True))
    if failed:
        print(f"error: {len(failed)} run(s) failed and are left out of the report (first: {failed[0]}); the same "
              "command trains them again and reuses the finished ones", file=sys.stderr)
        return 1
    return 0
