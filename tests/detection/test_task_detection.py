"""DetectionTask: the engine's task interface for Faster R-CNN (loss, running sums, COCO evaluation, record)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from resnet.config import DetectCfg, build_config
from resnet.detection.task import MONITOR, RUNNING, DetectionTask
from resnet.engine.distributed import DistInfo

SMALL = {"scenes_train": 8, "scenes_test": 4, "scene_size": 64, "min_size": 64, "max_size": 64,
         "anchor_sizes": (16, 32, 64), "box_batch_size": 16, "rpn_batch_size": 32, "rpn_pre_nms_train": 200,
         "rpn_post_nms_train": 50, "rpn_pre_nms_test": 100, "rpn_post_nms_test": 20, "freeze_stages": -1}


@pytest.fixture
def task_and_data():
    cfg = build_config({"train": {"batch_size": 2, "device": "cpu"}, "data": {"workers": 0}})
    task = DetectionTask(DetectCfg(image_mean=(0.1, 0.1, 0.1), image_std=(1.0, 1.0, 1.0), **SMALL))
    data = task.build_data(cfg, torch.device("cpu"), DistInfo())
    return cfg, task, data


class Oracle(nn.Module):
    """Answers with the ground truth of each image it is shown (an independent perfect detector)."""

    def __init__(self, records):
        super().__init__()
        self.records = records

    def forward(self, images):
        out = []
        for _ in images:
            rec = self.records.pop(0)
            out.append({"boxes": torch.from_numpy(rec.boxes), "scores": torch.ones(len(rec.labels)),
                        "labels": torch.from_numpy(rec.labels)})
        return out


def test_loss_is_the_sum_of_torchvisions_four_terms_and_the_sums_count_per_image(task_and_data):
    cfg, task, data = task_and_data
    model = task.build_model(cfg, data)
    batch = data.train.next()
    torch.manual_seed(0)
    loss, sums = task.loss(model, batch)
    torch.manual_seed(0)
    terms = model(*batch)
    assert set(terms) == set(RUNNING) and task.batch_size(batch) == 2
    assert torch.allclose(loss, sum(terms.values()))
    assert torch.allclose(sums, torch.stack([terms[k] for k in RUNNING]).detach() * 2)
    figures = task.train_figures(dict(zip(RUNNING, sums.tolist(), strict=True)), 2.0)
    assert figures == pytest.approx({f"train_{k}": terms[k].item() for k in RUNNING})


def test_evaluation_of_perfect_detections_is_map_one_and_monitor_zero(task_and_data):
    _, task, data = task_and_data
    records = list(data.test_source.records)
    result = task.evaluate(Oracle(records), data.eval, torch.device("cpu"), "fp32", False)
    assert result[MONITOR] == pytest.approx(0.0)
    assert result["test_coco_map50"] == pytest.approx(1.0) and result["test_coco_map"] == pytest.approx(1.0)
    assert result["test_voc07_map"] == pytest.approx(1.0)


def test_evaluation_of_an_untrained_detector_is_poor_and_in_range(task_and_data):
    cfg, task, data = task_and_data
    model = task.build_model(cfg, data)
    result = task.evaluate(model, data.eval, torch.device("cpu"), "fp32", False)
    assert 50.0 <= result[MONITOR] <= 100.0
    assert model.training, "evaluation must give the model back in training mode"


def test_record_saved_with_the_weights_names_the_categories_and_the_detector(task_and_data):
    _, task, data = task_and_data
    meta, extra = task.save_record(data)
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)]
    assert [c["id"] for c in json.loads(meta["detect.categories"])] == list(range(1, 11))
    assert json.loads(meta["detect.config"])["design"] == "c4" and extra == {}


def test_from_scratch_backbone_is_said_in_the_log(task_and_data, caplog):
    cfg, task, data = task_and_data
    with caplog.at_level("INFO", logger="resnet.detection"):
        task.build_model(cfg, data)
    assert "from scratch" in caplog.text and "from scratch" in task.init_note
