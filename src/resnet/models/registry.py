"""Model registry: ``register_model`` / ``create_model`` / ``list_models`` (as torchvision's models/_api.py),
plus the one validator of model options (``validate_options``): the builders, ``ResNet`` itself and the config
layer all run options through it, so a bad option fails the same way everywhere.

Spelling: choices are case-insensitive and normalized to their canonical form ("a" is shortcut option "A",
"BN" is norm "bn"); ``None`` means "the family default".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from resnet.errors import ConfigError, ModelError
from resnet.limits import MAX_CLASSES, MAX_IN_CHANS, within
from resnet.models.features import ResNetFeatures
from resnet.models.layers import INITS, NORMS

if TYPE_CHECKING:
    from resnet.config import ModelCfg

STEMS: tuple[str, ...] = ("imagenet", "cifar", "deep")
OPTION_NAMES: tuple[str, ...] = (
    "shortcut",
    "stride_in_1x1",
    "norm",
    "zero_init_residual",
    "init",
    "stem",
    "num_classes",
    "in_chans",
    "drop_path_rate",
)

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Register a builder under its ``name`` (an ``Arch``) or its function name (``resnet50`` builds "resnet50").

    A builder with a ``resolve_options(options) -> dict`` method lets ``validate_options`` check options
    without building; for any other builder they are checked by building it on the meta device.
    """
    name = getattr(fn, "name", None) or fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def _natural_key(name: str) -> tuple[str, int, str]:
    match = re.fullmatch(r"(.*?)(\d+)([a-z]?)", name)  # timm's variant letter after the depth: resnet50, resnet50d
    return (match.group(1), int(match.group(2)), match.group(3)) if match else (name, 0, "")


def list_models() -> list[str]:
    """Every registered architecture name, grouped by kind and ordered by depth."""
    return sorted(_MODELS, key=_natural_key)


def _builder(name: str) -> Callable[..., nn.Module]:
    if not isinstance(name, str) or name not in _MODELS:
        raise ModelError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name]


def validate_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``options`` for the registered net ``name`` and return every option resolved (family defaults
    filled in, spellings normalized), exactly what ``create_model(name, **options).options`` will record.

    The one rule for model options: raises ModelError naming the option and its valid values.
    """
    builder = _builder(name)
    resolve = getattr(builder, "resolve_options", None)
    if callable(resolve):
        return resolve(options)
    with torch.device("meta"):
        return dict(builder(**options).options)


def check_model_cfg(cfg: ModelCfg) -> None:
    """A config's [model] section checked by :func:`validate_options`: one ConfigError line naming the bad option
    and the valid ones (what a command says before anything is built)."""
    try:
        validate_options(cfg.name, cfg.options())
    except ModelError as e:
        raise ConfigError(f"model: {e}") from None


def create_model(
    name: str, *, features_only: bool = False, out_indices: Sequence[int] | None = None, **options: Any
) -> nn.Module:
    """Build the registered network ``name`` with ``options`` (see ``resolve_options`` for each one).

    ``features_only=True`` gives the backbone alone, as timm's: its forward returns the outputs of the stages in
    ``out_indices`` (0 = stem, 1.. = layer1..; default every stage) and it has ``feature_info``
    (see ``resnet.models.features``). Raises ModelError, listing the valid names, for an unknown name.
    """
    if "pretrained" in options:  # timm's argument: say where weights come from here instead of "unknown option"
        raise ModelError(f"create_model({name!r}, pretrained=...): this builder makes untrained nets; "
                         "resnet.create_model(name, pretrained=NAME_OR_PATH) imports weights by name (`resnet "
                         "weights` lists them) or from a file, as resnet.import_weights does")
    model = _builder(name)(**options)
    if features_only:
        return ResNetFeatures(model, out_indices)
    if out_indices is not None:
        raise ModelError(f"{name}: out_indices needs features_only=True")
    return model


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


def _count(arch: str, key: str, value: Any, minimum: int, maximum: int) -> int:
    if not within(value, minimum, maximum):
        raise ModelError(f"{arch}: invalid {key}={value!r:.40}; valid values: an integer in [{minimum}, {maximum}]")
    return value


def _rate(arch: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ModelError(f"{arch}: invalid {key}={value!r}; valid values: a number in [0, 1)")
    return float(value)


def resolve_options(
    arch: str, options: Mapping[str, Any], defaults: Mapping[str, Any], shortcuts: tuple[str, ...]
) -> dict[str, Any]:
    """Merge ``options`` over the family's ``defaults`` and validate every value.

    Options (``None`` means "the family default"):

    * ``shortcut``: ``shortcuts`` (A/B/C/D for residual nets, only "none" for plain nets; D = ResNet-D).
    * ``stride_in_1x1``: True = paper v1 (stride in a bottleneck's first 1x1), False = torchvision v1.5.
    * ``norm``: one of ``layers.NORMS``.  ``init``: one of ``layers.INITS``.
    * ``stem``: imagenet/cifar/deep (deep = ResNet-C).
    * ``zero_init_residual``: zero each branch's last norm scale (pre-activation: last conv).
    * ``drop_path_rate``: stochastic depth (Huang et al. 2016), the drop probability of the last unit, rising
      linearly from 0 at the first as timm's; 0 = none (the paper).
    * ``num_classes``: an integer in [0, ``limits.MAX_CLASSES``]; 0 builds no classifier (``fc`` is
      ``nn.Identity``: the model returns its pooled features, as timm's ``num_classes=0``).
    * ``in_chans``: an integer in [1, ``limits.MAX_IN_CHANS``].

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
        "num_classes": _count(arch, "num_classes", merged["num_classes"], 0, MAX_CLASSES),
        "in_chans": _count(arch, "in_chans", merged["in_chans"], 1, MAX_IN_CHANS),
        "drop_path_rate": _rate(arch, "drop_path_rate", merged.get("drop_path_rate", 0.0)),
    }
    if resolved["zero_init_residual"] and resolved["shortcut"] == "none":
        # Zeroing a plain unit's last norm makes every unit output zero: nothing would train.
        raise ModelError(f"{arch}: zero_init_residual needs residual units; valid values for a plain net: False")
    return resolved
