"""The paper's recipe rules that depend on the net being trained (Sec. 4.2's warm-up for ResNet-110 and deeper)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from resnet.config import RunCfg


def apply_recipe_rules(cfg: RunCfg, model: nn.Module | None = None) -> RunCfg:
    """Sec. 4.2: for ResNet-110 and deeper on CIFAR, lr 0.01 until training error < 80%, then back to 0.1.

    The depth is the built model's (``model.depth``, recorded by the registry's builder); without a model one is
    built on the meta device, which allocates nothing.
    """
    if cfg.recipe != "paper-cifar" or cfg.optim.warmup_lr is not None:
        return cfg
    if model is None:
        from resnet.models.registry import create_model

        with torch.device("meta"):
            model = create_model(cfg.model.name, **cfg.model.options())
    depth, plain = model_depth(model), getattr(model, "options", {}).get("shortcut") == "none"
    if depth >= 110 and not plain:
        return replace(cfg, optim=replace(cfg.optim, warmup_lr=cfg.optim.lr / 10))
    return cfg


def model_depth(model: nn.Module) -> int:
    """Weighted layers of a built net (ResNet-110: 110), as the registry's builder recorded them."""
    depth = getattr(model, "depth", 0)
    return depth if isinstance(depth, int) else 0


__all__ = ["apply_recipe_rules", "model_depth"]
