"""COCO instances files: boxes, category mapping, cleaning counters, layouts, and the writer's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _detection_files import COCO_IMAGES, write_coco_set
from pycocotools.coco import COCO

from resnet.data.imagefolder import decode_image_file
from resnet.detection.coco import write_coco
from resnet.detection.sources import open_detection
from resnet.errors import DataError


def test_boxes_become_xyxy_and_category_ids_are_numbered_in_id_order(coco_dir: Path) -> None:
    src = open_detection(coco_dir, "train")
    assert src.categories == [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]  # ids 3, 7 -> labels 1, 2
    first = src.records[0]
    np.testing.assert_array_equal(first.boxes, [[2, 3, 12, 11], [30, 20, 40, 30]])
    np.testing.assert_array_equal(first.labels, [2, 1])
    np.testing.assert_array_equal(first.area, [50.0, 100.0])  # the annotation's area, else the clipped box's
    assert (first.width, first.height, first.image_id) == (40, 30, 1)
    assert Path(first.file) == coco_dir / "train" / "a.png"


def test_cleaning_clips_drops_and_keeps_crowd_regions_and_negatives(coco_dir: Path) -> None:
    src = open_detection(coco_dir, "train")
    stats = src.stats.as_dict()
    assert stats == {"images": 3, "boxes": 2, "clipped": 1, "dropped": 1, "negatives": 2, "crowd": 1,
                     "difficult": 0, "missing": 0}  # fmt: skip
    second = src.records[1]  # degenerate box gone, the crowd region kept for the evaluator only
    np.testing.assert_array_equal(second.boxes, [[10, 2, 22, 11]])
    assert second.iscrowd.tolist() == [True] and not second.train_mask.any()
    assert len(src.records[2].labels) == 0  # an image without objects stays, as a negative


def test_cocos_own_layout_with_annotations_folder_and_year_suffix(tmp_path: Path) -> None:
    root = tmp_path / "coco2017"
    write_coco_set(root, split="val2017")
    (root / "annotations").mkdir()
    (root / "instances_val2017.json").rename(root / "annotations" / "instances_val2017.json")
    src = open_detection(root, "val")
    assert len(src) == 3 and Path(src.records[0].file) == root / "val2017" / "a.png"
    direct = open_detection(root / "annotations" / "instances_val2017.json", "val")
    assert [r.file for r in direct.records] == [r.file for r in src.records]


def test_another_split_must_use_the_training_categories(coco_dir: Path) -> None:
    train = open_detection(coco_dir, "train")
    write_coco_set(coco_dir, "val", categories=[{"id": 3, "name": "three"}, {"id": 9, "name": "nine"}],
                   annotations=[])  # fmt: skip
    with pytest.raises(DataError, match=r"\[9\] are not among the 2 categories of the training split"):
        open_detection(coco_dir, "val", categories=train.categories)
    write_coco_set(coco_dir, "val", categories=[{"id": 7, "name": "seven"}], annotations=[])
    val = open_detection(coco_dir, "val", categories=train.categories)
    assert val.categories == train.categories


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"images": [], "annotations": []}, "not a COCO instances file"),
        ({"images": [{"id": 1}], "annotations": [], "categories": []}, r"images\[0\] lacks \['width'"),
        ({"images": [{"id": 1, "width": 4, "height": 4, "file_name": "x.png"}], "categories": [],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1]}]}, r"category ids \[5\]"),
        ({"images": [{"id": 1, "width": 4, "height": 4, "file_name": "x.png"}], "categories": [{"id": 5, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1]}]},
         r"annotations\[0\] 'bbox' must be 4 finite numbers"),
    ],
)  # fmt: skip
def test_malformed_instances_files_are_one_error_naming_the_file(tmp_path: Path, payload: dict, message: str) -> None:
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=message) as err:
        open_detection(path, "train")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_written_split_reads_back_with_pycocotools_and_our_reader(coco_dir: Path, tmp_path: Path) -> None:
    src = open_detection(coco_dir, "train")
    ann = write_coco(src.records, tmp_path / "out", "train", src.categories)
    coco = COCO(str(ann))  # the reference reader
    assert sorted(coco.getCatIds()) == [3, 7] and len(coco.imgs) == len(COCO_IMAGES)
    boxes = sorted(a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[1])))
    assert boxes == [[2.0, 3.0, 10.0, 8.0], [30.0, 20.0, 10.0, 10.0]]
    again = open_detection(tmp_path / "out", "train", categories=src.categories)
    for a, b in zip(src.records, again.records, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.iscrowd, b.iscrowd)
        assert torch.equal(decode_image_file(a.file), decode_image_file(b.file))
    assert again.stats.dropped == 0 and again.stats.crowd == 1


IMAGE = {"id": 1, "width": 4, "height": 4, "file_name": "x.png"}
BOX = {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 2, 2]}
CATEGORY = {"id": 5, "name": "a"}


@pytest.mark.parametrize(("images", "annotations", "message"), [
    ([{**IMAGE, "width": "abc"}], [], r"images\[0\] 'width' must be an integer in \[1, 1000000\], got 'abc'"),
    ([{**IMAGE, "width": 1e300}], [], r"images\[0\] 'width' must be an integer in \[1, 1000000\], got 1e\+300"),
    ([{**IMAGE, "file_name": 5}], [], r"images\[0\] 'file_name' must be a file name, got 5"),
    ([{**IMAGE, "id": "one"}], [], r"images\[0\] 'id' must be an integer, got 'one'"),
    ([IMAGE], [{**BOX, "area": "big"}], r"annotations\[0\] 'area' must be a finite number, got 'big'"),
    ([IMAGE], [{**BOX, "category_id": [5]}], r"annotations\[0\] 'category_id' must be an integer, got \[5\]"),
    ([IMAGE], [{**BOX, "bbox": [0, 0, "2", 2]}], r"annotations\[0\] 'bbox' must be 4 finite numbers"),
    ([IMAGE, {**IMAGE, "file_name": "y.png"}], [], "two images entries share the id 1 .pycocotools would keep only"),
    ([IMAGE], [{**BOX, "id": i} for i in range(1001)], "image 1 has 1001 annotations, more than 1000"),
])  # fmt: skip
def test_malformed_coco_fields_are_one_error_naming_the_entry(tmp_path: Path, images, annotations, message) -> None:
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [CATEGORY]}))
    with pytest.raises(DataError, match=message) as err:
        open_detection(path, "train")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_json_nested_too_deeply_and_infinite_numbers_are_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "instances_train.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="JSON nested too deeply to be a dataset"):
        open_detection(path, "train")
    text = json.dumps({"images": [IMAGE], "annotations": [], "categories": [CATEGORY]})
    path.write_text(text.replace('"width": 4', '"width": 1e400'))
    with pytest.raises(DataError, match=r"'width' must be an integer in \[1, 1000000\], got inf"):
        open_detection(path, "train")
