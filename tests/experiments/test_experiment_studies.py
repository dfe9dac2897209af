"""Every study runs end to end at smoke scale (2 iterations per net on a tiny digits split) and leaves a real
report: Markdown, self-contained HTML, valid non-empty PNG figures and CSV tables holding numbers."""

import base64
import csv
import dataclasses
import math
from pathlib import Path

import pytest

from resnet.experiments import Context, run_experiment
from resnet.experiments.suite import NOT_IN_ALL, STUDIES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The main table of each study, its error columns, and the column holding the paper's numbers.
MAIN_TABLE = {
    "degradation": ("degradation", ["train_error", "test_error"], "paper_test_error"),
    "depth": ("depth", ["test_error_mean"], "paper_test_error"),
    "shortcuts": ("shortcuts", ["train_error", "test_error"], "paper_top1_error"),
    "responses": ("responses_summary", ["test_error", "mean_std", "max_std"], "paper_test_error"),
    "norms": ("norms", ["train_error", "test_error"], "paper_test_error"),
    "init": ("init", ["train_error", "test_error"], "paper_test_error"),
    "preact": ("preact", ["train_error", "test_error"], "paper_test_error"),
    "ensemble": ("ensemble", ["test_top1_error", "test_top5_error"], "paper_imagenet_top5_error"),
    "detection": ("detection", ["classification_test_error", "coco_map50"], "paper_coco_map50"),
    "recipes": ("recipes", ["train_error", "test_error"], "paper_test_error"),
}
NAMED = {  # what each study must show, whatever the scale
    "degradation": ["plain-20", "plain-56", "ResNet-20", "ResNet-56", "ResNet-110"],
    "depth": ["ResNet-20", "ResNet-32", "ResNet-44", "ResNet-56", "ResNet-110"],
    "shortcuts": ["A", "B", "C"],
    "responses": ["plain-20", "plain-56", "ResNet-20", "ResNet-56", "ResNet-110"],
    "norms": ["BN", "GN", "LN", "IN", "FRN+TLU", "BRN"],
    "init": ["He", "Xavier", "He + zero-init", "Xavier + zero-init"],
    "preact": ["ResNet-110", "pre-act ResNet-110", "pre-act ResNet-164"],
    "ensemble": ["ResNet-20", "ResNet-110", "ensemble of 5"],
    "detection": ["plain-20", "ResNet-20"],
    "recipes": ["ResNet-20, paper recipe", "ResNet-20, modern recipe"],
}


def _tiny(out: Path, runs: Path) -> Context:
    return Context(dataset="digits", scale="smoke", out=out, seeds=1, device="cpu", iterations=2, batch_size=8,
                   runs_dir=runs)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_report(out: Path) -> str:
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for needle in ("dataset", "scale", "iterations per net", "seeds", "hardware", "wall time"):
        assert needle in md and needle in page
    assert "How these numbers compare with the paper" in md
    pngs = sorted(out.glob("*.png"))
    assert pngs, "no figure written"
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
        assert f"]({png.name})" in md  # linked from the Markdown
        assert base64.b64encode(data).decode("ascii") in page  # inline in the HTML
    assert "<table>" in page and "| ---" not in page
    return md


@pytest.mark.slow
@pytest.mark.parametrize("study", list(STUDIES))
def test_study_writes_a_report_with_figures_and_numeric_tables(study, tmp_path, shared_runs):
    out = tmp_path / study
    paths = run_experiment(study, _tiny(out, shared_runs), log=lambda _msg: None)
    assert paths[:2] == [out / "report.md", out / "report.html"]
    md = _check_report(out)
    table, error_cols, paper_col = MAIN_TABLE[study]
    rows = _read_csv(out / f"{table}.csv")
    assert rows and paper_col in rows[0]
    labels = [next(iter(r.values())) for r in rows]  # first column: the net or variant
    for name in NAMED[study]:
        assert any(label == name or label.endswith(" " + name) for label in labels), (name, labels)
    for row in rows:
        for col in error_cols:
            value = float(row[col])  # raises on an empty or placeholder cell
            assert math.isfinite(value) and value >= 0
    assert any(float(row[paper_col]) > 0 for row in rows if row[paper_col])
    assert "placeholder" not in md.lower() and "todo" not in md.lower()


def test_responses_table_has_one_row_per_3x3_layer(tmp_path, shared_runs):
    out = tmp_path / "responses"
    ctx = dataclasses.replace(_tiny(out, shared_runs), nets=("plain20", "resnet20"))
    run_experiment("responses", ctx, log=lambda _msg: None)
    rows = _read_csv(out / "responses.csv")
    assert [r["net"] for r in rows].count("plain-20") == 19 == [r["net"] for r in rows].count("ResNet-20")
    stds = [float(r["std"]) for r in rows]
    assert all(math.isfinite(s) and s > 0 for s in stds)


@pytest.mark.slow
def test_all_writes_one_report_with_every_study(tmp_path, shared_runs):
    out = tmp_path / "all"
    run_experiment("all", _tiny(out, shared_runs), log=lambda _msg: None)
    md = _check_report(out)
    for name, module in STUDIES.items():
        assert (f"## {module.TITLE}" in md) == (name not in NOT_IN_ALL)
    assert {p.stem for p in out.glob("*.csv")} >= {t for s, (t, _, _) in MAIN_TABLE.items() if s not in NOT_IN_ALL}
    # ResNet-20 seed 0 is one run shared by several studies; each study still labels it its own way.
    assert "ResNet-20" in [r["net"] for r in _read_csv(out / "degradation.csv")]
    assert "ResNet-20 He" in [r["variant"] for r in _read_csv(out / "init.csv")]
