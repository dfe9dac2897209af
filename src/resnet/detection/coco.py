"""COCO instances files (``instances_*.json``): reading them into records, writing records as one.

The JSON is indexed with pycocotools' :class:`~pycocotools.coco.COCO` (the reference reader, its prints
silenced); boxes are COCO's ``[x, y, width, height]`` in pixels, turned into xyxy. Categories are numbered
1..K in the order of their ids (COCO's 1..90 with gaps become 1..80).

Layout of a written split (:func:`write_coco`), the one COCO itself uses with ``annotations/`` flattened:
``folder/instances_{split}.json`` and ``folder/{split}/{image_id:06d}.png``, ``file_name`` relative to
``folder/{split}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from resnet.data.imagefolder import decode_image_file
from resnet.detection.data import (
    NOT_A_DATASET,
    Category,
    DetectionStats,
    Record,
    load_json,
    make_record,
    map_categories,
)
from resnet.errors import DataError
from resnet.fsutil import write_atomic
from resnet.limits import MAX_BOXES_PER_IMAGE, MAX_IMAGE_SIDE, finite_number


@contextlib.contextmanager
def quiet() -> Any:
    """pycocotools prints progress to stdout; keep the CLI's output to its own lines."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def coco_index(dataset: dict[str, Any]) -> Any:
    """A pycocotools COCO object over an in-memory instances dict (no file, no prints)."""
    from pycocotools.coco import COCO

    with quiet():
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def find_coco_file(folder: Path, split: str) -> Path | None:
    """``instances_{split}.json`` in ``folder`` or ``folder/annotations``, else the one ``instances_{split}*.json``
    there (COCO's ``instances_val2017.json`` for split ``val``)."""
    places = (folder, folder / "annotations")
    for place in places:
        if (place / f"instances_{split}.json").is_file():
            return place / f"instances_{split}.json"
    matches = sorted(p for place in places for p in place.glob(f"instances_{split}*.json"))
    return matches[0] if len(matches) == 1 else None


def image_root(ann: Path, split: str, first_file: str | None) -> Path:
    """Where ``file_name`` is relative to: ``{split}/`` beside the JSON or beside its folder (COCO's
    ``annotations/`` + ``val2017/``), else the JSON's folder; the first of them holding the first image wins."""
    stem = ann.stem.removeprefix("instances_") or split
    places = [ann.parent / stem, ann.parent.parent / stem, ann.parent / split, ann.parent.parent / split, ann.parent]
    folders = [p for p in places if p.is_dir()]
    if first_file is not None:
        for p in folders:
            if (p / first_file).is_file():
                return p
    return folders[0] if folders else ann.parent


def _integer(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(finite_number(v) for v in value)



# what each COCO entry's fields must be, as pycocotools and the loader use them: (field, test, what it must be)
FIELDS: dict[str, tuple[tuple[str, Any, str], ...]] = {
    "images": (("id", _integer, "an integer"),
               ("width", lambda v: _integer(v) and 1 <= v <= MAX_IMAGE_SIDE, f"an integer in [1, {MAX_IMAGE_SIDE}]"),
               ("height", lambda v: _integer(v) and 1 <= v <= MAX_IMAGE_SIDE, f"an integer in [1, {MAX_IMAGE_SIDE}]"),
               ("file_name", lambda v: isinstance(v, str) and v != "", "a file name")),
    "categories": (("id", _integer, "an integer"), ("name", lambda v: isinstance(v, str), "a string")),
    "annotations": (("image_id", _integer, "an integer"), ("category_id", _integer, "an integer"),
                    ("bbox", _box, "4 finite numbers [x, y, width, height]"),
                    ("area", lambda v: v is None or finite_number(v), "a finite number"),
                    ("iscrowd", lambda v: v is None or v in (0, 1), "0 or 1")),
}  # fmt: skip
REQUIRED = {"images": ("id", "width", "height", "file_name"), "categories": ("id", "name"),
            "annotations": ("image_id", "category_id", "bbox")}


def _check_shape(data: Any, ann: Path) -> None:
    """Every entry's fields of the types pycocotools and the loader use, ids unique, boxes per image capped: one
    DataError naming the entry, before anything is indexed or allocated from the file."""
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        raise DataError(f"{ann}: not a COCO instances file; {NOT_A_DATASET}")
    for what, fields in FIELDS.items():
        for i, entry in enumerate(data[what]):
            missing = [k for k in REQUIRED[what] if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise DataError(f"{ann}: {what}[{i}] lacks {missing}; COCO {what} need {list(REQUIRED[what])}")
            for name, test, must in fields:
                if not test(entry.get(name)):
                    raise DataError(f"{ann}: {what}[{i}] {name!r} must be {must}, got {entry[name]!r:.60}; "
                                    "fix the entry or regenerate the file")
    for what in ("images", "categories"):
        ids = [entry["id"] for entry in data[what]]
        if len(set(ids)) != len(ids):
            twice = next(k for k, n in Counter(ids).items() if n > 1)
            raise DataError(f"{ann}: two {what} entries share the id {twice!r} (pycocotools would keep only the last); "
                            "give each its own id")
    per_image = Counter(a["image_id"] for a in data["annotations"])
    crowded = [(k, n) for k, n in per_image.items() if n > MAX_BOXES_PER_IMAGE]
    if crowded:
        image, n = crowded[0]
        raise DataError(f"{ann}: image {image!r} has {n} annotations, more than {MAX_BOXES_PER_IMAGE} (training "
                        "compares every box with every anchor); split the image or filter its annotations")


def read_coco(
    ann: Path, split: str, stats: DetectionStats, categories: list[Category] | None = None
) -> tuple[list[Record], list[Category]]:
    """Records of one COCO instances file (every listed image, with or without annotations) and the categories."""
    data = load_json(ann)
    _check_shape(data, ann)
    coco = coco_index(data)
    found = [{"id": int(c["id"]), "name": str(c["name"])} for c in sorted(data["categories"], key=lambda c: c["id"])]
    cats, label = map_categories(found, categories, "id", str(ann))
    images = sorted(coco.imgs.values(), key=lambda im: im["id"])
    root = image_root(ann, split, images[0]["file_name"] if images else None)
    records = []
    for im in images:
        anns = coco.imgToAnns.get(im["id"], [])
        unknown = sorted({a["category_id"] for a in anns if a["category_id"] not in coco.cats})
        if unknown:
            raise DataError(f"{ann}: annotations of image {im['id']} use category ids {unknown} not in 'categories'")
        try:
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        except (ValueError, TypeError):
            raise DataError(f"{ann}: image {im['id']} has a bbox that is not 4 numbers [x, y, width, height]") from None
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        records.append(make_record(
            im["id"], (int(im["width"]), int(im["height"])), boxes,
            np.array([label[a["category_id"]] for a in anns], np.int64), stats,
            iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
            area=np.array([float(a.get("area", float("nan"))) for a in anns], np.float64),
            file=str(root / im["file_name"]), name=str(im["file_name"]),
        ))  # fmt: skip
    return records, cats


# ------------------------------------------------------------------------------------------------ writing


def coco_instances(records: Sequence[Record], categories: Sequence[Category], file_names: Sequence[str]) -> dict:
    """The instances dict of ``records`` (boxes as xywh, categories by their original ids)."""
    images, anns = [], []
    for rec, fname in zip(records, file_names, strict=True):
        images.append({"id": rec.image_id, "width": rec.width, "height": rec.height, "file_name": fname})
        for box, lab, crowd, area in zip(rec.boxes.tolist(), rec.labels.tolist(), rec.iscrowd.tolist(),
                                         rec.area.tolist(), strict=True):  # fmt: skip
            x0, y0, x1, y1 = box
            anns.append({
                "id": len(anns) + 1, "image_id": rec.image_id, "category_id": categories[lab - 1]["id"],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": area, "iscrowd": int(crowd),
            })  # fmt: skip
    cats = [{"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "")} for c in categories]
    return {"images": images, "annotations": anns, "categories": cats}


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (a temp file renamed over the target), so a killed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(payload))


def write_coco(
    scenes: Sequence[Record], folder: str | os.PathLike[str], split: str = "train",
    categories: Sequence[Category] | None = None,
) -> Path:
    """Write records as a COCO split (PNG images + ``instances_{split}.json``); returns the JSON's path.

    ``categories`` defaults to the digits' (the embedded scenes); records read from files are re-encoded as PNG.
    """
    from resnet.detection.scenes import DIGIT_CATEGORIES

    out = Path(folder)
    (out / split).mkdir(parents=True, exist_ok=True)
    names = []
    for rec in scenes:
        image = rec.image if rec.image is not None else decode_image_file(str(rec.file))
        name = f"{rec.image_id:06d}.png"
        Image.fromarray(image.to(torch.uint8).permute(1, 2, 0).numpy()).save(out / split / name)
        names.append(name)
    path = out / f"instances_{split}.json"
    write_json(path, coco_instances(scenes, categories or DIGIT_CATEGORIES, names))
    return path
