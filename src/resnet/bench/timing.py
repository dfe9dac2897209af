"""Timing and the record of where a figure was measured.

GPU work is asynchronous, so on CUDA each step is bracketed by CUDA events (no host sync inside the loop; one
``synchronize`` at the end), and throughput comes from the first start event to the last end event. On CPU the
host clock is the truth (``time.perf_counter``). Warm-up calls (lazy init, cuDNN autotuning, compilation, graph
capture) are never timed.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class Measurement:
    """One row of the bench table: a workload's figures over the timed iterations."""

    name: str
    """ours, reference, reference-bf16-cl, ... (what the ratios refer to)."""
    setup: str
    """What ran, in words (precision, layout, compile, graphs, data path)."""
    batch_size: int
    iterations: int
    img_s: float
    """Images per second: batch x iterations over the whole timed span."""
    ms_median: float
    ms_mean: float
    peak_mem_mib: float | None = None
    """Peak allocated CUDA memory during build, warm-up and timing (None on CPU)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_steps(
    step: Callable[[], object], iterations: int, warmup: int, device: torch.device, host_clock: bool = False
) -> tuple[list[float], float]:
    """Run ``warmup`` untimed then ``iterations`` timed calls; returns (per-step ms, total seconds).

    ``host_clock`` times on the host even on CUDA, synchronizing after every step: for pipelines whose cost is
    on the host (JPEG decoding), where device events would only see the copies.
    """
    for _ in range(warmup):
        step()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    if cuda and not host_clock:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
        for start, end in zip(starts, ends, strict=True):
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        per_step = [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]
        return per_step, starts[0].elapsed_time(ends[-1]) / 1000.0
    per_step = []
    t_all = time.perf_counter()
    for _ in range(iterations):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        per_step.append((time.perf_counter() - t0) * 1000.0)
    return per_step, time.perf_counter() - t_all


def summarize(name: str, setup: str, batch_size: int, per_step: list[float], total_s: float,
              peak_mem_mib: float | None, extra: dict[str, Any] | None = None) -> Measurement:
    """Figures of one timed run (img/s over the whole span; median and mean of the per-step times)."""
    return Measurement(
        name=name, setup=setup, batch_size=batch_size, iterations=len(per_step),
        img_s=batch_size * len(per_step) / max(total_s, 1e-12),
        ms_median=statistics.median(per_step), ms_mean=statistics.fmean(per_step),
        peak_mem_mib=peak_mem_mib, extra=dict(extra or {}),
    )  # fmt: skip


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak-memory window (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak allocated CUDA memory since :func:`reset_peak_memory`, in MiB; None on CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Where and with what the figures were measured: device, date, versions, math switches."""
    import torchvision

    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "device_type": device.type,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env.update(
            device_name=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        threads = env["torch_threads"]
        env["device_name"] = f"{env['cpu']} ({threads} thread{'' if threads == 1 else 's'})"
    return env
