"""Opening a detection dataset by what is on disk: a COCO instances JSON (or a folder holding one) or a PASCAL VOC
folder. Kept apart from :mod:`resnet.detection.data` (the records), which the format readers build on."""

from __future__ import annotations

import os
from pathlib import Path

from resnet.data.imagefolder import BadImageLog
from resnet.detection.coco import find_coco_file, read_coco
from resnet.detection.data import NOT_A_DATASET, Category, DetectionSource, DetectionStats, drop_missing
from resnet.detection.voc import is_voc_folder, read_voc
from resnet.errors import DataError


def open_detection(
    path: str | os.PathLike[str],
    split: str,
    categories: list[Category] | None = None,
    bad_images: str = "fail",
) -> DetectionSource:
    """Open split ``split`` of the dataset at ``path``: a COCO instances JSON, a folder holding one
    (``instances_{split}.json`` or ``annotations/instances_{split}*.json``), or a PASCAL VOC folder
    (``Annotations/``, ``ImageSets/Main/{split}.txt``, ``JPEGImages/``); anything else is one DataError."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: not found; {NOT_A_DATASET}")
    bad, stats = BadImageLog(bad_images), DetectionStats()
    if root.is_dir() and is_voc_folder(root):
        records, cats = read_voc(root, split, stats, categories)
    else:
        ann = find_coco_file(root, split) if root.is_dir() else root
        if ann is None:
            raise DataError(f"{root}: no annotations for split {split!r}; {NOT_A_DATASET}")
        records, cats = read_coco(ann, split, stats, categories)
    records = drop_missing(records, bad, stats)
    return DetectionSource(str(root), split, records, cats, stats, bad)
