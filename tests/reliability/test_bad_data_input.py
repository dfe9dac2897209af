"""Bad data through the CLI: refused with one ``error:`` line naming the file (exit 2, no traceback), or, where the
data is merely unusual (grayscale, CMYK, RGBA, palette, 16-bit, mixed sizes), converted and used."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from _util import one_line_error, one_thread, run_cli  # noqa: F401 (one_thread: fixture)
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

# ResNet-20 on 16x16 crops of tiny images: two iterations of four images, one evaluation
SMALL = ["--model", "resnet20", "--crop-size", "16", "--scale-min", "16", "--scale-max", "20", "--workers", "0",
         "--batch-size", "4", "--iterations", "2", "--eval-every", "2", "--device", "cpu"]


def _rgb(path: Path, h: int, w: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def image_tree(root: Path) -> Path:
    """train/{cat,dog}/ with 3 RGB images of different sizes each, val/{cat,dog}/ with 2."""
    sizes = [(20, 24), (28, 18), (24, 24)]
    for c, cls in enumerate(("cat", "dog")):
        for i, (h, w) in enumerate(sizes):
            _rgb(root / "train" / cls / f"{i}.png", h, w, 10 * c + i)
        for i, (h, w) in enumerate(sizes[:2]):
            _rgb(root / "val" / cls / f"{i}.png", h, w, 100 + 10 * c + i)
    return root


def unreadable(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated JPEG":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    else:
        path.write_text("this is not an image, only named like one\n")
    return path


BAD_KINDS = ["zero-byte", "truncated JPEG", "text named .jpg"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A clean image tree and a 2-iteration run on it (weights for eval/predict)."""
    import torch

    from resnet.cli import main

    base = tmp_path_factory.mktemp("images")
    root = image_tree(base / "ds")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--dataset", "imagefolder", "--data", str(root), *SMALL, "--out", str(base / "run")]) == 0
    finally:
        torch.set_num_threads(before)
    return root, base / "run"


@pytest.mark.slow
def test_grayscale_cmyk_rgba_palette_16bit_and_mixed_size_images_are_converted_and_trained_on(tmp_path, capsys):
    root = image_tree(tmp_path / "ds")
    rng = np.random.default_rng(7)
    odd = root / "train" / "cat"
    Image.fromarray(rng.integers(0, 256, (22, 30), dtype=np.uint8), "L").save(odd / "gray.png")
    Image.fromarray(rng.integers(0, 256, (26, 20, 4), dtype=np.uint8), "RGBA").save(odd / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)).convert("CMYK").save(odd / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (24, 32), dtype=np.uint16)).save(odd / "deep16.png")
    palette = Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert("P")
    palette.save(odd / "palette.png", transparency=0)
    assert Image.open(odd / "deep16.png").mode.startswith("I")
    run = tmp_path / "run"

    code, out, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *SMALL, "--out", run], capsys)

    assert code == 0, err
    final = json.loads((run / "final.json").read_text())
    assert final["step"] == 2 and "bad_images_skipped" not in final
    files = [str(odd / n) for n in ("gray.png", "rgba.png", "cmyk.jpg", "deep16.png", "palette.png")]
    code, out, err = run_cli(["predict", *files, "--weights", run, "--device", "cpu"], capsys)
    assert code == 0, err
    assert out.count("  1. ") == len(files)


@pytest.mark.slow
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_unreadable_image_with_bad_images_fail_is_one_error_naming_the_file(trained, tmp_path, capsys, kind):
    root = image_tree(tmp_path / "ds")
    bad = unreadable(root / "train" / "dog" / "broken.jpg", kind)

    code, _, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *SMALL, "--bad-images", "fail",
                            "--out", tmp_path / "run"], capsys)

    assert code == 2 and str(bad) in one_line_error(err) and "bad_images=skip" in err
    code, _, err = run_cli(["predict", bad, "--weights", trained[1], "--device", "cpu"], capsys)
    assert code == 2 and str(bad) in one_line_error(err)


@pytest.mark.slow
def test_unreadable_images_with_bad_images_skip_train_evaluate_and_report_the_count(trained, tmp_path, capsys):
    root = image_tree(tmp_path / "ds")
    for i, kind in enumerate(BAD_KINDS):
        unreadable(root / "train" / "cat" / f"bad{i}.jpg", kind)
    bad_val = unreadable(root / "val" / "dog" / "bad.jpg", "text named .jpg")
    run = tmp_path / "run"

    code, out, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *SMALL, "--bad-images", "skip",
                              "--out", run], capsys)

    assert code == 0, err
    final = json.loads((run / "final.json").read_text())
    assert final["bad_image_files"] == 4 and final["bad_images_skipped"] >= 4
    assert '"bad_image_files": 4' in out  # printed on the "final:" line
    evaluate = ["eval", trained[1], "--dataset", "imagefolder", "--data", root, "--crop-size", "16", "--workers", "0",
                "--device", "cpu"]
    code, out, err = run_cli([*evaluate, "--bad-images", "skip"], capsys)
    assert code == 0, err
    assert "(4 images, 1 unreadable skipped" in out
    code, _, err = run_cli([*evaluate, "--bad-images", "fail"], capsys)
    assert code == 2 and str(bad_val) in one_line_error(err)


@pytest.mark.parametrize("layout", ["missing folder", "missing val", "empty class folder", "no class folders"])
def test_broken_dataset_layout_is_one_error_naming_the_folder(tmp_path, capsys, layout):
    root = image_tree(tmp_path / "ds")
    if layout == "missing folder":
        root, where = tmp_path / "nowhere", tmp_path / "nowhere"
    elif layout == "missing val":
        for p in sorted((root / "val").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "val").rmdir()
        where = root / "val"
    elif layout == "empty class folder":
        where = root / "train" / "bird"
        where.mkdir()
    else:
        for p in sorted((root / "train").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "train").mkdir(exist_ok=True)
        where = root / "train"

    code, _, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *SMALL, "--out", tmp_path / "r"],
                           capsys)

    assert code == 2 and str(where) in one_line_error(err)
    assert not (tmp_path / "r").exists()


def _cifar10(root: Path, broken: str | None = None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, labels = rng.integers(0, 256, (8, 3072), dtype=np.uint8), rng.integers(0, 10, 8).tolist()
        if name == "data_batch_3" and broken == "wrong shape":
            data = data[:, :3000]
        elif name == "data_batch_3" and broken == "label out of range":
            labels[5] = 10
        elif name == "data_batch_3" and broken == "negative label":
            labels[0] = -1
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)
    return folder


@pytest.mark.parametrize("broken", ["wrong shape", "label out of range", "negative label"])
def test_cifar_batch_of_wrong_shape_or_label_range_is_one_error_naming_the_file(tmp_path, capsys, broken):
    folder = _cifar10(tmp_path / "cifar", broken)

    code, _, err = run_cli(["train", "--dataset", "cifar10", "--data", tmp_path / "cifar", "--batch-size", "8",
                            "--iterations", "1", "--device", "cpu", "--out", tmp_path / "r"], capsys)

    assert code == 2
    line = one_line_error(err)
    assert str(folder / "data_batch_3") in line
    assert ("(N, 3072)" in line) if broken == "wrong shape" else ("expected 0..9" in line)


def test_a_well_formed_tiny_cifar_folder_trains(tmp_path, capsys):
    _cifar10(tmp_path / "cifar")
    code, _, err = run_cli(["train", "--dataset", "cifar10", "--data", tmp_path / "cifar", "--batch-size", "8",
                            "--iterations", "1", "--device", "cpu", "--out", tmp_path / "r"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("dataset", ["digits", "imagefolder"])
def test_num_classes_below_the_labels_is_a_config_error_not_an_index_error(trained, tmp_path, capsys, dataset):
    data = [] if dataset == "digits" else ["--dataset", "imagefolder", "--data", trained[0], *SMALL]
    want, have = (5, 10) if dataset == "digits" else (1, 2)

    code, _, err = run_cli(["train", *data, "--num-classes", want, "--iterations", "2", "--batch-size", "4",
                            "--device", "cpu", "--out", tmp_path / "r"], capsys)

    assert code == 2
    line = one_line_error(err)
    assert f"model.num_classes={want} is smaller than the {have} classes" in line and f"--num-classes {have}" in line


def test_in_chans_other_than_the_images_is_a_config_error_before_training(tmp_path, capsys):
    code, _, err = run_cli(["train", "--in-chans", "1", "--iterations", "2", "--batch-size", "4", "--device", "cpu",
                            "--out", tmp_path / "r"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "model.in_chans=1 but the digits images have 3 channels" in line and "drop --in-chans" in line
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


# ---------------------------------------------------------------------------------- memory bombs, links, names


def test_an_image_over_the_pixel_limit_is_a_bad_image_refused_or_skipped_by_the_policy(tmp_path, capsys):
    root = image_tree(tmp_path / "ds")
    big = _rgb(root / "train" / "dog" / "big.png", 40, 40, 5)  # 1,600 pixels; the others hold at most 576
    small = [*SMALL, "--max-pixels", "1000"]

    code, _, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *small, "--bad-images", "fail",
                            "--out", tmp_path / "fail"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert str(big) in line and "40x40" in line and "data.max_pixels=1000" in line and "--max-pixels" in line

    code, out, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *small, "--bad-images", "skip",
                              "--out", tmp_path / "skip"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "skip" / "final.json").read_text())["bad_image_files"] == 1


def test_links_back_into_a_class_and_hidden_folders_train_on_each_image_once(tmp_path, capsys, caplog):
    import logging
    import os

    from safetensors import safe_open

    root = image_tree(tmp_path / "ds")
    os.symlink(".", root / "train" / "cat" / "again")  # counted each cat image 41 times (tests/data: two hung)
    _rgb(root / "train" / ".ipynb_checkpoints" / "0-checkpoint.png", 20, 20, 9)
    run = tmp_path / "run"

    with caplog.at_level(logging.WARNING, logger="resnet.data"):
        code, out, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *SMALL, "--out", run], capsys)

    assert code == 0, err
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["classes"]) == ["cat", "dog"]
    warned = [r.getMessage() for r in caplog.records if r.name == "resnet.data" and "left out" in r.getMessage()]
    assert len(warned) == 1 and "1 path reached again through symbolic links" in warned[0]
    assert "1 hidden entry" in warned[0]


def test_a_bad_file_whose_name_holds_escape_codes_is_named_escaped_on_one_line(tmp_path, capsys):
    root = image_tree(tmp_path / "ds")
    unreadable(root / "train" / "dog" / "x\x1b[2J\nname.jpg", "text named .jpg")

    code, _, err = run_cli(["train", "--dataset", "imagefolder", "--data", root, *SMALL, "--out", tmp_path / "r"],
                           capsys)

    assert code == 2 and "\x1b" not in err
    assert "x\\x1b[2J\\nname.jpg" in one_line_error(err)
