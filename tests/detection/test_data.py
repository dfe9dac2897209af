"""Opening a detection dataset: format detection, files of neither format, missing and unreadable images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet.detection.data import DetectionStats, clean_boxes
from resnet.detection.loaders import DetectionEvalLoader, DetectionTrainStream
from resnet.detection.sources import open_detection
from resnet.errors import DataError

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("labels.txt", "dog 1 2 3 4\n"),
        ("labels.json", json.dumps([{"image": "a.png", "boxes": []}])),
        ("labels.json", json.dumps({"images": [], "annotations": {}})),
        ("labels.xml", "<annotation/>"),
    ],
)
def test_a_file_of_neither_format_is_one_error_saying_what_was_expected(tmp_path: Path, name: str,
                                                                        content: str) -> None:  # fmt: skip
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as err:
        open_detection(path, "train")
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "COCO instances JSON" in message and "PASCAL VOC folder" in message


def test_a_folder_of_neither_format_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no annotations for split 'train'.*instances_.*Annotations/"):
        open_detection(tmp_path, "train")
    with pytest.raises(DataError, match="not found"):
        open_detection(tmp_path / "nowhere", "train")


def test_formats_are_told_apart_by_their_layout(coco_dir: Path, voc_dir: Path) -> None:
    assert open_detection(coco_dir, "train").categories[0] == {"id": 3, "name": "three"}
    assert open_detection(voc_dir, "train").categories[0] == {"id": 1, "name": "aeroplane"}


def test_clean_boxes_clips_into_the_image_and_drops_empty_or_non_finite_boxes() -> None:
    stats = DetectionStats()
    raw = np.array([[-5, 2, 8, 9], [1, 1, 3, 3], [4, 4, 4, 8], [9, 9, 5, 12], [np.nan, 0, 3, 3], [12, 0, 20, 5]])
    boxes, keep = clean_boxes(raw, 10, 10, stats)
    assert keep.tolist() == [True, True, False, False, False, False]  # [12, 0, 20, 5] lies wholly outside
    np.testing.assert_array_equal(boxes[keep], [[0, 2, 8, 9], [1, 1, 3, 3]])
    assert (stats.clipped, stats.dropped) == (1, 4)


def test_a_missing_image_file_fails_naming_it_or_is_skipped_and_counted(coco_dir: Path) -> None:
    gone = coco_dir / "train" / "b.png"
    gone.unlink()
    with pytest.raises(DataError, match=f"{gone}: image file not found.*bad_images=skip"):
        open_detection(coco_dir, "train")
    src = open_detection(coco_dir, "train", bad_images="skip")
    assert [r.image_id for r in src.records] == [1, 3]
    assert src.stats.missing == 1 and src.bad.skipped == 1 and src.bad.files == {str(gone)}


def test_an_unreadable_image_fails_the_loader_or_is_dropped_from_its_batch(coco_dir: Path) -> None:
    broken = coco_dir / "train" / "a.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=f"{broken}: cannot decode image"):
        list(DetectionEvalLoader(open_detection(coco_dir, "train"), 3, CPU))
    src = open_detection(coco_dir, "train", bad_images="skip")
    batches = list(DetectionEvalLoader(src, 3, CPU))
    assert [t["image_id"] for t in batches[0][1]] == [2, 3] and src.bad.files == {str(broken)}
    images, targets = DetectionTrainStream(src, 3, CPU, seed=0).next()
    assert len(images) == 2 and 1 not in {t["image_id"] for t in targets}


def test_an_image_whose_size_disagrees_with_its_annotation_is_a_bad_image(coco_dir: Path) -> None:
    payload = json.loads((coco_dir / "instances_train.json").read_text())
    payload["images"][0]["width"] = 41
    (coco_dir / "instances_train.json").write_text(json.dumps(payload))
    with pytest.raises(DataError, match="a.png: image is 40x30 pixels but its annotation says 41x30"):
        list(DetectionEvalLoader(open_detection(coco_dir, "train"), 3, CPU))
