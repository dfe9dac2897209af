"""Detection records and the one entry point that opens a dataset: COCO JSON, PASCAL VOC or the embedded scenes.

Every format is read into the same :class:`Record` list, cleaned the same way (:func:`clean_boxes`), so the
loaders, the writer and the metrics never see format differences. Cleaning rules, counted in
:class:`DetectionStats`:

- boxes reaching outside the image are clipped to it (``clipped``);
- boxes with zero or negative width or height, after clipping, or with non-finite corners are dropped (``dropped``);
- images left without a training box are kept as negatives (``negatives``);
- COCO ``iscrowd`` regions and VOC ``difficult`` objects stay in the record for the evaluator (COCOeval ignores
  crowd regions, VOC's metric ignores difficult objects) but not in the training targets, as py-faster-rcnn's
  VOC reader (``use_diff=False``) and torchvision's COCO references do;
- image files missing at open time go through the ``bad_images`` policy (``fail``: one DataError naming the file;
  ``skip``: logged once, the image left out of training and evaluation).

Categories: a dataset's categories are numbered 1..K in a fixed order (labels; 0 is the background) and the list
``categories`` (``[{"id": original id, "name": ...}, ...]``, label ``i`` at position ``i - 1``) maps them back, so
results are reported in the dataset's own ids (COCO's 1..90 with gaps). Pass the training split's list when
opening another split, so both number categories the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from resnet.data.imagefolder import BadImageLog, BadSample
from resnet.errors import DataError

Category = dict[str, Any]
"""``{"id": int, "name": str}``: one category with its id in the source dataset."""

NOT_A_DATASET = (
    "expected a COCO instances JSON (an object with 'images', 'annotations' and 'categories' lists, or a folder "
    "holding instances_{split}.json) or a PASCAL VOC folder (Annotations/*.xml and ImageSets/Main/{split}.txt)"
)


@dataclass
class Record:
    """One image and its cleaned annotations; coordinates are pixels of the stored image, xyxy, corners
    on the pixel grid's edges (a box covering pixel columns 0..9 is x 0..10)."""

    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    """(N, 4) float32 xyxy, inside the image, positive area."""
    labels: np.ndarray
    """(N,) int64 in 1..K."""
    iscrowd: np.ndarray
    """(N,) bool: COCO crowd regions (kept for the evaluator only)."""
    difficult: np.ndarray
    """(N,) bool: VOC difficult objects (kept for the evaluator only)."""
    area: np.ndarray
    """(N,) float32: the annotation's area (COCO: the segment's) when given, else the box's; COCOeval's size
    ranges (small / medium / large) use it."""
    file: str | None = None
    """Image file; None when ``image`` holds the pixels."""
    image: Tensor | None = None
    """uint8 (3, H, W) held in memory (the embedded scenes)."""
    name: str = ""
    """The file name or VOC image id, for messages and written datasets."""

    @property
    def train_mask(self) -> np.ndarray:
        """Objects the detector trains on: neither crowd nor difficult."""
        return ~(self.iscrowd | self.difficult)


@dataclass
class DetectionStats:
    """What cleaning did to a split (saved in the run folder beside the categories)."""

    images: int = 0
    boxes: int = 0
    """Training boxes kept (crowd and difficult ones excluded)."""
    clipped: int = 0
    dropped: int = 0
    negatives: int = 0
    crowd: int = 0
    difficult: int = 0
    missing: int = 0
    """Images left out because their file was missing (``bad_images=skip``)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        """One line: what was kept and what cleaning changed or left out."""
        return (f"{self.images} images, {self.boxes} boxes to train on; {self.clipped} clipped to their image, "
                f"{self.dropped} dropped (empty, outside the image or not finite), {self.negatives} images without "
                f"a box, {self.crowd} crowd, {self.difficult} difficult, {self.missing} missing files left out")


@dataclass
class DetectionSource:
    """One split of a detection dataset: cleaned records, the category list and the cleaning tally."""

    name: str
    split: str
    records: list[Record]
    categories: list[Category]
    stats: DetectionStats = field(default_factory=DetectionStats)
    bad: BadImageLog = field(default_factory=BadImageLog)

    @property
    def num_classes(self) -> int:
        """Foreground categories K (the models add the background class 0)."""
        return len(self.categories)

    def __len__(self) -> int:
        return len(self.records)


def clean_boxes(boxes: np.ndarray, width: int, height: int, stats: DetectionStats) -> tuple[np.ndarray, np.ndarray]:
    """(clipped boxes, keep mask) for raw xyxy boxes of one image; counts clipped and dropped boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    safe = np.where(finite[:, None], boxes, 0.0)
    clipped = np.clip(safe, 0.0, [width, height, width, height])
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    stats.dropped += int((~keep).sum())
    stats.clipped += int((keep & (clipped != safe).any(axis=1)).sum())
    return clipped.astype(np.float32), keep


def make_record(
    image_id: int,
    size: tuple[int, int],
    raw_boxes: np.ndarray,
    labels: np.ndarray,
    stats: DetectionStats,
    iscrowd: np.ndarray | None = None,
    difficult: np.ndarray | None = None,
    area: np.ndarray | None = None,
    **where: Any,
) -> Record:
    """A cleaned :class:`Record` from raw xyxy boxes (``size`` is (width, height)); ``where``: file/image/name."""
    width, height = size
    n = len(labels)
    boxes, keep = clean_boxes(raw_boxes, width, height, stats)
    crowd = np.zeros(n, bool) if iscrowd is None else np.asarray(iscrowd, bool)
    hard = np.zeros(n, bool) if difficult is None else np.asarray(difficult, bool)
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    given = box_area if area is None else np.asarray(area, np.float64)
    area_out = np.where(np.isfinite(given) & (given > 0), given, box_area).astype(np.float32)
    rec = Record(
        image_id=int(image_id), width=int(width), height=int(height), boxes=boxes[keep],
        labels=np.asarray(labels, np.int64)[keep], iscrowd=crowd[keep], difficult=hard[keep], area=area_out[keep],
        **where,
    )  # fmt: skip
    stats.images += 1
    stats.crowd += int(rec.iscrowd.sum())
    stats.difficult += int((rec.difficult & ~rec.iscrowd).sum())
    trained = int(rec.train_mask.sum())
    stats.boxes += trained
    stats.negatives += trained == 0
    return rec


def drop_missing(records: list[Record], bad: BadImageLog, stats: DetectionStats) -> list[Record]:
    """Apply the ``bad_images`` policy to records whose image file does not exist."""
    kept = []
    for rec in records:
        if rec.file is not None and not os.path.isfile(rec.file):
            bad.handle([BadSample(rec.file, f"{rec.file}: image file not found")])
            stats.missing += 1
            continue
        kept.append(rec)
    return kept


def load_json(path: Path) -> Any:
    """The parsed JSON of ``path``, or one DataError naming the file and what was expected."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not JSON ({type(e).__name__}: {e}); {NOT_A_DATASET}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a dataset; {NOT_A_DATASET}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def map_categories(
    found: list[Category], given: list[Category] | None, key: str, where: str
) -> tuple[list[Category], dict[Any, int]]:
    """(the category list, original ``key`` value -> label 1..K): ``given`` (another split's list) when passed,
    else ``found``; every found category must be among the given ones."""
    cats = [{"id": int(c["id"]), "name": str(c["name"])} for c in (given if given is not None else found)]
    label = {c[key]: i + 1 for i, c in enumerate(cats)}
    if len(label) != len(cats):
        raise DataError(f"{where}: category {key}s are not unique; give every category its own {key}")
    unknown = [c[key] for c in found if c[key] not in label]
    if unknown:
        raise DataError(
            f"{where}: categories {unknown[:5]} are not among the {len(cats)} categories of the training split; "
            "every split must use the training split's categories"
        )
    return cats, label
