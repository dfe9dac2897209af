"""What every study shares: the scales, the per-run config, run specs and results, and seed statistics.

A study is a list of :class:`RunSpec` (one per net, variant and seed) plus a report over their
:class:`RunResult`. A run's folder name is its model and variant (``resnet56``, ``resnet20-normgn``) and seed,
and identical names always mean identical configs, so studies that need the same run (ResNet-20 appears in
Fig. 6, Table 6 and Fig. 7) share one folder instead of training it again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet.config import RunCfg, build_config, load_recipe, merge
from resnet.engine.runlog import read_metrics
from resnet.errors import ConfigError
from resnet.paper import depth_of

if TYPE_CHECKING:
    from resnet.launch import Launch

SCALE_NAMES: tuple[str, ...] = ("smoke", "digits", "short", "paper")
STUDY_MODULES: dict[str, str] = {"degradation": "degradation", "depth": "depth", "shortcuts": "shortcuts",
                                 "responses": "responses", "norms": "norms", "init": "initialization",
                                 "preact": "preact", "ensemble": "ensemble", "detection": "detection",
                                 "recipes": "recipes"}
"""Each study's name (``resnet experiment NAME``) and its module in resnet.experiments."""
STUDY_NAMES: tuple[str, ...] = (*STUDY_MODULES, "all")
DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "imagefolder")


@dataclass(frozen=True)
class Scale:
    """How long each net trains; None = the recipe's own value."""

    iterations: int | None
    batch_size: int | None
    eval_every: int | None
    description: str
    data: dict[str, Any] = field(default_factory=dict)
    """Data options the scale sets (the digits scale trains on 16x16 digits)."""
    dataset: str | None = None
    """The one dataset the scale is calibrated for; None = any."""
    cpu_jobs: bool = False
    """On CPU, train one single-thread run per core at once (small nets use cores better side by side)."""
    depths: tuple[int, ...] | None = None
    """The only depths the studies' default nets keep (``--nets`` still trains any); None = all."""
    cpu_sized: bool = False
    """Sized for a CPU: the one-net studies (shortcuts, norms, init) use ResNet-20 instead of a deeper net."""
    claims: bool = True
    """Whether the report tests the paper's claims (not at smoke scale: nothing there has converged)."""


DIGITS_ITERATIONS = 1200
SCALES: dict[str, Scale] = {
    # A pipeline check: every net trains a few dozen steps; errors are far from converged.
    "smoke": Scale(30, 32, 10, "30 iterations per net at batch 32, lr /10 at 50% and 75% (a pipeline check, "
                               "not a result: the nets have barely started to learn)", cpu_sized=True,
                   claims=False),
    # The smallest schedule at which the paper's qualitative claims (Fig. 1/6, Table 6's trend, Fig. 7) show on the
    # embedded digits; `resnet experiment all --scale digits` fits in 30 minutes on 2 CPU cores (docs/studies.md).
    "digits": Scale(DIGITS_ITERATIONS, 128, DIGITS_ITERATIONS // 4,
                    f"{DIGITS_ITERATIONS:,} iterations per net at batch 128 on the 8x8 scans, lr /10 at 50% and 75%, "
                    "20- and 56-layer nets (the paper's claims on the embedded data, in minutes on a CPU)",
                    data={"digits_size": 8}, dataset="digits", cpu_jobs=True, depths=(20, 56), cpu_sized=True),
    # Sec. 4.2's schedule compressed 8x: lr 0.1, /10 at 50% and 75% of the iterations, batch 128. Timed on one
    # H200 (2026-11-26, docs/benchmarks.md): ResNet-20, -56, -110 and plain-56 at 2,000 iterations each, 4 jobs
    # sharing the GPU, finished in 97 s wall (compilation and evaluations included), so 8k iterations of the
    # largest study (depth: 2 seeds of 20..110, 10 runs) take about 15 minutes.
    "short": Scale(8000, None, 400, "8,000 iterations per net (1/8 of the paper's 64k) at the recipe's batch, "
                                    "lr /10 at 4k and 6k"),
    # Sec. 4.2 as published (an image folder keeps paper-imagenet's own 600k-iteration plateau schedule).
    "paper": Scale(64000, None, 1000, "the paper's full schedule: 64k iterations at batch 128, lr /10 at 32k "
                                      "and 48k (paper-cifar also holds out 5k training images for validation)"),
}


@dataclass(frozen=True)
class Context:
    """One ``resnet experiment`` invocation: where the data is, how long to train, where results go."""

    dataset: str = "digits"
    data: str | None = None
    scale: str = "smoke"
    out: Path = Path("runs/experiment")
    seeds: int | None = None
    """Seeds per net; None = the study's default for the scale."""
    jobs: int | None = None
    """Concurrent training processes; None = 1 on CPU, min(4 per GPU, runs) on CUDA."""
    device: str = "auto"
    iterations: int | None = None
    """Override of the scale's iterations (tests use a handful)."""
    batch_size: int | None = None
    nets: tuple[str, ...] | None = None
    """Override of the study's nets (for studies over one net, the first is used)."""
    runs_dir: Path | None = None
    """Where run folders live (default OUT/runs); several reports can share one."""
    launch: Launch | None = None
    """Train the runs as cluster jobs (``--launcher slurm``); None = in this machine's processes."""

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"--scale {self.scale!r} is not valid; choose one of: {', '.join(SCALE_NAMES)}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset {self.dataset!r} is not valid; choose one of: {', '.join(DATASETS)}")
        only = SCALES[self.scale].dataset
        if only is not None and self.dataset != only:
            raise ConfigError(f"--scale {self.scale} is calibrated for --dataset {only}; use --scale short or paper "
                              f"for {self.dataset}")
        for name, value in (("--seeds", self.seeds), ("--jobs", self.jobs), ("--iterations", self.iterations),
                            ("--batch-size", self.batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be >= 1")
        if self.nets is not None and not self.nets:
            raise ConfigError("--nets names no nets; give comma-separated names (e.g. resnet20,resnet56) or drop it")

    @property
    def runs(self) -> Path:
        """Run folders: --runs, else OUT/runs."""
        return self.runs_dir if self.runs_dir is not None else self.out / "runs"

    def seed_count(self, defaults: dict[str, int] | None = None) -> int:
        """--seeds, else the study's default for this scale (1 when it names none)."""
        return self.seeds if self.seeds is not None else (defaults or {}).get(self.scale, 1)

    def nets_or(self, default: Sequence[str]) -> list[str]:
        """--nets when given, else the study's own nets at the depths the scale affords (the digits scale keeps
        20 and 56 layers, the depths its claims compare)."""
        if self.nets:
            return list(self.nets)
        depths = SCALES[self.scale].depths
        return [n for n in default if depths is None or depth_of(n) in depths]


def base_recipe(dataset: str) -> str:
    """The recipe a dataset starts from: quick for the embedded digits, the paper's for CIFAR and ImageNet."""
    return {"digits": "quick", "imagefolder": "paper-imagenet"}.get(dataset, "paper-cifar")


def milestones(iterations: int) -> list[int]:
    """lr /10 at 50% and 75% of training, as 32k and 48k of 64k in Sec. 4.2."""
    first = max(1, iterations // 2)
    return [first, max(first + 1, 3 * iterations // 4)]


def run_config(ctx: Context, model: dict[str, Any], seed: int) -> RunCfg:
    """The recipe for ``ctx.dataset``, shortened to ``ctx.scale``, for one model and seed."""
    recipe = base_recipe(ctx.dataset)
    data: dict[str, Any] = {"dataset": ctx.dataset, **SCALES[ctx.scale].data}
    if ctx.data:
        data["data"] = ctx.data
    train: dict[str, Any] = {"seed": seed, "device": ctx.device, "keep_checkpoints": 1}
    optim: dict[str, Any] = {}
    scale = SCALES[ctx.scale]
    iterations = ctx.iterations or scale.iterations
    if ctx.dataset == "imagefolder" and ctx.scale == "paper" and not ctx.iterations:
        iterations = None  # Sec. 3.4's ImageNet schedule, as the recipe has it
    if iterations is not None:
        train["iterations"] = iterations
        train["eval_every"] = max(1, iterations // 4) if ctx.iterations else scale.eval_every
        optim.update(schedule="step", milestones=milestones(iterations))
    if ctx.batch_size or scale.batch_size:
        train["batch_size"] = ctx.batch_size or scale.batch_size
    if ctx.dataset == "imagefolder" and ctx.scale != "paper":
        data["protocol"] = "center"  # 10-crop testing multiplies evaluation cost by 10
    over = {"model": dict(model), "data": data, "optim": optim, "train": train}
    try:
        from resnet.models.registry import check_model_cfg  # the registry knows the nets (it imports torch)

        cfg = build_config(merge(load_recipe(recipe), over), recipe=recipe)
        check_model_cfg(cfg.model)
        return cfg
    except ConfigError as e:  # the registry's rule, said in the study's terms, before anything trains
        name, text = model.get("name"), str(e)
        if "unknown model" in text:
            raise ConfigError(f"unknown net {name!r} in --nets; `resnet list` shows the registered names") from None
        if text.startswith("model: "):
            raise ConfigError(f"{text[len('model: '):]}; this study cannot run that net") from None
        raise


@dataclass(frozen=True)
class RunSpec:
    """One training run of a study."""

    name: str
    """Model plus variant; identical names must mean identical configs (runs are shared by name)."""
    label: str
    """Legend and table label."""
    seed: int
    cfg: RunCfg

    @property
    def folder(self) -> str:
        """The run folder's name under the runs root: NAME-seedK."""
        return f"{self.name}-seed{self.seed}"


def specs_for(ctx: Context, name: str, label: str, model: dict[str, Any], seeds: int) -> list[RunSpec]:
    """One spec per seed (seeds 0..seeds-1) for a model."""
    return [RunSpec(name, label, s, run_config(ctx, model, s)) for s in range(seeds)]


@dataclass
class RunResult:
    """What a finished (or failed) run left in its folder."""

    spec: RunSpec
    out: Path
    final: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    params: int | None = None
    wall_s: float | None = None
    error: str | None = None

    @property
    def test_error(self) -> float | None:
        """Final test error (%), None when the run failed or logged none."""
        return _finite(self.final.get("test_error"))

    @property
    def train_error(self) -> float | None:
        """Final training error (%) of the last evaluation window."""
        return _finite(self.final.get("train_error"))


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


WALL_FILE = "experiment.json"
"""A study's note in a run folder: the wall time of the attempt that finished it."""


def record_wall(out: Path, seconds: float) -> None:
    """Write the wall time :func:`load_result` reports (the study's, not the engine's: a run trains without it)."""
    (out / WALL_FILE).write_text(json.dumps({"wall_s": round(seconds, 2)}))


def load_result(spec: RunSpec, out: Path, error: str | None = None) -> RunResult:
    """Read final.json, metrics.jsonl, the parameter count and wall time from a run folder."""
    from resnet.analysis.complexity import count_parameters
    from resnet.models.weights import load_model

    res = RunResult(spec, out, error=error)
    if (out / "final.json").is_file():
        res.final = json.loads((out / "final.json").read_text())
    res.rows = read_metrics(out / "metrics.jsonl")
    if (out / "model.safetensors").is_file():
        res.params = count_parameters(load_model(out / "model.safetensors"))
    if (out / WALL_FILE).is_file():
        res.wall_s = json.loads((out / WALL_FILE).read_text()).get("wall_s")
    if error is None and not res.final:
        res.error = "no final.json (the run did not finish)"
    return res


@dataclass(frozen=True)
class Summary:
    """One net or variant over its seeds: mean and sample std of the final errors."""

    name: str
    label: str
    model: str
    seeds: int
    test_mean: float | None
    test_std: float | None
    test_min: float | None
    train_mean: float | None
    params: int | None
    failed: int


def summarize(results: Sequence[RunResult]) -> Summary:
    """Aggregate the seeds of one spec name (std is the sample std, None for a single seed)."""
    first = results[0]
    tests = [r.test_error for r in results if r.test_error is not None]
    trains = [r.train_error for r in results if r.train_error is not None]
    params = next((r.params for r in results if r.params is not None), None)
    return Summary(
        name=first.spec.name, label=first.spec.label, model=first.spec.cfg.model.name, seeds=len(results),
        test_mean=statistics.fmean(tests) if tests else None,
        test_std=statistics.stdev(tests) if len(tests) > 1 else None,
        test_min=min(tests) if tests else None,
        train_mean=statistics.fmean(trains) if trains else None,
        params=params, failed=sum(r.error is not None for r in results),
    )


def by_name(specs: Sequence[RunSpec], results: dict[str, RunResult]) -> list[list[RunResult]]:
    """Group a study's results by spec name, in the study's order, each carrying this study's spec (a shared run
    keeps one folder but each study labels it its own way)."""
    groups: dict[str, list[RunResult]] = {}
    for spec in specs:
        groups.setdefault(spec.name, []).append(dataclasses.replace(results[spec.folder], spec=spec))
    return list(groups.values())


def per_seed(group: Sequence[RunResult], metric: str) -> list[float]:
    """One finished value of ``metric`` (``test_error``, ``train_error``) per seed of a group."""
    values = [getattr(r, metric) for r in group]
    return [v for v in values if v is not None]


def first_seed_curves(groups: Sequence[Sequence[RunResult]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, metrics rows) of each group's first seed that logged anything: what the curve figures draw."""
    out = []
    for group in groups:
        run = next((r for r in group if r.rows), None)
        if run is not None:
            out.append((run.spec.label, run.rows))
    return out
