"""Evaluation: top-1/top-5 error (%) with the paper's test views (Sec. 3.4).

A batch's images may come as one view ``(B,3,H,W)``, several same-size views ``(B,V,3,H,W)`` (10-crop), or a
list of such tensors at different sizes (fully-convolutional multi-scale). Softmax scores are averaged over
every view and scale, as in the paper ("scores averaged").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet.data.transforms import average_view_probs
from resnet.engine.distributed import all_reduce_sum


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for bf16/fp16 (norm statistics stay fp32 under autocast); a no-op for fp32."""
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def _views(x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """Normalize a batch to a list of 5-D (B,V,3,H,W) tensors, one per image size."""
    parts = x if isinstance(x, (list, tuple)) else [x]
    return [p.unsqueeze(1) if p.dim() == 4 else p for p in parts]


def predict_scores(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor | list[torch.Tensor],
                   device: torch.device, precision: str = "fp32", channels_last: bool = False) -> torch.Tensor:
    """Softmax probabilities averaged over all views and scales of each image: (B, classes)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(flat: torch.Tensor) -> torch.Tensor:
        flat = flat.to(device, non_blocking=True).contiguous(memory_format=fmt)
        with autocast_for(device, precision):
            return model(flat)

    return average_view_probs(run, _views(x))


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32",
             channels_last: bool = False) -> dict[str, Any]:
    """Top-1/top-5 error (%) and mean NLL over the loader; summed across processes under torchrun."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1 wrong, top5 wrong, nll, count
    for x, y in loader:
        y = y.to(device, non_blocking=True)
        probs = predict_scores(model, x, device, precision, channels_last)
        k = min(5, probs.shape[1])
        topk = probs.topk(k, dim=1).indices
        correct = topk.eq(y[:, None])
        sums[0] += (~correct[:, 0]).sum()
        sums[1] += (~correct.any(1)).sum()
        sums[2] += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").double()
        sums[3] += y.numel()
    model.train(was_training)
    all_reduce_sum(sums)
    n = max(sums[3].item(), 1.0)
    return {"top1_error": 100.0 * sums[0].item() / n, "top5_error": 100.0 * sums[1].item() / n,
            "loss": sums[2].item() / n, "count": int(sums[3].item())}
