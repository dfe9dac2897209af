"""Model registry: ``register_model`` / ``create_model`` / ``list_models`` (as torchvision's models/_api.py),
plus the one validator every builder runs its options through, so a bad option fails the same way everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from resnet.errors import ModelError
from resnet.models.layers import INITS, NORMS

STEMS: tuple[str, ...] = ("imagenet", "cifar")
OPTION_NAMES: tuple[str, ...] = (
    "shortcut",
    "stride_in_1x1",
    "norm",
    "zero_init_residual",
    "init",
    "stem",
    "num_classes",
    "in_chans",
)

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Register a builder under its function name (``resnet50`` builds "resnet50")."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def _natural_key(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def list_models() -> list[str]:
    """Every registered architecture name, grouped by kind and ordered by depth."""
    return sorted(_MODELS, key=_natural_key)


def create_model(name: str, **options: Any) -> nn.Module:
    """Build the registered network ``name`` with ``options`` (see ``resolve_options`` for each one).

    Raises ModelError, listing the valid names, for an unknown name.
    """
    if not isinstance(name, str) or name not in _MODELS:
        raise ModelError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name](**options)


def _choice(arch: str, key: str, value: Any, valid: tuple[str, ...]) -> str:
    if isinstance(value, str):
        for v in valid:  # case-insensitive: "a" is option A
            if value.lower() == v.lower():
                return v
    raise ModelError(f"{arch}: invalid {key}={value!r}; valid values: {', '.join(map(repr, valid))}")


def _flag(arch: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"{arch}: invalid {key}={value!r}; valid values: True, False")
    return value


def _count(arch: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{arch}: invalid {key}={value!r}; valid values: an integer >= 1")
    return value


def resolve_options(
    arch: str, options: Mapping[str, Any], defaults: Mapping[str, Any], shortcuts: tuple[str, ...]
) -> dict[str, Any]:
    """Merge ``options`` over the family's ``defaults`` and validate every value.

    Options (``None`` means "the family default"):

    * ``shortcut``: ``shortcuts`` (A/B/C for residual nets, only "none" for plain nets).
    * ``stride_in_1x1``: True = paper v1 (stride in a bottleneck's first 1x1), False = torchvision v1.5.
    * ``norm``: one of ``layers.NORMS``.  ``init``: one of ``layers.INITS``.  ``stem``: imagenet/cifar.
    * ``zero_init_residual``: zero each branch's last norm scale (pre-activation: last conv).
    * ``num_classes``, ``in_chans``: integers >= 1.

    Returns every option, resolved, in OPTION_NAMES order (what ``model.options`` records).
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ModelError(f"{arch}: unknown option(s) {names}; valid options: {', '.join(OPTION_NAMES)}")
    merged = {**defaults, **{k: v for k, v in options.items() if v is not None}}
    resolved = {
        "shortcut": _choice(arch, "shortcut", merged["shortcut"], shortcuts),
        "stride_in_1x1": _flag(arch, "stride_in_1x1", merged["stride_in_1x1"]),
        "norm": _choice(arch, "norm", merged["norm"], NORMS),
        "zero_init_residual": _flag(arch, "zero_init_residual", merged["zero_init_residual"]),
        "init": _choice(arch, "init", merged["init"], INITS),
        "stem": _choice(arch, "stem", merged["stem"], STEMS),
        "num_classes": _count(arch, "num_classes", merged["num_classes"]),
        "in_chans": _count(arch, "in_chans", merged["in_chans"]),
    }
    if resolved["zero_init_residual"] and resolved["shortcut"] == "none":
        # Zeroing a plain unit's last norm makes every unit output zero: nothing would train.
        raise ModelError(f"{arch}: zero_init_residual needs residual units; valid values for a plain net: False")
    return resolved
