"""The run folder: what a run needs to be repeated (config, code version) and what it leaves behind."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
import torch

from resnet.config import to_dict
from resnet.engine.distributed import all_reduce_sum, broadcast_buffers
from resnet.errors import TrainingError
from resnet.models.weights import save_weights

if TYPE_CHECKING:
    from resnet.config import RunCfg
    from resnet.engine.distributed import DistInfo


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("resnet")
    except PackageNotFoundError:
        return "unknown"


def code_version() -> dict[str, str]:
    """Package version and, from a git checkout, the commit (and whether the tree had local changes)."""
    info = {"resnet": _package_version(), "torch": torch.__version__}
    root = Path(__file__).resolve().parents[3]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if rev.returncode == 0:
            info["git_commit"] = rev.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                   text=True, timeout=5)
            info["git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def prepare_run_dir(out: Path, cfg: RunCfg, dist: DistInfo, device: torch.device, resume: bool) -> None:
    """Write config.toml (enough to repeat the run) and run.json (code version, hardware, command)."""
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "config.toml", tomli_w.dumps(to_dict(cfg)))
    meta = {"code": code_version(), "hardware": hardware(device), "world_size": dist.world_size,
            "command": sys.argv, "python": platform.python_version()}
    name = "run.json" if not resume else "run-resumed.json"
    _write_atomic(out / name, json.dumps(meta, indent=1))


def _write_atomic(path: Path, text: str) -> None:
    """Temporary file + rename: a kill mid-write (resumes rewrite it too) never leaves a torn config.toml."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def replicas_identical(model: torch.nn.Module) -> bool:
    """Under torchrun: after syncing buffers, does every process hold exactly rank 0's weights?

    DDP keeps parameters equal by all-reducing gradients, but BatchNorm running statistics are per-process
    between forwards (DDP broadcasts rank 0's buffers at the start of each forward), so they are synced first.
    """
    import torch.distributed as dist

    broadcast_buffers(model)
    flat = torch.cat([t.detach().reshape(-1).double() for t in model.state_dict().values() if t.is_floating_point()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    mismatches = torch.tensor([0 if torch.equal(flat, reference) else 1], device=flat.device)
    return int(all_reduce_sum(mismatches).item()) == 0


def write_results(out: Path, model: torch.nn.Module, final: dict[str, Any], history: list[dict[str, Any]],
                  meta: dict[str, str], extra: dict[str, torch.Tensor], label: str) -> None:
    """model.safetensors (with the task's record), curves.png and final.json; a full disk is one TrainingError."""
    from resnet.analysis.curves import plot_curves  # matplotlib is imported where something is drawn
    
    target = out / "model.safetensors"
    try:
        save_weights(model, target, metadata=meta, extra=extra)
        plot_curves(history, out / "curves.png", label=label)
        (out / "final.json").write_text(json.dumps(final, indent=1))
    except OSError as e:  # a full disk: the last checkpoint holds everything, so the run can be finished later
        with contextlib.suppress(OSError):
            target.with_name(target.name + ".tmp").unlink()
        raise TrainingError(f"could not write the results in {out} ({e.strerror or e}); the checkpoint of "
                            f"iteration {final.get('step')} is intact. Free disk space, then --resume {out}") from None
