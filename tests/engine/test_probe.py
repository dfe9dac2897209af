"""The training loop's progress reads (resnet.engine.probe): queued, never waited for, read back in order."""

from __future__ import annotations

import pytest
import torch

from resnet.engine.probe import DeviceProbe

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_readings_come_back_at_once_in_order_with_their_images_and_meta():
    probe = DeviceProbe(torch.device("cpu"))
    for step in (10, 20, 30):
        probe.push(step, torch.tensor([step / 10, 2.0 * step], dtype=torch.float64), images=640, lr=0.1)
        (reading,) = probe.ready()
        assert reading.step == step and reading.values == [step / 10, 2.0 * step]
        assert reading.images == 640 and reading.meta == {"lr": 0.1} and reading.seconds >= 0
    assert probe.ready() == [] and probe.drain() == []


def test_a_reading_is_a_copy_taken_when_pushed():
    probe = DeviceProbe(torch.device("cpu"))
    live = torch.tensor([1.0, 2.0])
    probe.push(1, live, images=1)
    live.fill_(9.0)  # the loop keeps updating its tensors after the push
    assert probe.drain()[0].values == [1.0, 2.0]


@pytest.mark.slow
def test_training_loop_reads_nothing_off_the_device_between_evaluations(tmp_path, monkeypatch, run_cfg):
    """Every .item() in the loop would be a host sync on CUDA: between evaluations there must be none."""
    from resnet.classify import make_trainer

    trainer = make_trainer(run_cfg(iterations=30, eval_every=30, checkpoint_every=0), tmp_path)
    calls: list[int] = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: (calls.append(trainer.step), item(t))[1])
    evaluate = trainer.evaluate
    at_eval: list[int] = []
    monkeypatch.setattr(trainer, "evaluate", lambda *a: (at_eval.append(len(calls)), evaluate(*a))[1])
    trainer.run()
    assert at_eval and at_eval[0] == 0, f".item() during training steps at iterations {calls[:at_eval[0]]}"


@pytest.mark.gpu
@needs_cuda
def test_cuda_push_does_not_wait_for_the_queued_work():
    dev = torch.device("cuda")
    probe = DeviceProbe(dev)
    x = torch.zeros(1, device=dev)
    torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU spinning queued ahead of the value
    x += 7.0
    probe.push(10, x, images=128)
    assert probe.ready() == []  # the copy sits behind the sleep: not ready, and ready() did not wait
    (reading,) = probe.drain()
    assert reading.values == [7.0] and reading.seconds > 0.1


def test_progress_report_warns_once_per_new_batch_of_fast_path_skips(tmp_path, caplog, run_cfg):
    import logging

    from resnet.classify import make_trainer
    from resnet.engine.probe import Reading
    from resnet.engine.progress import Progress
    from resnet.engine.runlog import RunLog

    trainer = make_trainer(run_cfg(nan_policy="skip"), tmp_path)
    runlog = RunLog(tmp_path, 30, 0, enabled=False)
    progress = Progress(runlog, torch.device("cpu"), 0, 1, trainer._progress_figures, trainer._on_reading)
    caplog.set_level(logging.WARNING, logger="resnet.engine")
    for step, skipped, last in ((10, 0.0, -1.0), (20, 2.0, 17.0), (30, 2.0, 17.0), (40, 3.0, 33.0)):
        progress._show(Reading(step, [1.0, 3.0, -1.0, skipped, last], 0.1, 640, {"lr": 0.1, "batch": 32}))
    assert caplog.text.count("skipped") == 2
    assert "2 steps skipped, the last at iteration 17" in caplog.text
    assert "non-finite loss at iteration 33: step skipped" in caplog.text
    assert progress.trained == [2560, pytest.approx(0.4)] and progress.shown == 40
