"""Timing and the environment record of ``resnet bench``."""

from __future__ import annotations

import json

import torch

from resnet.bench.timing import Measurement, environment, time_steps


def test_time_steps_excludes_warmup_and_times_every_step():
    calls = []
    per_step, total = time_steps(lambda: calls.append(1), iterations=3, warmup=2, device=torch.device("cpu"))
    assert len(calls) == 5 and len(per_step) == 3 and total > 0 and all(t >= 0 for t in per_step)


def test_environment_names_device_date_and_versions():
    env = environment(torch.device("cpu"))
    assert env["device_type"] == "cpu" and env["torch"] == torch.__version__ and env["date"]


def test_measurement_serializes_to_plain_json():
    m = Measurement("ours", "x", 8, 2, 10.0, 1.0, 1.1)
    assert json.loads(json.dumps(m.to_dict()))["img_s"] == 10.0
