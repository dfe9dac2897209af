"""The digits scale: what it trains, and the claims its reports test (on results written by the test, so the
verdicts are known)."""

import dataclasses
import json
from pathlib import Path

import pytest

from resnet.analysis.report import Section, write_report
from resnet.analysis.responses import LayerResponse
from resnet.errors import ConfigError
from resnet.experiments import degradation, depth, preact, recipes, responses, shortcuts
from resnet.experiments.claims import HELD, NOT_HELD, NOT_SHOWN
from resnet.experiments.common import Context, RunResult, by_name
from resnet.experiments.runner import default_jobs
from resnet.experiments.suite import lead

DIGITS = Context(scale="digits", device="cpu")


def test_digits_scale_trains_the_paper_recipe_shape_on_the_8x8_scans_at_20_and_56_layers():
    specs = degradation.plan(DIGITS)
    assert sorted({s.cfg.model.name for s in specs}) == ["plain20", "plain56", "resnet20", "resnet56"]
    assert sorted({s.seed for s in specs}) == [0, 1, 2]  # a spread for every claim
    cfg = specs[0].cfg
    assert cfg.data.digits_size == 8 and cfg.train.batch_size == 128
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay > 0
    n = cfg.train.iterations
    assert list(cfg.optim.milestones) == [n // 2, 3 * n // 4]
    assert cfg.model.norm == "bn" and cfg.model.init == "kaiming_normal"
    assert {s.cfg.model.name for s in depth.plan(DIGITS)} == {"resnet20", "resnet56"}
    assert {s.cfg.model.name for s in preact.plan(DIGITS)} == {"resnet56", "preact_resnet56"}
    assert shortcuts.net_for(DIGITS)[0] == "resnet20"
    # --nets still trains any net at this scale
    wide = dataclasses.replace(DIGITS, nets=("resnet110",))
    assert {s.cfg.model.name for s in depth.plan(wide)} == {"resnet110"}


def test_digits_scale_is_for_the_digits_only():
    with pytest.raises(ConfigError, match="--scale digits is calibrated for --dataset digits"):
        Context(scale="digits", dataset="cifar10")


def test_digits_scale_trains_one_single_thread_run_per_core_on_cpu():
    assert default_jobs("cpu", 10) == 1
    assert 1 <= default_jobs("cpu", 10, per_core=True) <= 10
    assert default_jobs("cpu", 1, per_core=True) == 1


def _results(tmp_path: Path, specs, train: dict[str, list[float]], test: dict[str, list[float]]):
    """A finished RunResult per spec with the given final errors (by model name, one per seed)."""
    out = {}
    for spec in specs:
        name = spec.cfg.model.name
        final = {"train_error": train[name][spec.seed], "test_error": test[name][spec.seed]}
        folder = tmp_path / spec.folder
        folder.mkdir(exist_ok=True)
        (folder / "final.json").write_text(json.dumps(final))
        out[spec.folder] = RunResult(spec, folder, final=final)
    return out


def test_degradation_and_depth_claims_on_known_numbers(tmp_path):
    specs = degradation.plan(DIGITS)
    train = {"plain20": [1.0, 1.2, 0.8], "plain56": [70.0, 75.0, 72.0],  # degradation, far beyond the noise
             "resnet20": [0.2, 0.3, 0.1], "resnet56": [2.0, 3.0, 2.5]}  # the deeper ResNet trains worse
    test = {"plain20": [2.0] * 3, "plain56": [70.0] * 3, "resnet20": [1.1, 1.4, 1.7], "resnet56": [1.4, 1.7, 1.1]}
    results = _results(tmp_path, specs, train, test)
    found = degradation.claims(by_name(specs, results))
    assert [c.verdict for c in found] == [HELD, NOT_HELD]
    assert "plain-56 72.33% vs plain-20 1.00%" in found[0].evidence
    assert "ResNet-56" in found[1].statement and "Worse by more than 2 standard errors" in found[1].evidence
    (trend,) = depth.claims(by_name(depth.plan(DIGITS), results))
    assert trend.verdict == HELD and "+0.00%" in trend.evidence  # same values in another order: no difference


def test_a_resnet_is_never_compared_with_itself(tmp_path):
    """With one plain depth left (here plain-56's runs all failed), the ResNet pair is the shallowest and deepest."""
    specs = degradation.plan(DIGITS)
    train = {"plain20": [1.0, 1.2, 0.8], "plain56": [70.0] * 3, "resnet20": [0.2, 0.3, 0.1], "resnet56": [0.1] * 3}
    results = _results(tmp_path, specs, train, train)
    for folder, result in results.items():
        if folder.startswith("plain56"):
            result.final = {}
    found = degradation.claims(by_name(specs, results))
    assert len(found) == 1 and "ResNet-56 ends at or below ResNet-20" in found[0].statement


def _measured(run: RunResult, mean: float, ratio: float = 1.0) -> responses.Measured:
    layers = [LayerResponse(1, "bn1", mean, mean), LayerResponse(2, "layer1.0.bn1", mean, mean)]
    batch = [LayerResponse(r.index, r.name, r.std / ratio, r.std_all) for r in layers]
    return responses.Measured(run, layers, batch)


def test_response_claims_need_settled_statistics(tmp_path):
    specs = responses.plan(DIGITS)
    runs = {s.folder: RunResult(s, tmp_path) for s in specs}
    stds = {"plain20": [0.9, 0.92, 0.88], "plain56": [1.3, 1.2, 1.25], "resnet20": [0.8, 0.81, 0.79],
            "resnet56": [0.7, 0.72, 0.71]}
    measured = {name: [_measured(runs[f"{name}-seed{k}"], v) for k, v in enumerate(values)]
                for name, values in stds.items()}
    verdicts = {c.statement.split("'s")[0] + " vs " + c.statement.split("than ")[1].split("'s")[0]: c.verdict
                for c in responses.claims(measured)}
    assert verdicts == {"ResNet-20 vs plain-20": HELD, "ResNet-56 vs plain-56": HELD, "ResNet-56 vs ResNet-20": HELD}
    measured["plain56"] = [_measured(m.run, 1.25, ratio=3.0) for m in measured["plain56"]]  # stale running stats
    stale = [c for c in responses.claims(measured) if "plain-56" in c.statement]
    assert stale[0].verdict == NOT_SHOWN and "have not settled in plain-56" in stale[0].evidence


def test_report_opens_with_the_claims_and_their_count(tmp_path):
    sec = Section("study", ["body"], headline=["**HELD** (Fig. 1): a.", "**DID NOT HOLD** (Fig. 6): b."])
    first = lead(DIGITS, ["degradation"], [sec])
    assert first is not None and first.blocks[0].startswith("1 of 2 held.")
    md, page, *_ = write_report(tmp_path, "t", [("dataset", "digits")], [sec], first)
    text = md.read_text()
    assert text.index("**HELD** (Fig. 1)") < text.index("- **dataset**") < text.index("## study")
    assert "<b>HELD</b> (Fig. 1)" in page.read_text()
    smoke = lead(dataclasses.replace(DIGITS, scale="smoke"), ["degradation"], [Section("s")])
    assert smoke is not None and "Not tested at smoke scale" in smoke.blocks[0]
    assert lead(dataclasses.replace(DIGITS, scale="smoke"), ["norms"], [Section("s")]) is None


def test_recipes_claim_on_known_numbers(tmp_path):
    """The modern recipe's claim per net: at or below the paper recipe's test error, held, not held, or within the
    seeds' noise; the modern arm changes the recipe only."""
    ctx = dataclasses.replace(DIGITS, nets=("resnet20",))
    specs = recipes.plan(ctx)
    paper, new = (next(s.cfg for s in specs if s.name == name) for name in ("resnet20", "resnet20-modern"))
    assert paper.model == new.model and paper.train.iterations == new.train.iterations
    assert (paper.train.label_smoothing, paper.data.mixup_alpha, paper.optim.schedule) == (0.0, 0.0, "step")
    assert (new.train.label_smoothing, new.data.mixup_alpha, new.optim.schedule) == (0.1, 0.2, "cosine")

    def verdict(modern: list[float]) -> tuple[str, str]:
        errors = {"resnet20": [1.5, 1.7, 1.6], "resnet20-modern": modern}
        results = {}
        for spec in specs:
            final = {"test_error": errors[spec.name][spec.seed]}
            results[spec.folder] = RunResult(spec, tmp_path / spec.folder, final=final)
        (claim,) = recipes.claims(by_name(specs, results))
        return claim.verdict, claim.evidence

    assert verdict([1.2, 1.3, 1.25])[0] == HELD
    worse, evidence = verdict([3.0, 3.2, 3.1])
    assert worse == NOT_HELD and "Worse by more than 2 standard errors" in evidence
    noisy, evidence = verdict([1.6, 1.8, 1.5])  # higher, within the seeds' noise: not shown to be worse
    assert noisy == HELD and "within the seeds' noise" in evidence
