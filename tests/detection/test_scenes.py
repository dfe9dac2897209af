"""The embedded digit scenes: deterministic, inside the canvas, test scenes from test digits only, COCO writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

import resnet.detection.scenes as scenes
from resnet.data.imagefolder import decode_image_file
from resnet.detection.coco import write_coco
from resnet.detection.scenes import DIGIT_CATEGORIES, make_scenes, scenes_source
from resnet.errors import ConfigError


def _same(a, b) -> bool:
    return all(torch.equal(x.image, y.image) and np.array_equal(x.boxes, y.boxes)
               and np.array_equal(x.labels, y.labels) for x, y in zip(a, b, strict=True))  # fmt: skip


def test_scenes_are_a_function_of_seed_split_and_index() -> None:
    first = make_scenes("train", 12, seed=3)
    assert _same(first, make_scenes("train", 12, seed=3))
    assert _same(first[:5], make_scenes("train", 5, seed=3))  # a smaller set is a prefix of a larger one
    assert not _same(first[:5], make_scenes("train", 5, seed=4))
    assert not _same(first[:5], make_scenes("test", 5, seed=3))


def test_boxes_lie_inside_the_canvas_and_hold_one_to_five_digits_of_ten_classes() -> None:
    records = make_scenes("train", 60, seed=0)
    labels = np.concatenate([r.labels for r in records])
    assert set(labels.tolist()) == set(range(1, 11))
    for r in records:
        assert r.image.shape == (3, 128, 128) and r.image.dtype == torch.uint8
        assert 1 <= len(r.labels) <= 5 and (r.width, r.height) == (128, 128)
        b = r.boxes
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 128).all() and (b[:, 2:] > b[:, :2]).all()
        assert ((b[:, 2:] - b[:, :2]) <= scenes.MAX_SIDE).all()
        assert not (r.iscrowd.any() or r.difficult.any())


def test_each_box_is_tight_around_bright_ink() -> None:
    for r in make_scenes("test", 10, seed=1):
        grey = r.image.max(dim=0).values
        for x0, y0, x1, y1 in r.boxes.astype(int):
            inside = grey[y0:y1, x0:x1]
            assert inside.max() > 2 * scenes.NOISE  # the digit is there
            assert inside[0].max() > scenes.NOISE and inside[:, -1].max() > scenes.NOISE  # edges touch its ink


def test_test_scenes_use_test_digits_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training digits drawn red only, test digits green only: a scene's colours tell which set it came from."""
    ink = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    ink[:, :, 8:24, 10:22] = 255
    red, green = ink.clone(), ink.clone()
    red[:, 1:] = 0
    green[:, [0, 2]] = 0
    labels = torch.arange(10)
    monkeypatch.setattr(scenes, "load_digits_split", lambda: (red, labels, green, labels, [str(d) for d in range(10)]))
    for split, own, other in (("train", 0, 1), ("test", 1, 0)):
        images = torch.stack([r.image for r in make_scenes(split, 20, seed=0)])
        assert images[:, own].max() > 100 and images[:, other].max() <= scenes.NOISE


def test_unknown_split_and_bad_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'val' is not one of"):
        make_scenes("val", 3)
    with pytest.raises(ConfigError, match="count -1"):
        make_scenes("train", -1)


def test_written_scenes_read_back_with_pycocotools(tmp_path: Path) -> None:
    src = scenes_source("test", 4, seed=2)
    ann = write_coco(src.records, tmp_path, "test")
    assert ann == tmp_path / "instances_test.json"
    coco = COCO(str(ann))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [c["name"] for c in DIGIT_CATEGORIES]
    for r in src.records:
        info = coco.imgs[r.image_id]
        assert torch.equal(decode_image_file(tmp_path / "test" / info["file_name"]), r.image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[r.image_id]))
        xywh = np.array([a["bbox"] for a in anns])
        np.testing.assert_allclose(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1), r.boxes)
        assert [a["category_id"] for a in anns] == r.labels.tolist()
