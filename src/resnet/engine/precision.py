"""Mixed precision as the step and the evaluator use it: one autocast rule and fp16's loss scaler."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 instructions that compute in bf16 (Cooper Lake's AVX-512 BF16, Sapphire Rapids' AMX); without them oneDNN
emulates bf16 through fp32 conversions, many times slower than fp32 itself."""


def autocast_for(device: torch.device, precision: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast (norm statistics stay fp32 under it), else a no-op. CUDA graphs need ``cache=False``:
    cached casts would outlive the capture."""
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)
    return contextlib.nullcontext()


def grad_scaler_for(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 trains with dynamic loss scaling (gradients below 6e-8 flush to zero in fp16); bf16 and fp32 do not
    need it (bf16 has fp32's exponent range). A step whose scaled gradients overflow is skipped and the scale
    halves; 2000 clean steps double it (GradScaler's defaults, as in torch's AMP recipe)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def cpuinfo(*keys: str) -> str | None:
    """The first /proc/cpuinfo value under one of ``keys`` ("flags", "model name"); None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() in keys:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not say: not Linux)."""
    return set((cpuinfo("flags", "Features") or "").split())


def cpu_precision_warning(precision: str) -> str | None:
    """One line when bf16 is asked for on an x86 CPU without bf16 instructions (None elsewhere: other
    architectures' flags do not say)."""
    flags = cpu_flags()
    if precision != "bf16" or not flags or "avx2" not in flags and "avx" not in flags:
        return None
    if any(f in flags for f in BF16_CPU_FLAGS):
        return None
    return ("--precision bf16 on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16 in /proc/cpuinfo): "
            "oneDNN emulates it, many times slower than fp32; use --precision fp32 (the CPU default)")


__all__ = ["autocast_for", "cpu_flags", "cpu_precision_warning", "cpuinfo", "grad_scaler_for"]
