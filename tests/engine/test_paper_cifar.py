"""The paper-cifar recipe end to end on small CIFAR-10 files in the real python-pickle format (Sec. 4.2)."""

import json
import pickle
import tomllib

import numpy as np
import pytest

from resnet.cli import main


def _write_cifar10(root, n=120):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.mark.slow
def test_paper_cifar_holds_out_a_validation_split_and_reports_test_error_at_the_end(tmp_path, capsys):
    _write_cifar10(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--recipe", "paper-cifar", "--data", str(tmp_path / "data"), "--model", "resnet110",
            "--iterations", "4", "--batch-size", "16", "--eval-every", "2", "--val-split", "100", "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 0
    cfg = tomllib.loads((out / "config.toml").read_text())
    # Sec. 4.2: ResNet-110 starts at lr 0.01 until training error < 80%, then goes back to 0.1.
    assert cfg["recipe"] == "paper-cifar" and cfg["optim"]["warmup_lr"] == pytest.approx(0.01)
    assert cfg["optim"]["milestones_frac"] == [0.5, 0.75] and cfg["data"]["val_split"] == 100
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval_split"] for r in rows] == ["val", "val"] and rows[0]["lr"] == pytest.approx(0.01)
    final = json.loads((out / "final.json").read_text())
    assert {"val_error", "test_error", "test_top5_error"} <= final.keys() and final["step"] == 4
    assert 0.0 <= final["test_error"] <= 100.0 and (out / "model.safetensors").is_file()
    assert "val_error=" in capsys.readouterr().err  # the progress line names the split it evaluated on
    # `resnet eval RUN` evaluates on the run's own dataset (the 120 test images here, not the digits' 360)
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    assert "(120 images, protocol center)" in capsys.readouterr().out
