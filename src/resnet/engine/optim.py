"""SGD as in Sec. 3.4 (momentum 0.9, weight decay 1e-4), with optional decay exemptions chosen by module type; AdamW
(torch) and LAMB (timm, which torch lacks) for the modern recipes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnet.config import OptimCfg
from resnet.errors import ConfigError

# Normalization layers are recognised by type, never by a substring of the parameter name
# (a name test like `'bn' in k`, as in libffcv/ffcv-imagenet, misses `downsample.1`).
_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, _NORM_TYPES):
        return True
    # The zoo's own norms (FRN, batch renorm) declare themselves.
    return bool(getattr(module, "is_norm_layer", False))


def param_groups(model: nn.Module, cfg: OptimCfg, scales: dict[int, float] | None = None) -> list[dict]:
    """One group, or one per (weight decay, learning-rate scale): norm parameters and biases exempt from weight decay
    with ``no_decay_norm_bias``; ``scales`` maps a parameter's id to its ``lr_scale`` (fine-tuning's slower
    backbone), which the step multiplies into the schedule's learning rate."""
    scales = scales or {}
    if not cfg.no_decay_norm_bias and not scales:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            exempt = cfg.no_decay_norm_bias and (_is_norm(module) or name == "bias")
            groups.setdefault((not exempt, scales.get(id(p), 1.0)), []).append(p)
    ordered = sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))  # decay first, as before
    return [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
             **({"lr_scale": scale} if scale != 1.0 else {})} for (decay, scale), params in ordered]


def build_optimizer(model: nn.Module, cfg: OptimCfg, fused: bool = False,
                    scales: dict[int, float] | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer``: SGD (the paper) or AdamW, ``fused`` picking the fused kernel (same math) and otherwise the
    foreach path; or timm's LAMB (You et al. 2020), which has neither (so no CUDA graph: the step needs a fused
    optimizer for that)."""
    groups = param_groups(model, cfg, scales)
    kwargs = {"fused": True} if fused else {"foreach": True}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **kwargs)
    if cfg.optimizer == "lamb":
        try:  # imported where it is used: the paper's runs never need timm
            from timm.optim import Lamb
        except ImportError:
            raise ConfigError("optim.optimizer=lamb needs timm (pip install 'resnet[modern]' or timm); or use "
                              "--optimizer adamw") from None
        return Lamb(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``load_state_dict`` keeping this optimizer's settings; each per-parameter buffer (momentum) is put back in
    its parameter's memory layout.

    Checkpoints store buffers contiguous (NCHW) and ``load_state_dict`` keeps that layout, while a channels_last
    model's weights and grads are NHWC: fused CUDA SGD refuses tensors of different strides (its fast-path
    check), and the fused CPU kernel, which does not check, walks them in different orders (a wrong update).
    """
    groups = state.get("param_groups", [])
    if len(groups) != len(optimizer.param_groups):
        raise ConfigError(f"the checkpoint's optimizer has {len(groups)} parameter group(s), this run's "
                          f"{len(optimizer.param_groups)}: --decay-norm-bias / --no-decay-norm-bias cannot change "
                          "on resume")
    # load_state_dict replaces each group wholesale: keep the settings this run was configured with (config.toml
    # says what was asked: weight decay, momentum, fused or foreach), take only the momentum buffers.
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, settings, strict=True):
        group.update(own)
    for group in optimizer.param_groups:
        for p in group["params"]:
            buffers = optimizer.state.get(p, {})
            for key, value in buffers.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    buffers[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
