"""Weights files: safetensors that carry the architecture, and torchvision import/export.

A file written by ``save_weights`` holds the model's state dict, its name and resolved options as JSON
metadata (``resnet.arch``, ``resnet.options``), the caller's own string metadata, and optional extra
tensors under ``extra.`` that never enter the model. ``load_model`` rebuilds the net from the file alone.

Only safetensors and ``torch.load(weights_only=True)`` are ever used to read: a pickle that would run
code is refused, never executed. Every failure is one ``WeightsError`` line.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from resnet.errors import ModelError, WeightsError
from resnet.models.blocks import Bottleneck
from resnet.models.registry import create_model

ARCH_KEY = "resnet.arch"
OPTIONS_KEY = "resnet.options"
EXTRA_PREFIX = "extra."
TORCHVISION_ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_SHOW = 3  # how many differing keys an error names


def _unwrap(model: nn.Module) -> nn.Module:
    """The built model inside torch.compile (``_orig_mod``) or DistributedDataParallel (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    extra: Mapping[str, Tensor] | None = None,
) -> None:
    """Write ``model``'s weights with its arch and options (so ``load_model`` can rebuild it).

    Written to a temporary file and renamed, so a crash never leaves a half-written file at ``path``.
    """
    model = _unwrap(model)
    arch, options = getattr(model, "arch", ""), getattr(model, "options", None)
    if not arch or not isinstance(options, dict):
        raise WeightsError("model records no arch/options; build it with resnet.create_model to save it")
    meta = {"format": "pt", ARCH_KEY: arch, OPTIONS_KEY: json.dumps(options, sort_keys=True)}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise WeightsError(f"metadata must map str to str; got {key!r}: {type(value).__name__}")
        if key in meta:
            raise WeightsError(f"metadata key {key!r} is reserved")
        meta[key] = value
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (extra or {}).items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"extra[{key!r}] must be a tensor, got {type(value).__name__}")
        tensors[EXTRA_PREFIX + key] = value.detach().cpu().contiguous()
    target = Path(path)
    if not target.parent.is_dir():
        raise WeightsError(f"cannot write {target}: folder {target.parent} does not exist")
    tmp = target.with_name(target.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, target)
    except BaseException:  # a full disk, an interrupt: no half-written .tmp left beside the weights
        tmp.unlink(missing_ok=True)
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file (truncated or corrupt): {_first_line(e)}") from e
    return tensors, metadata


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str], dict[str, Tensor]]:
    """Read a weights file: (model state dict, metadata, extra tensors with the ``extra.`` prefix removed)."""
    tensors, metadata = _read_safetensors(Path(path))
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    return state, metadata, extra


def _check_fits(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise one WeightsError line naming the first missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape file vs model", shapes)):
        if items:
            more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            parts.append(f"{label}: {', '.join(items[:_SHOW])}{more}")
    if parts:
        arch = getattr(model, "arch", "") or type(model).__name__
        hint = " (another num_classes?)" if any(k.startswith("fc.") for k in shapes) else ""
        raise WeightsError(f"{source} does not fit {arch}{hint}: {'; '.join(parts)}")


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, str]:
    """Load a weights file into an existing model strictly; returns the file's metadata."""
    state, metadata, _ = read_weights(path)
    _check_fits(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return metadata


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a ``save_weights`` file describes and load it strictly; returned in eval mode."""
    state, metadata, _ = read_weights(path)
    arch = metadata.get(ARCH_KEY)
    if arch is None:
        raise WeightsError(f"{path}: no {ARCH_KEY!r} metadata (not written by resnet.save_weights; "
                           "for torchvision weights use resnet.from_torchvision)")
    try:
        options = json.loads(metadata.get(OPTIONS_KEY, "{}"))
        model = create_model(arch, **options)
    except (json.JSONDecodeError, TypeError, ModelError) as e:
        raise WeightsError(f"{path}: cannot rebuild {arch!r} from its metadata: {_first_line(e)}") from e
    _check_fits(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _read_torch_file(path: Path) -> Any:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph; its one informative line is "WeightsUnpickler error: <why>"
        why = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        detail = why.group(1).strip() if why else _first_line(e)
        name = re.match(r"Unsupported global: GLOBAL (\S+)", detail)
        if name:
            raise WeightsError(f"{path}: refused as unsafe: its pickle calls {name.group(1)}, which could run code; "
                               "re-save just the state dict (torch.save(model.state_dict(), ...)) or use "
                               ".safetensors") from e
        raise WeightsError(f"{path}: refused: not a file torch.load(weights_only=True) reads ({detail}); truncated, "
                           "corrupt, or a plain pickle: re-save it with torch.save or as .safetensors") from e
    except Exception as e:  # the weights_only parser meets garbage with IndexError, KeyError, struct.error, ...
        raise WeightsError(f"{path}: not a readable PyTorch file (truncated or corrupt): {_first_line(e)}") from e


def _torchvision_state(source: Mapping[str, Tensor] | str | os.PathLike[str]) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            obj: Any = _read_safetensors(path)[0]
        elif suffix in (".pth", ".pt"):
            obj = _read_torch_file(path)
        else:
            raise WeightsError(f"{path}: unsupported weights file; valid extensions: .pth, .pt, .safetensors")
        name = str(path)
    else:
        obj, name = source, "torchvision state dict"
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):  # common training-checkpoint layouts
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{name}: expected a state dict of tensors, got {type(obj).__name__}")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, name


def _check_torchvision_arch(name: str) -> None:
    if name not in TORCHVISION_ARCHS:
        raise WeightsError(f"{name} has no torchvision counterpart; valid: {', '.join(TORCHVISION_ARCHS)}")


def from_torchvision(
    state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike[str], name: str, **options: Any
) -> nn.Module:
    """Build ``name`` as torchvision's v1.5 net (stride in the 3x3, shortcut B) and load its weights strictly.

    ``num_classes`` defaults to the rows of the file's ``fc.weight``. Returned in eval mode.
    """
    _check_torchvision_arch(name)
    state, source = _torchvision_state(state_dict_or_path)
    # torchvision's layout; None means that here too, not the family default (v1 for bottlenecks)
    options = {**options, "stride_in_1x1": options.get("stride_in_1x1") or False,
               "shortcut": options.get("shortcut") or "B"}
    fc = state.get("fc.weight")
    if options.get("num_classes") is None and isinstance(fc, Tensor) and fc.ndim == 2:
        options["num_classes"] = int(fc.shape[0])
    model = create_model(name, **options)
    for key, value in model.state_dict().items():  # files saved before PyTorch 0.4.1 lack these counters, which
        if key.endswith(".num_batches_tracked") and key not in state:  # BatchNorm's own loader fills in too
            state[key] = torch.zeros_like(value)
    _check_fits(model, state, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def to_torchvision(model: nn.Module) -> dict[str, Tensor]:
    """A state dict that ``torchvision.models.<arch>(num_classes=...)`` loads strictly and computes the same with.

    Only the torchvision-shaped nets qualify: resnet18..152, shortcut B, norm bn, ImageNet stem, and for
    bottleneck nets stride_in_1x1=False (torchvision is v1.5; v1 weights would load but compute differently).
    """
    model = _unwrap(model)
    arch, options = getattr(model, "arch", ""), getattr(model, "options", {})
    _check_torchvision_arch(arch or type(model).__name__)
    wanted = {"shortcut": "B", "norm": "bn", "stem": "imagenet", "in_chans": 3}
    if getattr(model, "block", None) is Bottleneck:
        wanted["stride_in_1x1"] = False
    bad = [f"{k}={options.get(k)!r} (torchvision: {v!r})" for k, v in wanted.items() if options.get(k) != v]
    if bad:
        raise WeightsError(f"{arch} is not torchvision-compatible: {', '.join(bad)}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
