"""Scanning image folders: symbolic links followed once (no loops, no double counts, no duplicate classes),
hidden entries never classes or images, and whatever is left out said in one WARNING line per split."""

from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet.data.scan import scan_image_folder, scan_split
from resnet.errors import DataError
from resnet.printable import safe_name


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(path)
    return path


def tree(root: Path, classes=("cat", "dog"), per_class: int = 3) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _png(root / split / name / f"{i}.png", 10 * c + i)
    return root


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: a scan that loops through symbolic links never returns."""

    def expire(*_):
        raise TimeoutError(f"the scan did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "resnet.data"]


# ----------------------------------------------------------------------------------------------- symbolic links


def test_a_link_from_a_class_folder_to_itself_counts_its_images_once_and_says_so(tmp_path, caplog):
    root = tree(tmp_path)
    os.symlink(".", root / "train" / "cat" / "again")

    with deadline(20), caplog.at_level(logging.WARNING, logger="resnet.data"):
        classes, samples = scan_split(root / "train")

    assert classes == ["cat", "dog"] and len(samples) == 6
    assert sorted(Path(p).name for p, label in samples if label == 0) == ["0.png", "1.png", "2.png"]
    (line,) = _warnings(caplog)
    assert "1 path reached again through symbolic links" in line and "again" in line


def test_two_links_back_into_the_tree_do_not_hang_the_scan(tmp_path, caplog):
    root = tree(tmp_path)
    os.symlink(".", root / "train" / "cat" / "l1")
    os.symlink(".", root / "train" / "cat" / "l2")
    os.symlink("..", root / "train" / "dog" / "up")  # the split folder: everything again
    os.symlink(str(tmp_path), root / "train" / "dog" / "root")  # above it

    with deadline(20), caplog.at_level(logging.WARNING, logger="resnet.data"):
        _, samples = scan_split(root / "train")

    assert len(samples) == 6 and len({os.path.realpath(p) for p, _ in samples}) == 6
    (line,) = _warnings(caplog)
    assert line.startswith(f"{root / 'train'}: left out 4 paths reached again through symbolic links")


def test_a_class_folder_linked_to_another_is_not_a_second_class_and_the_real_folder_keeps_its_name(tmp_path):
    root = tree(tmp_path, classes=("cat", "zebra"))
    for split in ("train", "val"):
        os.symlink("zebra", root / split / "aardvark")  # sorts first, yet the folder it points to wins
        os.symlink("cat", root / split / "cat2")

    index = scan_image_folder(root)

    assert index.classes == ["cat", "zebra"] and len(index.train) == 6 and len(index.val) == 6
    assert all("aardvark" not in p and "cat2" not in p for p, _ in index.train + index.val)


def test_a_linked_folder_of_new_images_is_followed_once(tmp_path):
    root = tree(tmp_path)
    for i in range(2):
        _png(tmp_path / "elsewhere" / f"extra{i}.png", 50 + i)
    os.symlink(tmp_path / "elsewhere", root / "train" / "dog" / "more")
    os.symlink(tmp_path / "elsewhere", root / "train" / "dog" / "more-again")
    _, samples = scan_split(root / "train")
    names = sorted(Path(p).name for p, label in samples if label == 1)
    assert names == ["0.png", "1.png", "2.png", "extra0.png", "extra1.png"]


def test_sample_order_is_folder_by_folder_as_before(tmp_path):
    root = tree(tmp_path, per_class=2)
    _png(root / "train" / "cat" / "a" / "x.png")
    _png(root / "train" / "cat" / "b" / "y.png")
    _png(root / "train" / "cat" / "z.png")
    _, samples = scan_split(root / "train")
    got = [os.path.relpath(p, root / "train") for p, _ in samples]
    want = []
    for dirpath, _, names in sorted(os.walk(root / "train" / "cat")):
        want += [os.path.relpath(os.path.join(dirpath, n), root / "train") for n in sorted(names)]
    assert got[: len(want)] == want and got[len(want):] == ["dog/0.png", "dog/1.png"]


# ------------------------------------------------------------------------------------------ what is left out


def test_hidden_folders_are_not_classes_and_hidden_files_are_not_images(tmp_path, caplog):
    root = tree(tmp_path)
    for split in ("train", "val"):
        _png(root / split / ".ipynb_checkpoints" / "0-checkpoint.png")
    _png(root / "train" / "cat" / ".ipynb_checkpoints" / "1-checkpoint.png")
    (root / "train" / "dog" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")

    with caplog.at_level(logging.WARNING, logger="resnet.data"):
        index = scan_image_folder(root)

    assert index.classes == ["cat", "dog"] and len(index.train) == 6 and len(index.val) == 6
    train_line, val_line = _warnings(caplog)
    assert "3 hidden entries (names starting with '.')" in train_line
    assert "1 hidden entry" in val_line


def test_gif_files_are_taken_and_other_files_are_named_in_one_warning_line(tmp_path, caplog):
    root = tree(tmp_path)
    Image.new("P", (5, 6), 1).save(root / "train" / "cat" / "moving.gif")
    (root / "train" / "cat" / "notes.txt").write_text("hi")
    (root / "train" / "dog" / "labels.csv").write_text("a,b")
    (root / "train" / "README").write_text("the split's own notes")

    with caplog.at_level(logging.WARNING, logger="resnet.data"):
        _, samples = scan_split(root / "train")

    assert str(root / "train" / "cat" / "moving.gif") in [p for p, _ in samples] and len(samples) == 7
    (line,) = _warnings(caplog)
    assert "2 files that are not images by extension (.csv, .txt)" in line
    assert "1 file outside the class folders" in line


def test_an_unreadable_subfolder_is_named_in_the_warning_line(tmp_path, caplog, monkeypatch):
    root = tree(tmp_path)
    locked = root / "train" / "dog" / "locked"
    _png(locked / "hidden-from-us.png")
    scandir = os.scandir

    def refuse(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)  # root reads every folder: refuse one as a user's ACL would
    with caplog.at_level(logging.WARNING, logger="resnet.data"):
        _, samples = scan_split(root / "train")

    assert len(samples) == 6
    (line,) = _warnings(caplog)
    assert f"1 folder that cannot be read (e.g. {locked}: Permission denied)" in line


def test_an_unreadable_class_folder_is_an_error_saying_so(tmp_path, monkeypatch):
    root = tree(tmp_path)
    locked = root / "train" / "dog"
    scandir = os.scandir

    def refuse(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(DataError, match="dog: Permission denied: class folder cannot be read; fix its permissions"):
        scan_split(root / "train")


def test_a_clean_tree_logs_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="resnet.data"):
        scan_image_folder(tree(tmp_path))
    assert _warnings(caplog) == []


# ---------------------------------------------------------------------------------------------------- names


def test_safe_name_escapes_control_characters_and_leaves_printable_names_alone():
    assert safe_name("photos/chat été.jpg") == "photos/chat été.jpg"
    assert safe_name("a\x1b[31m\nb.jpg") == "'a\\x1b[31m\\nb.jpg'"
    assert safe_name(Path("x") / "\udcff.png") == "'x/\\udcff.png'"  # an undecodable byte in the file name
    assert safe_name(b"x/\xff.png") == "'x/\\udcff.png'"
    assert safe_name("evil\u202egpj.exe") == "'evil\\u202egpj.exe'"  # a right-to-left override


def test_class_and_file_names_with_escape_codes_reach_errors_and_warnings_escaped(tmp_path, caplog):
    root = tree(tmp_path)
    (root / "val" / "bad\x1b[2Jclass").mkdir()
    _png(root / "val" / "bad\x1b[2Jclass" / "0.png")
    os.symlink(".", root / "train" / "cat" / "loop\nname")

    with caplog.at_level(logging.WARNING, logger="resnet.data"), pytest.raises(DataError) as e:
        scan_image_folder(root)

    assert "\x1b" not in str(e.value) and "'bad\\x1b[2Jclass'" in str(e.value)
    (line,) = _warnings(caplog)
    assert "\n" not in line and "loop\\nname" in line
