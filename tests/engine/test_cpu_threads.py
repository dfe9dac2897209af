"""The default thread count: the cores other processes leave free, read from the CPU's own counters."""

import itertools

import pytest
import torch

from resnet.engine import trainer


def _ticks(monkeypatch, busy_fraction: float, cores: int = 2) -> None:
    """/proc/stat readings 1000 jiffies apart with ``busy_fraction`` of them busy."""
    counter = itertools.count()

    def fake() -> tuple[int, int]:
        k = next(counter)
        return int(k * 1000 * busy_fraction), k * 1000

    monkeypatch.setattr(trainer, "_cpu_ticks", fake)
    monkeypatch.setattr(trainer.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    monkeypatch.setattr(trainer.time, "sleep", lambda _s: None)


@pytest.mark.parametrize(("busy", "threads"), [(0.0, 2), (0.5, 1), (1.0, 1)])
def test_threads_leave_the_busy_cores_alone(monkeypatch, busy, threads):
    _ticks(monkeypatch, busy)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert trainer.busy_cores() == pytest.approx(2 * busy)
        assert trainer.cpu_threads(None) == threads
        assert trainer.cpu_threads(3) == 3  # asked for: given
    finally:
        torch.set_num_threads(torch_threads)


def test_a_run_that_just_ended_is_not_counted(monkeypatch):
    """The 1-minute load average still says 2 right after a 2-core run; the counters say the cores are free."""
    _ticks(monkeypatch, 0.0)
    monkeypatch.setattr(trainer.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert trainer.cpu_threads(None) == 2
    finally:
        torch.set_num_threads(torch_threads)


def test_without_proc_stat_the_load_average_is_the_estimate(monkeypatch):
    def missing() -> tuple[int, int]:
        raise OSError("no /proc/stat")

    monkeypatch.setattr(trainer, "_cpu_ticks", missing)
    monkeypatch.setattr(trainer.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    assert trainer.busy_cores() == 1.5
