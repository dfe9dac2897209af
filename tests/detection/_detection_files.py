"""Writers of small detection datasets in the real formats (COCO instances JSON, PASCAL VOC XML) with PNG images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# (file name, width, height) and annotations [x, y, w, h] per image: category ids 3 and 7 (not contiguous),
# one crowd region, one box reaching outside its image, one degenerate box, one image without objects.
COCO_IMAGES = [("a.png", 40, 30), ("b.png", 50, 20), ("c.png", 30, 30)]
COCO_ANNOTATIONS: list[dict[str, Any]] = [
    {"image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8], "area": 50.0},
    {"image_id": 1, "category_id": 3, "bbox": [30, 20, 20, 20]},  # reaches past 40x30: clipped to [30, 20, 40, 30]
    {"image_id": 2, "category_id": 3, "bbox": [5, 5, 0, 6]},  # zero width: dropped
    {"image_id": 2, "category_id": 7, "bbox": [10, 2, 12, 9], "iscrowd": 1},  # crowd: evaluator only
]
COCO_CATEGORIES = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]


def write_png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def write_coco_set(folder: Path, split: str = "train", images=COCO_IMAGES, annotations=COCO_ANNOTATIONS,
                   categories=COCO_CATEGORIES) -> Path:  # fmt: skip
    """``folder/instances_{split}.json`` and ``folder/{split}/*.png``; image ids 1.., annotation ids 1..."""
    for i, (name, w, h) in enumerate(images):
        write_png(folder / split / name, w, h, seed=i)
    payload = {
        "images": [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(images)],
        "annotations": [{"id": i + 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)],
        "categories": categories,
    }
    path = folder / f"instances_{split}.json"
    path.write_text(json.dumps(payload))
    return path


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, list[int], int]]) -> str:
    """A VOC annotation: objects are (name, [xmin, ymin, xmax, ymax] 1-based inclusive, difficult)."""
    parts = [f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]  # fmt: skip
    for name, (x0, y0, x1, y1), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


VOC_ENTRIES = {
    "train": [
        ("000005", 48, 32, [("dog", [1, 1, 10, 20], 0), ("cat", [20, 5, 40, 30], 1)]),
        ("000007", 32, 32, [("dog", [5, 5, 40, 12], 0)]),  # xmax past the 32-pixel width: clipped
    ],
    "val": [("000009", 32, 24, [])],
}


def write_voc_set(root: Path, entries=VOC_ENTRIES) -> Path:
    """``Annotations/``, ``ImageSets/Main/{split}.txt`` and ``JPEGImages/`` (PNG files named in the XML)."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, items in entries.items():
        for k, (voc_id, w, h, objects) in enumerate(items):
            write_png(root / "JPEGImages" / f"{voc_id}.png", w, h, seed=k)
            (root / "Annotations" / f"{voc_id}.xml").write_text(voc_xml(f"{voc_id}.png", w, h, objects))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{e[0]}\n" for e in items))
    return root


# `resnet detect train` flags for runs of seconds: tiny scenes, few anchors and proposals, no pre-training.
TINY = ["--pretrain", "none", "--scenes-train", "8", "--scenes-test", "4", "--scene-size", "64", "--min-size", "64",
        "--max-size", "64", "--anchor-sizes", "16,32,64", "--box-batch-size", "16", "--rpn-batch-size", "32",
        "--rpn-pre-nms-train", "200", "--rpn-post-nms-train", "50", "--rpn-pre-nms-test", "100",
        "--rpn-post-nms-test", "20", "--freeze-stages", "-1", "--batch-size", "2", "--device", "cpu",
        "--workers", "0"]
