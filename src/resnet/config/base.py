"""The building blocks of every config section: a field with its help, and the checks their ``__post_init__`` use."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from resnet.errors import ConfigError

FLOAT32_MAX = 3.4028234663852886e38
"""Training computes in float32: a larger value (lr 1e308) overflows to inf there."""


def option(default: Any, help: str) -> Any:
    """A config field with its default and its help text (the one source of the CLI's flag help)."""
    return field(default=default, metadata={"help": help})


def choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if isinstance(value, float) and value > FLOAT32_MAX:
        raise ConfigError(f"{name}={value!r} overflows float32 (largest 3.4e38), which training computes in")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


__all__ = ["FLOAT32_MAX", "choice", "option", "positive"]
