"""Run one study, or all of them, and write the report.

``all`` plans every study first and trains the union of their runs in one pool (runs that several studies
share, such as ResNet-20 seed 0, train once), then writes one report with a section per study.
"""

from __future__ import annotations

import importlib
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from resnet.analysis.report import Section, write_report
from resnet.config import RunCfg
from resnet.errors import ConfigError
from resnet.experiments import figures
from resnet.experiments.claims import HELD, Z
from resnet.experiments.common import SCALES, STUDY_MODULES, STUDY_NAMES, Context, RunResult, RunSpec
from resnet.experiments.runner import Log, default_jobs, execute, resolve_device

STUDIES: dict[str, ModuleType] = {name: importlib.import_module(f"resnet.experiments.{module}")
                                  for name, module in STUDY_MODULES.items()}

NOT_IN_ALL: tuple[str, ...] = ("recipes",)

DATA_NOTES = {
    "digits": "the embedded handwritten digits (1,437 training / 360 test images, 8x8 scans upscaled to 32x32, "
              "10 classes), not CIFAR-10",
    "cifar10": "CIFAR-10 (45k/5k train/validation split, 10k test), as in the paper",
    "cifar100": "CIFAR-100 (45k/5k split, 10k test); the paper's numbers are CIFAR-10's",
    "imagefolder": "an ImageNet-style image folder",
}


def _command_line() -> str:
    """How this study was started: ``resnet experiment ...`` from the CLI (also ``python -m resnet``), else argv."""
    if not sys.argv:
        return "?"
    args = " ".join(shlex.quote(a) for a in sys.argv[1:])
    return f"resnet {args}" if Path(sys.argv[0]).name in ("resnet", "__main__.py") else " ".join(sys.argv)


def check_study(name: str) -> list[str]:
    """The study names to run for ``name``, or a one-line ConfigError listing the valid ones."""
    if name == "all":  # the paper's and its close relatives; recipes trains every net twice more: run it by name
        return [study for study in STUDIES if study not in NOT_IN_ALL]
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of: {', '.join(STUDY_NAMES)}")
    return [name]


def differences(ctx: Context, iterations: int | None) -> str:
    """The plain statement of why our numbers differ from the paper's."""
    parts = [f"Data: {DATA_NOTES[ctx.dataset]}."]
    if ctx.scale != "paper" or ctx.dataset != "cifar10":
        parts.append(f"Schedule: {iterations or '?'} iterations per net instead of the paper's 64k.")
    scale = SCALES[ctx.scale]
    side = scale.data.get("digits_size")
    if side:
        parts.append(f"The {ctx.scale} scale trains on {side}x{side} digits instead of 32x32 upscaled ones (the scans "
                     f"are 8x8: the same information; the nets are the paper's, with feature maps {side}/{side // 2}/"
                     f"{side // 4} instead of 32/16/8)"
                     + (f" and only the {' and '.join(map(str, scale.depths))}-layer nets unless --nets names others"
                        if scale.depths else "")
                     + ": it is sized for a CPU and for the paper's qualitative claims, not to match its numbers.")
    if ctx.scale == "smoke":
        parts.append("At smoke scale the nets are far from converged: the numbers check the pipeline end to end "
                     "and their ordering is mostly noise; none of the paper's conclusions can be read from them.")
    elif ctx.dataset != "cifar10" or ctx.scale != "paper":
        parts.append("Absolute errors therefore differ from the paper's; compare the orderings and trends.")
    parts.append("The paper's columns are its CIFAR-10 test errors, except the shortcut study's, which are its "
                 "ImageNet errors (Table 3); they are printed beside ours for reference, not as targets at this "
                 "scale.")
    return " ".join(parts)


def lead(ctx: Context, names: Sequence[str], sections: Sequence[Section]) -> Section | None:
    """The report's first lines: which of the paper's claims (and a study beyond the paper's own) held on these
    runs, with the statistic behind each."""
    lines = [line for sec in sections for line in sec.headline]
    whose = "The paper's claims" if all(getattr(STUDIES[n], "FROM_THE_PAPER", True) for n in names) else "The claims"
    if not SCALES[ctx.scale].claims:
        if not any(hasattr(STUDIES[n], "claims") for n in names):
            return None
        return Section(whose, ["Not tested at smoke scale: the nets have barely started to learn, so any ordering "
                               "is noise. `--scale digits` tests them on the embedded digits in minutes."])
    if not lines:
        return None
    held = sum(line.startswith(f"**{HELD.upper()}**") for line in lines)
    rule = (f"{held} of {len(lines)} held. Each claim compares final values over independent seeds: the difference "
            f"of means and its standard error; held = in the claimed direction by more than {Z:g} standard errors "
            "(for 'not worse' claims: not worse by more than that); not shown = within the seeds' noise or one seed.")
    return Section(f"{whose} on these runs", [rule, *lines])


def _iterations(results: dict[str, RunResult]) -> int | None:
    its = {r.final.get("iterations") or r.spec.cfg.train.iterations for r in results.values()}
    return max(its) if its else None


def _meta(ctx: Context, results: dict[str, RunResult], specs: Sequence[RunSpec], wall: float,
          trained: int) -> list[tuple[str, object]]:
    if ctx.launch is not None:  # the runs' own hardware is in each run.json
        where = f"{ctx.launch.cluster} jobs submitted with submitit, one per run (each run.json names its hardware)"
    else:
        device = resolve_device(ctx.device)
        threads = torch.get_num_threads()
        hw = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()}, {threads} threads)"
        jobs = ctx.jobs or default_jobs(ctx.device, max(trained, 1), SCALES[ctx.scale].cpu_jobs)
        where = f"{hw}; {jobs} training job(s) at a time"
    seeds = sorted({s.seed for s in specs})
    cfg = specs[0].cfg if specs else None
    run_time = sum(r.wall_s or 0.0 for r in results.values())
    return [
        ("dataset", f"{ctx.dataset}" + (f" ({ctx.data})" if ctx.data else "")),
        ("scale", f"{ctx.scale}: {SCALES[ctx.scale].description}"
                  + (f" (shortened to {ctx.iterations} iterations by --iterations)" if ctx.iterations else "")),
        ("iterations per net", _iterations(results)),
        ("batch size", cfg.train.batch_size if cfg else "?"),
        ("recipe", f"{cfg.recipe} (lr {cfg.optim.lr}, milestones {list(cfg.optim.milestones)}, weight decay "
                   f"{cfg.optim.weight_decay})" if cfg else "?"),
        ("seeds", f"{len(seeds)} ({', '.join(map(str, seeds))})"),
        ("hardware", where),
        ("wall time", f"{wall:.0f} s for this invocation ({trained} runs trained, {len(results) - trained} reused); "
                      f"{run_time:.0f} s of training summed over runs"),
        ("runs", str(ctx.runs)),
        ("command", _command_line()),
        ("date", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]


def _check_data(cfg: RunCfg) -> None:
    """Every run of a study reads the same dataset: open it once before anything trains, so a missing or broken
    folder is one error (DataError) rather than the same failure once per run."""
    from resnet.data import build_data

    build_data(cfg.data, cfg.train.batch_size, torch.device("cpu"), cfg.train.seed)


def run_experiment(name: str, ctx: Context, log: Log = print) -> list[Path]:
    """Train what study ``name`` needs (or every study for ``all``) and write the report into ``ctx.out``."""
    return train_and_report(name, ctx, log)[0]


def train_and_report(name: str, ctx: Context, log: Log = print) -> tuple[list[Path], list[str]]:
    """:func:`run_experiment`, also returning the runs that failed (``folder (error)``): the report leaves them out
    of its tables and lists them, and the CLI exits non-zero."""
    names = check_study(name)
    t0 = time.perf_counter()
    plans = {n: STUDIES[n].plan(ctx) for n in names}
    every = [s for specs in plans.values() for s in specs]
    if ctx.launch is None:  # --device cuda without a GPU: one error before anything trains (jobs run elsewhere)
        resolve_device(ctx.device)
    before = {s.folder for s in every if (ctx.runs / s.folder / "final.json").is_file()}
    if len(before) < len({s.folder for s in every}):
        _check_data(every[0].cfg)
    ctx.out.mkdir(parents=True, exist_ok=True)
    results = execute(every, ctx.runs, ctx.jobs, ctx.device, log, SCALES[ctx.scale].cpu_jobs, ctx.launch)
    if results is None:  # jobs submitted, not waited for: the same command collects them and writes the report
        return [], []
    sections: list[Section] = []
    stamp = f"{ctx.dataset}, {ctx.scale} scale, {_iterations(results) or '?'} iterations per net"
    with figures.stamped(stamp + (" (a pipeline check, not a result)" if ctx.scale == "smoke" else "")):
        for n in names:
            log(f"report: {n}")
            sections.append(STUDIES[n].report(ctx, plans[n], results))
    wall = time.perf_counter() - t0
    failed = [f"{f} ({r.error})" for f, r in results.items() if r.error is not None]
    intro = Section("How these numbers compare with the paper", [differences(ctx, _iterations(results))])
    if failed:
        intro.blocks.append("Runs that failed (missing from tables and figures): " + "; ".join(failed))
    title = f"ResNet experiments: {name} ({ctx.dataset}, {ctx.scale} scale)"
    trained = len({s.folder for s in every} - before)
    paths = write_report(ctx.out, title, _meta(ctx, results, every, wall, trained), [intro, *sections],
                         lead(ctx, names, sections))
    log(f"report: {paths[0]} and {paths[1]}")
    return paths, failed
