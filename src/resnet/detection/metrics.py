"""The two detection metrics of the paper's Tables 7 and 8, and the plumbing around them.

- COCO (Table 8): pycocotools' ``COCOeval`` (the reference implementation) on boxes: mAP@[.5:.95], mAP@.5,
  mAP@.75 and mAP for small / medium / large objects, 100 detections per image. A size range without ground
  truth scores -1 (pycocotools' convention). VOC ``difficult`` objects are handed to COCOeval as crowd regions,
  its only way to ignore an object.
- VOC 2007 (Table 7): per class, detections sorted by score are matched greedily to the unmatched ground-truth box
  of highest IoU (> 0.5); a match to a ``difficult`` (or crowd) object counts neither way, a second match to a box
  is a false positive; AP is the mean over recall 0, 0.1, ..., 1 of the highest precision at that recall or above
  (the devkit's 11-point interpolation). The mean runs over classes with ground truth.

IoU is taken on pixel-edge boxes (torchvision.ops.box_iou); VOC boxes were shifted to pixel edges when read, so
it equals the devkit's ``+1`` IoU on VOC's inclusive corners.

A *detection* is one evaluated image's output: ``{"image_id": int, "boxes": (n, 4) xyxy in the image file's
pixels, "scores": (n,), "labels": (n,) in 1..K}``; images without boxes still send one (empty) entry, since
the metrics score exactly the images that have an entry (an image dropped as unreadable is left out).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from resnet.detection.coco import coco_index, coco_instances, quiet, write_json
from resnet.detection.data import Category, Record
from resnet.detection.transforms import to_original

Detection = dict[str, Any]
COCO_KEYS = ("coco_map", "coco_map50", "coco_map75", "coco_map_small", "coco_map_medium", "coco_map_large")
"""Names of COCOeval's first six summary numbers (``COCOeval.stats[:6]``), in its order."""
VOC_IOU = 0.5


def _array(x: Any, dtype: Any) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)).astype(dtype)


def detections_from_outputs(outputs: Sequence[dict[str, Tensor]], images: Sequence[Tensor],
                            targets: Sequence[dict[str, Any]]) -> list[Detection]:  # fmt: skip
    """A torchvision detector's outputs on a loader batch -> detections on the CPU, in the files' pixels."""
    dets = []
    for out, image, target in zip(outputs, images, targets, strict=True):
        size = (int(image.shape[-2]), int(image.shape[-1]))
        original = tuple(int(v) for v in target["orig_size"].tolist()) if "orig_size" in target else size
        dets.append({
            "image_id": int(target["image_id"]),
            "boxes": to_original(out["boxes"].detach().float().cpu(), size, original),
            "scores": out["scores"].detach().float().cpu(),
            "labels": out["labels"].detach().cpu().to(torch.int64),
        })  # fmt: skip
    return dets


def gather_detections(local: Sequence[Detection]) -> list[Detection]:
    """Every rank's detections on every rank (torch.distributed.all_gather_object), sorted by image id; the
    local list, on the CPU, outside torchrun."""
    import torch.distributed as dist

    from resnet.engine.distributed import peer_loss_is_training_error

    cpu = [{k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in d.items()} for d in local]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return cpu
    parts: list[Any] = [None] * dist.get_world_size()
    with peer_loss_is_training_error():
        dist.all_gather_object(parts, cpu)
    return sorted((d for part in parts for d in part), key=lambda d: d["image_id"])


# ---------------------------------------------------------------------------------------------------- COCO


def coco_results(detections: Iterable[Detection], categories: Sequence[Category]) -> list[dict[str, Any]]:
    """COCO's results format: ``{image_id, category_id (the dataset's own id), bbox [x, y, w, h], score}``."""
    ids = [c["id"] for c in categories]
    out = []
    for det in detections:
        boxes, scores = _array(det["boxes"], np.float64).reshape(-1, 4), _array(det["scores"], np.float64)
        for (x0, y0, x1, y1), score, label in zip(boxes.tolist(), scores.tolist(), _array(det["labels"], np.int64),
                                                  strict=True):  # fmt: skip
            out.append({"image_id": int(det["image_id"]), "category_id": ids[int(label) - 1],
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})  # fmt: skip
    return out


def write_coco_results(
    path: str | os.PathLike[str], detections: Iterable[Detection], categories: Sequence[Category]
) -> Path:
    """Write the detections as a COCO results JSON (atomically) that any COCO tool can score."""
    out = Path(path)
    write_json(out, coco_results(detections, categories))
    return out


def coco_ground_truth(records: Sequence[Record], categories: Sequence[Category]) -> Any:
    """A pycocotools COCO object of the records' ground truth (in memory; difficult objects as crowd)."""
    ignored = [Record(**{**vars(r), "iscrowd": r.iscrowd | r.difficult, "image": None}) for r in records]
    return coco_index(coco_instances(ignored, categories, [r.name for r in records]))


def coco_metrics(
    ground_truth: Any, detections: Sequence[Detection], categories: Sequence[Category]
) -> dict[str, float]:
    """COCOeval's box summary (:data:`COCO_KEYS`) over the images that have a detection entry."""
    from pycocotools.cocoeval import COCOeval

    image_ids = sorted({int(d["image_id"]) for d in detections})
    if not image_ids:
        return dict.fromkeys(COCO_KEYS, 0.0)
    results = coco_results(detections, categories)
    with quiet():
        if results:
            dt = ground_truth.loadRes(results)
        else:  # loadRes refuses an empty list; no box at all scores 0 (or -1 where no ground truth)
            dt = coco_index({"images": ground_truth.dataset["images"], "annotations": [],
                             "categories": ground_truth.dataset["categories"]})  # fmt: skip
        ev = COCOeval(ground_truth, dt, "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_KEYS, ev.stats[:6], strict=True)}


# -------------------------------------------------------------------------------------------------- VOC 2007


def _voc_class_ap(records: Sequence[Record], detections: Sequence[Detection], label: int) -> float | None:
    gt = {r.image_id: (r.boxes[r.labels == label], (r.difficult | r.iscrowd)[r.labels == label]) for r in records}
    positives = sum(int((~ignored).sum()) for _, ignored in gt.values())
    if positives == 0:
        return None
    found = []
    for det in detections:
        labels = _array(det["labels"], np.int64)
        boxes = _array(det["boxes"], np.float32).reshape(-1, 4)[labels == label]
        scores = _array(det["scores"], np.float64)[labels == label]
        found += [(s, int(det["image_id"]), b) for s, b in zip(scores.tolist(), boxes, strict=True)]
    found.sort(key=lambda d: -d[0])  # stable: equal scores keep their order
    used = {i: np.zeros(len(b), bool) for i, (b, _) in gt.items()}
    tp, fp = [], []
    for _, image_id, box in found:
        boxes, ignored = gt.get(image_id, (np.zeros((0, 4), np.float32), np.zeros(0, bool)))
        best, overlap = 0, 0.0
        if len(boxes):
            ious = box_iou(torch.from_numpy(box[None]), torch.from_numpy(boxes))[0]
            best, overlap = int(ious.argmax()), float(ious.max())
        if overlap > VOC_IOU and ignored[best]:
            continue  # a difficult object: neither right nor wrong
        hit = overlap > VOC_IOU and not used[image_id][best]
        if hit:
            used[image_id][best] = True
        tp.append(hit)
        fp.append(not hit)
    ctp, cfp = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = ctp / positives
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    points = [precision[recall >= t / 10].max(initial=0.0) for t in range(11)]
    return float(np.mean(points))


def voc07_ap(records: Sequence[Record], detections: Sequence[Detection], num_classes: int) -> dict[int, float]:
    """Label -> VOC 2007 11-point AP at IoU 0.5, over the images that have a detection entry; classes without
    (non-difficult) ground truth there are left out."""
    evaluated = {int(d["image_id"]) for d in detections}
    scored = [r for r in records if r.image_id in evaluated]
    aps = {c: _voc_class_ap(scored, detections, c) for c in range(1, num_classes + 1)}
    return {c: ap for c, ap in aps.items() if ap is not None}


def voc07_map(records: Sequence[Record], detections: Sequence[Detection], num_classes: int) -> float:
    """The mean of :func:`voc07_ap` over the classes with ground truth (0 when none has)."""
    aps = voc07_ap(records, detections, num_classes)
    return float(np.mean(list(aps.values()))) if aps else 0.0


def evaluate_detections(
    records: Sequence[Record], categories: Sequence[Category], detections: Sequence[Detection]
) -> dict[str, float]:
    """Both metrics: :data:`COCO_KEYS` and ``voc07_map`` (pass gathered detections under torchrun)."""
    scores = coco_metrics(coco_ground_truth(records, categories), detections, categories)
    scores["voc07_map"] = voc07_map(records, detections, len(categories))
    return scores
