"""Weights files: safetensors that carry the architecture, and torchvision import/export.

A file written by ``save_weights`` holds the model's state dict, its name and options as JSON metadata
(``resnet.arch``, ``resnet.options``, read from the modules as they are), a preprocessing record
(``resnet.preprocess``, timm's ``pretrained_cfg`` fields), the caller's own string metadata, and optional extra
tensors under ``extra.`` that never enter the model. ``load_model`` rebuilds the net from the file alone.

A file is untrusted input: its metadata is checked before anything is built from it (``models.metadata``), its
tensors' names, shapes and dtypes against the model before any is read, and their values for NaN/Inf. Only
safetensors and ``torch.load(weights_only=True)`` are ever used to read: a pickle that would run code is refused,
never executed. Every failure is one ``WeightsError`` line.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from resnet.errors import ModelError, WeightsError
from resnet.fsutil import input_file_problem, os_error_from, write_atomic
from resnet.limits import check_archive, check_stored
from resnet.models.blocks import Bottleneck
from resnet.models.metadata import ARCH_KEY, EXTRA_PREFIX, OPTIONS_KEY, Header, check_metadata
from resnet.models.preprocess import MEAN_TENSOR, PREPROCESS_KEY, Preprocess
from resnet.models.registry import create_model, list_models

__all__ = ["ARCH_KEY", "EXTRA_PREFIX", "OPTIONS_KEY", "PREPROCESS_KEY", "TORCHVISION_ARCHS", "from_torchvision",
           "inspect_weights", "load_model", "load_weights", "read_weights", "save_weights", "to_torchvision"]

TORCHVISION_ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
FLOAT_DTYPES: dict[torch.dtype, str] = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32",
                                        torch.float64: "F64"}
_SHOW = 3  # how many differing keys an error names


def unwrap_model(model: nn.Module) -> nn.Module:
    """The built model inside torch.compile (``_orig_mod``) or DistributedDataParallel (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def describe(state: Mapping[str, Tensor]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """A state dict as a safetensors-style header: name -> (dtype name, shape)."""
    return {k: (FLOAT_DTYPES.get(v.dtype, str(v.dtype).removeprefix("torch.")), tuple(v.shape))
            for k, v in state.items()}


def _misfit(model: nn.Module, header: Header) -> str:
    """The first missing, unexpected, mis-shaped and non-float keys of ``header`` for ``model`` ("" if it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in header]
    unexpected = [k for k in header if k not in own]
    shapes = [f"{k} {tuple(header[k][1])} vs {tuple(v.shape)}" for k, v in own.items()
              if k in header and tuple(header[k][1]) != tuple(v.shape)]
    dtypes = [f"{k} {header[k][0]}" for k, v in own.items()
              if k in header and v.is_floating_point() and header[k][0] not in FLOAT_DTYPES.values()]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape file vs model", shapes),
                         ("not a float dtype", dtypes)):
        if items:
            more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            parts.append(f"{label}: {', '.join(items[:_SHOW])}{more}")
    return "; ".join(parts)


def check_fits(model: nn.Module, header: Header, source: str) -> None:
    """Raise one WeightsError line naming the first missing, unexpected, mis-shaped and non-float keys."""
    problems = _misfit(model, header)
    if problems:
        arch = getattr(model, "arch", "") or type(model).__name__
        hint = " (another num_classes?)" if "fc.weight (" in problems.split("shape file vs model")[-1] else ""
        raise WeightsError(f"{source} does not fit {arch}{hint}: {problems}")


def build_checked(build: Callable[[], nn.Module], header: Header, source: str) -> nn.Module:
    """``build()`` for real only after the file's tensor names and shapes fit a copy built on the meta device (no
    memory): a class count or input size a file's metadata claims allocates nothing before its tensors agree."""
    with torch.device("meta"):
        check_fits(build(), header, source)
    return build()


def check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """NaN/Inf in a weights tensor: the run that wrote it diverged, or the file is damaged."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (+{len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
        raise WeightsError(f"{source}: NaN/Inf values in {', '.join(bad[:_SHOW])}{more}; the run that wrote it "
                           "diverged or the file is damaged: use an earlier checkpoint's weights")


def _options_as_built(model: nn.Module, arch: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the class and channel counts read from the modules (a replaced ``fc`` included), checked
    against a shape-only rebuild so that ``load_model`` can always rebuild what is saved. A model built around one
    of ours under a name the registry does not know (a detector) is saved as it describes itself; its own loader
    (``resnet.detection.inference.load_detector``) rebuilds it."""
    if arch not in list_models():
        return dict(options)
    fc, conv1 = getattr(model, "fc", None), getattr(model, "conv1", None)
    options = dict(options)
    if isinstance(fc, nn.Linear):
        options["num_classes"] = fc.out_features
    elif isinstance(fc, nn.Identity):  # timm's headless net (num_classes=0): pooled features out
        options["num_classes"] = 0
    if isinstance(conv1, nn.Sequential):  # the deep stem (ResNet-C): its first conv reads the image
        conv1 = conv1[0]
    if isinstance(conv1, nn.Conv2d):
        options["in_chans"] = conv1.in_channels
    try:
        with torch.device("meta"):
            reference = create_model(arch, **options)
    except ModelError as e:
        raise WeightsError(f"cannot save {arch}: its options do not rebuild it ({e})") from None
    problems = _misfit(reference, describe(model.state_dict()))
    if problems:
        raise WeightsError(f"cannot save {arch}: its modules no longer match the architecture, so load_model "
                           f"could not rebuild it: {problems}")
    return reference.options if isinstance(getattr(reference, "options", None), dict) else options


def _preprocess_for(model: nn.Module, options: Mapping[str, Any], preprocess: Mapping[str, Any] | None,
                    metadata: Mapping[str, str], extra: Mapping[str, Tensor], path: object) -> Preprocess:
    """The caller's record, else the one the model came with (``pretrained_cfg``), else what eval assumes."""
    cfg = getattr(model, "pretrained_cfg", None)
    given = preprocess if preprocess is not None else cfg if isinstance(cfg, Mapping) and cfg else None
    if given is not None:
        return Preprocess.from_record(given, path, mean_image=extra.get(MEAN_TENSOR))
    size = metadata.get("input_size", "")
    return Preprocess.assumed(options, MEAN_TENSOR in extra, int(size) if size.isdigit() else None)


def save_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    extra: Mapping[str, Tensor] | None = None,
    preprocess: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model``'s weights with its arch and options (so ``load_model`` can rebuild it).

    ``preprocess``: timm-style record (``mean`` as values or ``"per_pixel"`` with ``extra["input_mean"]``, ``std``,
    ``input_size`` (C, H, W), ``crop_pct``, ``interpolation``, ``crop_mode``); by default the model's
    ``pretrained_cfg``, else what ``resnet eval`` assumes. The file is checked as ``load_model`` would check it, then
    written to a temporary file and renamed, so a crash never leaves a half-written file at ``path``.
    """
    model = unwrap_model(model)
    arch, options = getattr(model, "arch", ""), getattr(model, "options", None)
    if not arch or not isinstance(options, dict):
        raise WeightsError("model records no arch/options; build it with resnet.create_model to save it")
    options = _options_as_built(model, arch, options)
    for key, value in (extra or {}).items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"extra[{key!r}] must be a tensor, got {type(value).__name__}")
    extras = {k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()}
    meta = {"format": "pt", ARCH_KEY: arch, OPTIONS_KEY: json.dumps(options, sort_keys=True)}
    try:
        _preprocess_for(model, options, preprocess, metadata or {}, extras, path).write(meta, extras)
    except WeightsError as e:
        raise WeightsError(f"cannot save {e}; pass save_weights metadata and a preprocess record that match the "
                           "model") from None
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise WeightsError(f"metadata must map str to str; got {key!r}: {type(value).__name__}")
        if key in meta:
            raise WeightsError(f"metadata key {key!r} is reserved")
        meta[key] = value
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({EXTRA_PREFIX + k: v for k, v in extras.items()})
    target = Path(path)
    try:  # never write a file that load_model would refuse
        check_metadata(target, meta, describe(tensors))
    except WeightsError as e:
        raise WeightsError(f"cannot save {e}; pass save_weights metadata and a preprocess record that match the "
                           "model") from None
    if not target.parent.is_dir():
        raise WeightsError(f"cannot write {target}: folder {target.parent} does not exist")
    write_atomic(target, lambda tmp: _save_file(tensors, tmp, meta))


def _save_file(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' writer, its failed writes (a full disk) as the OSError they are: one error line, not a
    traceback."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        raise os_error_from(e, path) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_torch_file(path: Path) -> bool:
    """torch.save's formats by their first bytes: a zip archive, or a pickle (protocol 2-5: the legacy format).

    A safetensors file starts with its header's length and then ``{``, which tells it apart from both.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    pickled = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    return (head.startswith(b"PK\x03\x04") or pickled) and head[8:9] != b"{"


def _unreadable(path: Path, err: BaseException) -> WeightsError:
    if is_torch_file(path):
        out = path.with_name(f"{path.stem}-imported.safetensors")
        return WeightsError(f"{path} is a pickle (a torch.save checkpoint?), not a safetensors file; convert it with "
                            f"`resnet import {path} --out {out}`")
    return WeightsError(f"{path}: not a readable safetensors file (truncated or corrupt): {_first_line(err)}")


def inspect_weights(path: str | os.PathLike[str]) -> tuple[dict[str, str], Header]:
    """A weights file's checked metadata and its header (tensor name -> dtype, shape), no tensor read."""
    path = Path(path)
    if problem := input_file_problem(path, "weights file"):
        raise WeightsError(problem)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            header = {k: (s.get_dtype(), tuple(s.get_shape())) for k in f.keys() for s in (f.get_slice(k),)}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _unreadable(path, e) from e
    try:
        check_metadata(path, metadata, header)
    except WeightsError as e:
        raise WeightsError(f"{e}; the file is damaged or was not written by resnet.save_weights (re-save or "
                           "re-import the weights)") from None
    return metadata, header


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str], dict[str, Tensor]]:
    """Read a weights file: (model state dict, metadata, extra tensors with the ``extra.`` prefix removed)."""
    path = Path(path)
    metadata, _ = inspect_weights(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _unreadable(path, e) from e
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    if "input_mean" in extra:
        check_finite({EXTRA_PREFIX + "input_mean": extra["input_mean"]}, str(path))
    return state, metadata, extra


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, str]:
    """Load a weights file into an existing model strictly; returns the file's metadata."""
    _, header = inspect_weights(path)
    check_fits(model, {k: v for k, v in header.items() if not k.startswith(EXTRA_PREFIX)}, str(path))
    state, metadata, _ = read_weights(path)
    check_finite(state, str(path))
    model.load_state_dict(state, strict=True)
    return metadata


WEIGHTS_FILE = "model.safetensors"
"""A finished run folder's weights."""


def run_weights(target: str | os.PathLike[str], finish: str = "resnet train --resume") -> Path:
    """A run folder's model.safetensors; any other path as it is. A folder without one is one error line (a
    ``--seeds`` group names its members; an unfinished run, the ``finish`` command that finishes it)."""
    path = Path(target).expanduser()
    if not path.is_dir():
        return path
    if (path / WEIGHTS_FILE).is_file():
        return path / WEIGHTS_FILE
    members = sorted(m.parent.name for m in path.glob(f"seed*/{WEIGHTS_FILE}"))
    if members:  # a --seeds group: its nets are its members'
        names = " ".join(str(Path(target) / m) for m in members)
        raise WeightsError(f"{target} is a group of {len(members)} nets trained with --seeds: name its members "
                           f"({names}); several names score each and their ensemble")
    raise WeightsError(f"{target} has no {WEIGHTS_FILE} (the run has not finished: `{finish} {target}` finishes "
                       "it); or pass a weights file")


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a ``save_weights`` file describes and load it strictly; returned in eval mode, with the
    file's preprocessing record as ``model.pretrained_cfg`` (see ``resnet.data_config``).

    The net's layout options travel with the file. Never load a foreign state dict into ``create_model(name)`` by
    hand: torchvision's and timm's ResNet-50 put the stride in the 3x3 (v1.5), and their state dict loads strictly
    into our default (v1, stride in the first 1x1) resnet50 and computes another function. ``resnet.import_weights``
    builds the layout a file was trained with. A run folder means its model.safetensors.
    """
    path = run_weights(path)
    metadata, header = inspect_weights(path)
    arch = metadata.get(ARCH_KEY)
    if arch is None:
        raise WeightsError(f"{path}: no {ARCH_KEY!r} metadata (not written by resnet.save_weights); convert "
                           f"foreign weights with `resnet import {path} --out FILE.safetensors`")
    options = json.loads(metadata.get(OPTIONS_KEY, "{}"))  # checked by inspect_weights
    try:
        model = build_checked(lambda: create_model(arch, **options),
                              {k: v for k, v in header.items() if not k.startswith(EXTRA_PREFIX)}, str(path))
    except (TypeError, ModelError) as e:
        raise WeightsError(f"{path}: cannot rebuild {arch!r} from its metadata: {_first_line(e)}") from e
    state, metadata, extra = read_weights(path)
    check_finite(state, str(path))
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = Preprocess.read(metadata, model.options, extra, path).pretrained_cfg()
    return model.to(device).eval()


def read_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with its failures as one WeightsError line (unsafe pickles named)."""
    if problem := input_file_problem(path, "weights file"):
        raise WeightsError(problem)
    check_archive(path, WeightsError)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        # torch's message is a paragraph that advises weights_only=False (running the file's code): never repeat it;
        # name what the pickle calls, or the parser's one-line reason
        name = re.search(r"GLOBAL ([\w.]+)", text)
        if name:
            raise WeightsError(f"{path}: refused as unsafe: its pickle calls {name.group(1)}, which could run code; "
                               "if you trust its source, load it with the code that wrote it and save just the "
                               "state dict (torch.save(model.state_dict(), ...)) or as .safetensors") from e
        why = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
        detail = why.group(1).strip() if why else (lines[0] if lines else type(e).__name__)
        raise WeightsError(f"{path}: refused: not a file torch.load(weights_only=True) reads ({detail[:160]}); "
                           "truncated, corrupt, or a plain pickle: re-save it with torch.save or as .safetensors"
                           ) from e
    except Exception as e:  # the weights_only parser meets garbage with IndexError, KeyError, struct.error, ...
        raise WeightsError(f"{path}: not a readable PyTorch file (truncated or corrupt): {_first_line(e)}") from e
    check_stored(obj, path, WeightsError)
    return obj


def unwrap_state_dict(obj: Any, name: str) -> dict[str, Tensor]:
    """The state dict inside a training checkpoint (``state_dict``/``model`` keys), without DDP's ``module.``."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):  # common training-checkpoint layouts
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise WeightsError(f"{name}: expected a state dict (parameter names to tensors), got "
                           f"{type(obj).__name__}{' with keys that are not names' if isinstance(obj, Mapping) else ''}")
    state = dict(obj)
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _torchvision_state(source: Mapping[str, Tensor] | str | os.PathLike[str]) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            obj: Any = read_weights(path)[0]
        elif suffix in (".pth", ".pt"):
            obj = read_torch_file(path)
        else:
            raise WeightsError(f"{path}: unsupported weights file; valid extensions: .pth, .pt, .safetensors")
        name = str(path)
    else:
        obj, name = source, "torchvision state dict"
    return unwrap_state_dict(obj, name), name


def fill_batch_counters(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Files saved before PyTorch 0.4.1 lack BN's ``num_batches_tracked``; BatchNorm's own loader fills them in too."""
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value, device="cpu")  # value may be a meta-device reference's


def _check_torchvision_arch(name: str) -> None:
    if name not in TORCHVISION_ARCHS:
        raise WeightsError(f"{name} has no torchvision counterpart; valid: {', '.join(TORCHVISION_ARCHS)}")


def from_torchvision(
    state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike[str], name: str, **options: Any
) -> nn.Module:
    """Build ``name`` as torchvision's v1.5 net (stride in the 3x3, shortcut B) and load its weights strictly.

    ``num_classes`` defaults to the rows of the file's ``fc.weight``. Returned in eval mode.
    ``resnet.import_weights`` does this and more (timm and CIFAR checkpoints, the depth read from the file).
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
    fill_batch_counters(model, state)
    check_fits(model, describe(state), source)
    check_finite(state, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def to_torchvision(model: nn.Module) -> dict[str, Tensor]:
    """A state dict that ``torchvision.models.<arch>(num_classes=...)`` loads strictly and computes the same with.

    Only the torchvision-shaped nets qualify: resnet18..152, shortcut B, norm bn, ImageNet stem, and for
    bottleneck nets stride_in_1x1=False (torchvision is v1.5; v1 weights would load but compute differently).
    """
    model = unwrap_model(model)
    arch, options = getattr(model, "arch", ""), getattr(model, "options", {})
    _check_torchvision_arch(arch or type(model).__name__)
    wanted = {"shortcut": "B", "norm": "bn", "stem": "imagenet", "in_chans": 3}
    if getattr(model, "block", None) is Bottleneck:
        wanted["stride_in_1x1"] = False
    bad = [f"{k}={options.get(k)!r} (torchvision: {v!r})" for k, v in wanted.items() if options.get(k) != v]
    if bad:
        raise WeightsError(f"{arch} is not torchvision-compatible: {', '.join(bad)}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
