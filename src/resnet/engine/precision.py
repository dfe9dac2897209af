"""Mixed precision as the step and the evaluator use it: one autocast rule and fp16's loss scaler."""

from __future__ import annotations

import contextlib

import torch


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


__all__ = ["autocast_for", "grad_scaler_for"]
