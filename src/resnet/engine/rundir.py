"""The run folder: what a run needs to be repeated (config, code version) and what it leaves behind."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
import torch

from resnet.config import read_run_config, to_dict
from resnet.engine.distributed import all_reduce_sum, broadcast_buffers
from resnet.engine.precision import cpuinfo
from resnet.engine.runlog import TRAIN_FILE, read_metrics
from resnet.errors import ConfigError, TrainingError
from resnet.fsutil import temporary_name, write_atomic
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


def numerics(device: torch.device) -> dict[str, Any]:
    """What decides a run's arithmetic besides its config (PyTorch's "Reproducibility" notes): where it runs, the
    thread count on CPU, the library versions and the kernels they pick, the deterministic flags. Repeating a figure
    needs these equal."""
    import re

    onednn = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark)
    else:
        info.update(cpu=cpuinfo("model name") or platform.processor() or platform.machine(),
                    cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
                    onednn=onednn.group(1) if onednn else "none")
    return info


def describe_numerics(info: dict[str, Any]) -> str:
    """The one-line form of :func:`numerics` for a run's first lines."""
    where = (f"{info['gpu']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}" if "gpu" in info else
             f"{info['cpu']} ({info['cpu_capability']}), {info['threads']} threads, oneDNN {info['onednn']}")
    flags = "deterministic algorithms" if info["deterministic_algorithms"] else "default (non-deterministic) algorithms"
    return f"{info['device']}: {where}, torch {info['torch']}, {flags}"


def write_config(out: Path, cfg: RunCfg) -> None:
    """The run folder's config.toml (enough to repeat the run), written atomically: the one writer of it."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.toml", tomli_w.dumps(to_dict(cfg)))


def prepare_run_dir(out: Path, cfg: RunCfg, dist: DistInfo, device: torch.device, resume: bool,
                    init_from: dict[str, str] | None = None) -> None:
    """Write config.toml (enough to repeat the run) and run.json (code version, hardware, command)."""
    write_config(out, cfg)
    meta = {"code": code_version(), "hardware": hardware(device), "world_size": dist.world_size,
            "numerics": numerics(device), "command": sys.argv, "python": platform.python_version()}
    if init_from:  # the weights the run started from: the file and its SHA-256
        meta["init_from"] = init_from
    name = "run.json" if not resume else "run-resumed.json"
    write_atomic(out / name, json.dumps(meta, indent=1))


# Fields a resume may change: where and how fast the run goes on, how long it runs, how often it reports. Every other
# field (the model, the data and its augmentation, the optimizer, the batch size, the seed) defines the run: changing
# one mid-run would make config.toml describe a run that never happened.
RESUMABLE: frozenset[tuple[str, str]] = frozenset({
    ("train", "iterations"), ("train", "epochs"), ("train", "eval_every"), ("train", "checkpoint_every"),
    ("train", "keep_checkpoints"), ("train", "keep_best"), ("train", "device"), ("train", "precision"),
    ("train", "channels_last"),
    ("train", "compile"), ("train", "cuda_graphs"), ("train", "cudnn_benchmark"), ("train", "bucket_cap_mb"),
    ("train", "nan_policy"), ("train", "sync_bn"), ("train", "threads"),
    ("data", "data"), ("data", "download"), ("data", "workers"), ("data", "bad_images"), ("data", "max_pixels"),
    ("data", "gpu_resident"), ("data", "gpu_decode"), ("data", "protocol"), ("data", "scales"),
})

# Fields a resume may change that decide the arithmetic (oneDNN splits its sums by thread count; another device,
# precision or kernel choice rounds differently): the run goes on, but no longer as the uninterrupted run would.
NUMERICS: frozenset[str] = frozenset({
    "train.threads", "train.device", "train.precision", "train.channels_last", "train.compile",
    "train.cudnn_benchmark", "train.sync_bn", "data.gpu_resident", "data.gpu_decode",
})


def saved_config(out: Path) -> dict[str, Any]:
    """The run folder's config.toml as checked plain values; {} where there is none or it does not read (the CLI
    has already refused a damaged one; the API resumes what it was given)."""
    try:
        return read_run_config(out)
    except (OSError, ConfigError):
        return {}


def numerics_warnings(changes: dict[str, list[Any]]) -> list[str]:
    """One line per resume change that alters the arithmetic (a value recorded for the first time is not one)."""
    return [f"{key} changes from {old!r} to {new!r} on this resume: from here the weights will no longer equal an "
            f"uninterrupted run's (recorded in changes.jsonl)"
            for key, (old, new) in changes.items() if key in NUMERICS and old is not None]


def resume_changes(out: Path, cfg: RunCfg) -> dict[str, list[Any]]:
    """What ``cfg`` changes in the run folder's config.toml: ``{"train.iterations": [old, new], ...}``.

    Raises ConfigError, before anything is written, for a field a resume cannot change."""
    saved = saved_config(out)
    if not saved:
        return {}
    new = to_dict(cfg)
    changes: dict[str, list[Any]] = {}
    for section, values in new.items():
        if not isinstance(values, dict):
            if values != saved.get(section):
                changes[section] = [saved.get(section), values]
            continue
        for key, value in values.items():
            before = saved.get(section, {}).get(key)
            if value != before:
                changes[f"{section}.{key}"] = [before, value]
    for section, values in saved.items():  # what the saved config holds and the new one leaves out (to_dict drops
        if isinstance(values, dict):        # fields at their "does not apply" value, e.g. an empty train.seeds)
            for key, before in values.items():
                if key not in new.get(section, {}) and before is not None:
                    changes[f"{section}.{key}"] = [before, None]
    refused = [k for k in changes if tuple(k.split(".", 1)) not in RESUMABLE and k != "recipe"]
    if refused:
        key = refused[0]
        old, new_value = changes[key]
        raise ConfigError(f"{key} cannot change on resume (the run in {out} was trained with {old!r}, not "
                          f"{new_value!r}); resume without that flag, or start a new run with another --out")
    changes.pop("recipe", None)
    return changes


def fresh_start_refusal(out: Path) -> str | None:
    """Why a resume that found no intact checkpoint in ``out`` must not start the run over, or None.

    Starting from iteration 0 is what a resume does for a run killed before its first checkpoint; in a folder that
    holds results (a finished run whose checkpoints were removed or damaged) or a member of a ``--seeds`` group
    (its checkpoints are the group's), it would train over weights that exist nowhere else.
    """
    try:
        record = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        record = {}
    if isinstance(record, dict) and record.get("group"):
        return (f"{out} is member seed {record.get('member')} of the group {record['group']}, whose checkpoints "
                f"hold it: resume the group (resnet train --resume {record['group']})")
    results = [name for name in ("model.safetensors", "final.json") if (out / name).exists()]
    if results:
        return (f"{out} holds results ({', '.join(results)}) but no intact checkpoint to continue from (see the "
                "warnings above): a resume would train it again from iteration 0 over them; restore its "
                "checkpoints/ or start a new run with another --out")
    return None


def record_changes(out: Path, step: int, changes: dict[str, list[Any]]) -> None:
    """Append what a resume changed, and from which iteration, to changes.jsonl (config.toml holds the new values)."""
    if changes:
        with open(out / "changes.jsonl", "a") as f:
            f.write(json.dumps({"from_step": step, "changed": changes, "command": sys.argv}) + "\n")


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


def write_best(out: Path, model: torch.nn.Module, step: int, figures: dict[str, float], meta: dict[str, str],
               extra: dict[str, torch.Tensor]) -> None:
    """best.safetensors (the weights of the best evaluation so far, with the task's record) and best.json."""
    save_weights(model, out / "best.safetensors", metadata={**meta, "step": str(step)}, extra=extra)
    write_atomic(out / "best.json", json.dumps({"step": step, **figures}, indent=1))


def write_average(out: Path, model: torch.nn.Module, meta: dict[str, str], extra: dict[str, torch.Tensor]) -> None:
    """model_ema.safetensors: the weight average (``--ema-decay``) beside model.safetensors, with the same record."""
    save_weights(model, out / "model_ema.safetensors", metadata=meta, extra=extra)


def write_results(out: Path, model: torch.nn.Module, final: dict[str, Any], history: list[dict[str, Any]],
                  meta: dict[str, str], extra: dict[str, torch.Tensor], label: str) -> None:
    """model.safetensors (with the task's record), curves.png and final.json; a full disk is one TrainingError."""
    from safetensors import SafetensorError

    from resnet.analysis.curves import plot_curves  # matplotlib is imported where something is drawn
    
    target = out / "model.safetensors"
    try:
        save_weights(model, target, metadata=meta, extra=extra)
        plot_curves(history, out / "curves.png", label=label, train_rows=read_metrics(out / TRAIN_FILE))
        write_atomic(out / "final.json", json.dumps(final, indent=1))
    except (OSError, SafetensorError) as e:  # a full disk: the last checkpoint holds everything: finish it later
        with contextlib.suppress(OSError):
            temporary_name(target).unlink()
        reason = getattr(e, "strerror", None) or str(e)
        raise TrainingError(f"could not write the results in {out} ({reason}); the checkpoint of "
                            f"iteration {final.get('step')} is intact. Free disk space, then --resume {out}") from None
