"""Fixtures: a small COCO split and a small VOC folder in tmp_path (writers in _detection_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _detection_files import write_coco_set, write_voc_set


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    write_coco_set(tmp_path / "coco")
    return tmp_path / "coco"


@pytest.fixture
def voc_dir(tmp_path: Path) -> Path:
    return write_voc_set(tmp_path / "VOC2007")
