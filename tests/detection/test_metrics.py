"""COCO and VOC 2007 metrics against hand-computed values; results files; gathering across processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resnet.detection.coco import write_coco
from resnet.detection.data import DetectionStats, Record, make_record
from resnet.detection.metrics import (
    COCO_KEYS,
    coco_ground_truth,
    coco_metrics,
    detections_from_outputs,
    evaluate_detections,
    gather_detections,
    voc07_ap,
    voc07_map,
    write_coco_results,
)
from resnet.detection.scenes import scenes_source
from resnet.detection.sources import open_detection

CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]


def _record(image_id: int, boxes: list, labels: list, difficult: list | None = None, size: int = 200) -> Record:
    hard = None if difficult is None else np.array(difficult, bool)
    boxes_xyxy = np.array(boxes, np.float64).reshape(-1, 4)
    return make_record(image_id, (size, size), boxes_xyxy, np.array(labels), DetectionStats(), difficult=hard)


def _det(image_id: int, boxes: list, scores: list, labels: list) -> dict:
    return {"image_id": image_id, "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores), "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip


def _perfect(records) -> list[dict]:
    return [_det(r.image_id, r.boxes[r.train_mask].tolist(), [1.0] * int(r.train_mask.sum()),
                 r.labels[r.train_mask].tolist()) for r in records]  # fmt: skip


def test_perfect_detections_score_one_on_both_metrics(capsys: pytest.CaptureFixture) -> None:
    src = scenes_source("test", 8, seed=0)
    scores = evaluate_detections(src.records, src.categories, _perfect(src.records))
    assert scores == {"coco_map": 1.0, "coco_map50": 1.0, "coco_map75": 1.0, "coco_map_small": 1.0,
                      "coco_map_medium": 1.0, "coco_map_large": -1.0, "voc07_map": 1.0}  # fmt: skip
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced


def test_crowd_regions_are_ignored_and_ids_map_back_to_the_datasets_own(coco_dir: Path) -> None:
    src = open_detection(coco_dir, "train")  # category ids 3 and 7, a crowd region on image 2
    dets = _perfect(src.records)
    dets[1] = _det(2, [[10, 2, 22, 11]], [0.5], [2])  # a detection on the crowd region: neither right nor wrong
    scores = coco_metrics(coco_ground_truth(src.records, src.categories), dets, src.categories)
    assert scores["coco_map"] == pytest.approx(1.0) and scores["coco_map_small"] == pytest.approx(1.0)
    assert scores["coco_map_large"] == -1.0


def test_one_hit_one_false_positive_of_two_objects_gives_the_hand_computed_ap() -> None:
    """Recall 0.5 at precision 1, then precision falls: COCO's 101-point AP is 51/101 (recalls 0..0.5), at
    every IoU threshold; VOC's 11-point AP is 6/11. Both boxes are 100x100: COCO's "large" range."""
    records = [_record(1, [[0, 0, 100, 100], [100, 100, 200, 200]], [1, 1])]
    dets = [_det(1, [[0, 0, 100, 100], [150, 0, 190, 40]], [0.9, 0.8], [1, 1])]
    scores = coco_metrics(coco_ground_truth(records, CATS), dets, CATS)
    for key in ("coco_map", "coco_map50", "coco_map75", "coco_map_large"):
        assert scores[key] == pytest.approx(51 / 101)
    assert scores["coco_map_small"] == scores["coco_map_medium"] == -1.0
    assert voc07_map(records, dets, 3) == pytest.approx(6 / 11)


def test_a_box_at_iou_062_counts_at_three_of_cocos_ten_thresholds() -> None:
    records = [_record(1, [[0, 0, 100, 100]], [2])]
    dets = [_det(1, [[0, 0, 100, 62]], [0.9], [2])]  # IoU 0.62: a hit at 0.50, 0.55, 0.60
    scores = coco_metrics(coco_ground_truth(records, CATS), dets, CATS)
    assert scores["coco_map"] == pytest.approx(0.3)
    assert (scores["coco_map50"], scores["coco_map75"]) == (pytest.approx(1.0), pytest.approx(0.0))
    assert voc07_ap(records, dets, 3) == {2: 1.0}


def _voc_case() -> tuple[list[Record], list[dict]]:
    records = [
        _record(1, [[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], difficult=[False, True]),
        _record(2, [[0, 0, 10, 10], [50, 50, 60, 60]], [1, 2]),
    ]
    dets = [
        _det(1, [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 45, 45], [0, 0, 10, 10.5]], [0.9, 0.8, 0.7, 0.5],
             [1, 1, 1, 1]),  # hit, the difficult object (ignored), a miss, a duplicate of the hit
        _det(2, [[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]], [0.6, 0.95, 0.4], [1, 2, 3]),
    ]  # fmt: skip
    return records, dets


def test_voc07_ap_matches_the_hand_computed_golden() -> None:
    """Class 1 in score order: TP, (difficult), FP, TP, FP -> recall .5 .5 1 1, precision 1 .5 .67 .5; the
    11-point AP is (6 * 1 + 5 * 2/3) / 11 = 28/33. Class 2: one hit, AP 1. Class 3 has no ground truth."""
    records, dets = _voc_case()
    aps = voc07_ap(records, dets, 3)
    assert aps.keys() == {1, 2}
    assert aps[1] == pytest.approx(28 / 33) and aps[2] == 1.0
    assert voc07_map(records, dets, 3) == pytest.approx((28 / 33 + 1) / 2)


def test_only_images_with_an_entry_are_scored() -> None:
    records, dets = _voc_case()
    assert voc07_ap(records, dets[:1], 3) == {1: 1.0}  # image 2 not scored: A is class 1's only object, found first
    empty_entry = [dets[0], _det(2, [], [], [])]  # image 2 scored, nothing found there: C and E are misses
    aps = voc07_ap(records, empty_entry, 3)
    assert aps[2] == 0.0 and aps[1] == pytest.approx(6 / 11)


def test_results_file_rescored_by_pycocotools_alone_gives_the_same_numbers(coco_dir: Path, tmp_path: Path) -> None:
    src = open_detection(coco_dir, "train")
    ann = write_coco(src.records, tmp_path / "gt", "train", src.categories)
    dets = [_det(1, [[2, 3, 12, 9], [29, 20, 40, 30]], [0.7, 0.9], [2, 2]), _det(3, [[1, 1, 5, 5]], [0.3], [1])]
    results = write_coco_results(tmp_path / "results.json", dets, src.categories)
    entries = json.loads(results.read_text())
    assert {e["category_id"] for e in entries} == {3, 7} and entries[0]["bbox"] == [2.0, 3.0, 10.0, 6.0]
    gt = COCO(str(ann))
    ev = COCOeval(gt, gt.loadRes(str(results)), "bbox")
    ev.params.imgIds = [1, 3]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ours = coco_metrics(coco_ground_truth(src.records, src.categories), dets, src.categories)
    assert [ours[k] for k in COCO_KEYS] == pytest.approx(list(ev.stats[:6]))


def test_no_detections_at_all_score_zero() -> None:
    records = [_record(1, [[0, 0, 50, 50]], [1])]
    scores = coco_metrics(coco_ground_truth(records, CATS), [_det(1, [], [], [])], CATS)
    assert scores["coco_map"] == 0.0 and scores["coco_map_medium"] == 0.0
    assert coco_metrics(coco_ground_truth(records, CATS), [], CATS) == dict.fromkeys(COCO_KEYS, 0.0)


def test_model_outputs_are_mapped_back_to_the_files_pixels() -> None:
    outputs = [{"boxes": torch.tensor([[20.0, 40, 60, 80]]), "scores": torch.tensor([0.5]),
                "labels": torch.tensor([3])}]  # fmt: skip
    targets = [{"image_id": 7, "orig_size": torch.tensor([50, 100])}]
    (det,) = detections_from_outputs(outputs, [torch.zeros(3, 100, 200)], targets)
    assert det["image_id"] == 7 and det["labels"].tolist() == [3]
    torch.testing.assert_close(det["boxes"], torch.tensor([[10.0, 20, 30, 40]]))


def _gather_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from resnet.engine.distributed import shutdown

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        mine = [_det(2 * k + rank + 1, [[0, 0, 1 + rank, 1]], [0.5], [1]) for k in range(2)]
        torch.save(gather_detections(mine), f"{out}/rank{rank}.pt")
    finally:
        shutdown()


@pytest.mark.dist
@pytest.mark.slow
def test_every_rank_gathers_every_ranks_detections(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert [d["image_id"] for d in got] == [1, 2, 3, 4]
        assert [d["boxes"][0, 2].item() for d in got] == [1.0, 2.0, 1.0, 2.0]
