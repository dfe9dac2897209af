"""Resumable checkpoints: safetensors (every tensor) plus a JSON sidecar (everything else), written atomically.

Layout in a run folder: ``checkpoints/ckpt-00001000.safetensors`` and ``ckpt-00001000.json``. The sidecar is
written last and records the tensor file's size and SHA-256, so a torn or truncated tensor file is detected
and the previous checkpoint is used instead; the sidecar carries a SHA-256 of its own content too, so an edited
sidecar (a changed ``step`` would silently skip iterations) is refused the same way. No pickle is involved anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from resnet.errors import WeightsError
from resnet.fsutil import file_sha256, os_error_from, write_atomic

log = logging.getLogger("resnet.engine")
_NAME = re.compile(r"^ckpt-(\d{8})\.json$")


@dataclass
class Checkpoint:
    """What a training run needs to continue exactly where it stopped."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    extra: dict[str, Any]
    """JSON-able state: schedule, data position, config, metrics so far."""
    rng: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    """The weight average's tensors (``--ema-decay``), empty without one."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, failing with an OSError naming ``path``."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        raise os_error_from(e, path) from None


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and the JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        scalars = {}
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
        per_param[str(idx)] = scalars
    return tensors, {"param_groups": state["param_groups"], "scalars": per_param}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in meta["scalars"].items()}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    """Torch CPU (and CUDA) generator states as uint8 tensors."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def ranks_rng(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every rank's :func:`rng_state` under one checkpoint's keys: rank 0's as a single process writes them, rank
    r's as ``rng.rank{r}.*``."""
    out = dict(states[0])
    for rank, state in enumerate(states[1:], start=1):
        out.update({f"rng.rank{rank}.{k[len('rng.'):]}": v for k, v in state.items()})
    return out


def restore_rng(rng: dict[str, torch.Tensor], rank: int = 0) -> None:
    """This rank's generators as saved (rank 0's where the checkpoint has none of its own: it predates per-rank
    generators, when every rank drew what rank 0 drew)."""
    prefix = f"rng.rank{rank}." if rank and f"rng.rank{rank}.cpu" in rng else "rng."
    if prefix + "cpu" in rng:
        torch.set_rng_state(rng[prefix + "cpu"])
    if prefix + "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng[prefix + "cuda"])


def save_checkpoint(folder: Path, ckpt: Checkpoint, keep: int = 2) -> Path:
    """Write ``ckpt`` atomically; then delete all but the ``keep`` newest. Returns the sidecar's path."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"ckpt-{ckpt.step:08d}"
    optim_tensors, optim_meta = _flatten_optimizer(ckpt.optimizer)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.model.items()}
    tensors.update(optim_tensors)
    tensors.update({k: v.cpu().contiguous() for k, v in ckpt.rng.items()})
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ckpt.ema.items()})
    tensor_path = stem.with_suffix(".safetensors")
    write_atomic(tensor_path, lambda p: save_tensors(tensors, p))
    sidecar = {
        "step": ckpt.step,
        "tensors": tensor_path.name,
        "size": tensor_path.stat().st_size,
        "sha256": file_sha256(tensor_path),
        "optimizer": optim_meta,
        "extra": ckpt.extra,
    }
    sidecar["checksum"] = _checksum(sidecar)
    json_path = stem.with_suffix(".json")
    write_atomic(json_path, lambda p: p.write_text(json.dumps(sidecar, indent=1)))
    for old in list_checkpoints(folder)[keep:]:
        for p in (old, old.with_suffix(".safetensors")):
            with contextlib.suppress(OSError):
                p.unlink()
    return json_path


def list_checkpoints(folder: Path) -> list[Path]:
    """Sidecars in the folder, newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def load_checkpoint(json_path: Path) -> Checkpoint:
    """Read one checkpoint, verifying size and hash; raise WeightsError naming the file if it is damaged."""
    try:
        sidecar = json.loads(json_path.read_text())
        checksum = sidecar.pop("checksum", None)
        tensor_path = json_path.with_name(Path(sidecar["tensors"]).name)
        expected_size, expected_hash = sidecar["size"], sidecar["sha256"]
        step = int(_NAME.match(json_path.name).group(1))  # type: ignore[union-attr]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise WeightsError(f"checkpoint sidecar {json_path} is unreadable ({type(e).__name__}); "
                           "delete it to use an older one") from None
    if checksum != _checksum(sidecar) or sidecar.get("step") != step:
        raise WeightsError(f"checkpoint sidecar {json_path} was changed after it was written (checksum mismatch); "
                           "delete it to use an older one")
    if not tensor_path.is_file():
        raise WeightsError(f"checkpoint {tensor_path} is missing")
    if tensor_path.stat().st_size != expected_size or file_sha256(tensor_path) != expected_hash:
        raise WeightsError(f"checkpoint {tensor_path} is truncated or corrupt (size/hash mismatch)")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"checkpoint {tensor_path} cannot be read: {e}") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_t = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    try:  # a sidecar edited with its checksum recomputed: its structure is checked as far as this module reads it
        optimizer = _unflatten_optimizer(optim_t, sidecar["optimizer"])
        extra, total = sidecar["extra"], sidecar["extra"].get("total", 0)
        if not isinstance(total, int) or isinstance(total, bool):
            raise TypeError(f"total is {type(total).__name__}")
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise WeightsError(f"checkpoint sidecar {json_path} holds a state this version does not write "
                           f"({type(e).__name__}); delete it to use an older one") from None
    return Checkpoint(step=int(sidecar["step"]), model=model, optimizer=optimizer, extra=extra, rng=rng, ema=ema)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest intact checkpoint; damaged newer ones are reported and passed over."""
    for json_path in list_checkpoints(folder):
        try:
            return load_checkpoint(json_path)
        except WeightsError as e:
            log.warning("skipping damaged checkpoint: %s", e)
    return None
