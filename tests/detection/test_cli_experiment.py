"""``resnet experiment detection``: plain and residual backbones, each from its own classification run, detect on
the scenes; the report sets the table beside Tables 7/8 and says what differs; a second invocation reuses the runs."""

from __future__ import annotations

import csv
import tomllib

import pytest

from resnet.cli import main

pytestmark = pytest.mark.slow


def test_detection_study_pretrains_each_backbone_then_reports_beside_tables_7_and_8(tmp_path):
    out = tmp_path / "study"
    argv = ["experiment", "detection", "--iterations", "2", "--batch-size", "8", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    runs = out / "runs"
    for net in ("plain20", "resnet20"):
        assert (runs / f"{net}-seed0" / "model.safetensors").is_file()
        assert (runs / f"detect-{net}-seed0" / "final.json").is_file()
        detect = tomllib.loads((runs / f"detect-{net}-seed0" / "config.toml").read_text())["detect"]
        assert detect["init_from"] == str(runs / f"{net}-seed0")  # each detector from its own classifier
    with open(out / "detection.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["backbone"] for r in rows] == ["plain-20", "ResNet-20"]
    assert [r["paper_backbone"] for r in rows] == ["VGG-16", "ResNet-101"]
    assert all(0.0 <= float(r["coco_map50"]) <= 100.0 for r in rows)
    report = (out / "report.md").read_text()
    assert "Tables 7, 8" in report and "What differs from the paper" in report

    stamp = (runs / "detect-resnet20-seed0" / "final.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished detectors are reused, not trained again
    assert (runs / "detect-resnet20-seed0" / "final.json").stat().st_mtime_ns == stamp
