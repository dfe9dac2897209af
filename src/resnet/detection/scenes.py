"""The embedded detection set: scenes of real handwritten digits (scikit-learn's scans), no download needed.

Each scene is a ``SCENE_SIZE`` square canvas with 1 to 5 digits (:data:`MIN_DIGITS`, :data:`MAX_DIGITS`), each
a scan from :func:`resnet.data.load_digits_split` resized to a side of 16..48 pixels, tinted a random colour and
laid on a faint noise background; two digits overlap by at most :data:`MAX_OVERLAP` of the smaller one, so the
task stays learnable by a small detector. Boxes are tight around each digit's ink. Labels are 1..10 for digits
0..9 (:data:`DIGIT_CATEGORIES`). Objects span COCO's small and medium size ranges.

The digits' own train/test split is kept: ``train`` scenes are made of training scans only and ``test`` scenes of
test scans only. A scene is a function of (seed, split, index) alone (a numpy Generator seeded from the three), so
the first ``n`` scenes of a larger set are the ``n`` scenes of a smaller one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor

from resnet.data import load_digits_split
from resnet.data.transforms import seed_from
from resnet.detection.data import DetectionSource, DetectionStats, Record, make_record
from resnet.errors import ConfigError

SCENE_SIZE = 128
MIN_DIGITS, MAX_DIGITS = 1, 5
MIN_SIDE, MAX_SIDE = 16, 48
MAX_OVERLAP = 0.2
"""Largest share of the smaller digit's square another digit may cover."""
INK = 64
"""A pixel (0..255) brighter than this in the resized scan is ink: the box is tight around the ink."""
NOISE = 24
"""Background noise amplitude (0..255)."""
PLACEMENT_TRIES = 20
SPLITS = ("train", "test")
DIGIT_CATEGORIES = [{"id": d + 1, "name": str(d)} for d in range(10)]


def _digits(split: str) -> tuple[Tensor, Tensor]:
    if split not in SPLITS:
        raise ConfigError(f"scene split {split!r} is not one of {list(SPLITS)}")
    xtr, ytr, xte, yte, _ = load_digits_split()
    return (xtr, ytr) if split == "train" else (xte, yte)


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in placed:
        inter = max(0, min(x1, a1) - max(x0, a0)) * max(0, min(y1, b1) - max(y0, b0))
        smaller = min((x1 - x0) * (y1 - y0), (a1 - a0) * (b1 - b0))
        if inter > MAX_OVERLAP * smaller:
            return True
    return False


def _resized(scan: Tensor, side: int) -> np.ndarray:
    """uint8 (3, 32, 32) -> float (3, side, side) on 0..255, antialiased bilinear."""
    x = nnf.interpolate(scan[None].float(), size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp_(0, 255).numpy()


def _ink_box(patch: np.ndarray, x: int, y: int) -> list[float]:
    """The tight pixel-edge box of the patch's ink, placed at (x, y); the whole patch when it has none."""
    rows, cols = np.nonzero(patch.max(axis=0) > INK)
    if len(rows) == 0:
        return [x, y, x + patch.shape[2], y + patch.shape[1]]
    return [x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1]


def _scene(images: Tensor, labels: Tensor, rng: np.random.Generator, size: int) -> tuple[np.ndarray, list, list]:
    canvas = rng.uniform(0, NOISE, size=(3, size, size))
    placed: list[tuple[int, int, int, int]] = []
    boxes, classes = [], []
    for _ in range(int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))):
        index = int(rng.integers(len(labels)))
        side = int(rng.integers(MIN_SIDE, min(MAX_SIDE, size) + 1))
        tint = rng.uniform(0.5, 1.0, size=3)
        for _ in range(PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            if not _overlaps((x, y, x + side, y + side), placed):
                break
        else:
            continue  # no room left for this digit: the scene holds fewer
        placed.append((x, y, x + side, y + side))
        patch = _resized(images[index], side)
        region = canvas[:, y : y + side, x : x + side]
        np.maximum(region, patch * tint[:, None, None], out=region)
        boxes.append(_ink_box(patch, x, y))
        classes.append(int(labels[index]) + 1)
    return canvas, boxes, classes


def make_scenes(split: str, count: int, seed: int = 0, size: int = SCENE_SIZE) -> list[Record]:
    """``count`` scenes of ``split`` ("train" or "test") as records holding their uint8 (3, size, size) image."""
    if count < 0:
        raise ConfigError(f"scene count {count} must be >= 0")
    if size < MIN_SIDE:
        raise ConfigError(f"scene size {size} must be at least {MIN_SIDE} pixels")
    images, labels = _digits(split)
    stats = DetectionStats()
    records = []
    for i in range(count):
        rng = np.random.default_rng(seed_from(seed, SPLITS.index(split), i))
        canvas, boxes, classes = _scene(images, labels, rng, size)
        image = torch.from_numpy(np.rint(canvas).astype(np.uint8))
        records.append(make_record(
            i + 1, (size, size), np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int64), stats,
            image=image, name=f"{split}_{i + 1:06d}",
        ))  # fmt: skip
    return records


def scenes_source(split: str, count: int, seed: int = 0, size: int = SCENE_SIZE) -> DetectionSource:
    """The scenes as a :class:`DetectionSource` (digits' categories, in-memory images)."""
    records = make_scenes(split, count, seed, size)
    stats = DetectionStats(images=len(records), boxes=sum(len(r.labels) for r in records),
                           negatives=sum(len(r.labels) == 0 for r in records))  # fmt: skip
    return DetectionSource("scenes", split, records, [dict(c) for c in DIGIT_CATEGORIES], stats)
