"""One training path for CPU, one GPU and torchrun: the process group comes from the environment.

Under ``torchrun`` the variables RANK, LOCAL_RANK and WORLD_SIZE are set (as in nanoGPT's train.py); without
them the run is a single process and nothing here does any communication.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from resnet.errors import ConfigError, TrainingError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto picks CUDA when present; asking for cuda without one is an error, not a silent fallback."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device_name: str, timeout_s: float = 600.0) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(), resolve_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
    device = resolve_device(device_name, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        # A finite timeout makes a lost peer fail the survivors instead of hanging them forever.
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return info, device


def wrap_ddp(model: torch.nn.Module, device: torch.device, bucket_cap_mb: float) -> torch.nn.Module:
    """DistributedDataParallel as every training path uses it: gradients as views into the all-reduce buckets
    (no copy into them, less memory), buckets of ``bucket_cap_mb``."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True, bucket_cap_mb=bucket_cap_mb)


# What a collective raises when a peer process died (gloo's and NCCL's words; DistError covers the typed ones).
_PEER_LOST = ("gloo", "nccl", "connection reset", "connection closed", "broken pipe", "timed out", "timeout")


def _peer_lost_error(e: BaseException) -> TrainingError:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return TrainingError(f"a distributed peer was lost ({text}); resume with --resume RUN_DIR, "
                         "with the same or another number of processes")


@contextlib.contextmanager
def peer_loss_is_training_error() -> Iterator[None]:
    """Under torchrun, a collective that fails because a peer died (in DDP's forward/backward as much as in our
    own all-reduces) becomes one TrainingError line instead of a traceback on every surviving rank."""
    try:
        yield
    except RuntimeError as e:
        joined = dist.is_available() and dist.is_initialized()
        if joined and (isinstance(e, dist.DistError) or any(w in str(e).lower() for w in _PEER_LOST)):
            raise _peer_lost_error(e) from None
        raise


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum across processes (identity in a single process); raise a clear error if a peer is gone."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        except (RuntimeError, dist.DistBackendError) as e:
            raise _peer_lost_error(e) from None
    return t


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics stay per-process between DDP forwards)."""
    if dist.is_available() and dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (the end of a torchrun job's training)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def agree_on_checkpoint(state: Any) -> Any:
    """Every rank resumes from rank 0's checkpoint, whatever its own disk holds.

    Ranks read their own run folder; on a multi-node job without a shared filesystem the other nodes find no
    checkpoint there (or an older one). When the ranks' steps differ, rank 0 sends its checkpoint over the process
    group (``broadcast_object_list``: peers of one job, never files from elsewhere), so no rank starts from scratch
    while the others resume. A no-op in a single process.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return state
    step = -1 if state is None else int(state.step)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    mine = torch.tensor([step, -step], dtype=torch.long, device=device)
    dist.all_reduce(mine, op=dist.ReduceOp.MAX)  # (max step, -min step): equal when every rank holds the same
    if int(mine[0]) == -int(mine[1]):
        return state
    box = [state if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
