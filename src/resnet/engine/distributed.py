"""One training path for CPU, one GPU and torchrun: the process group comes from the environment.

Under ``torchrun`` the variables RANK, LOCAL_RANK and WORLD_SIZE are set (as in nanoGPT's train.py); without
them the run is a single process and nothing here does any communication.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from resnet.errors import ConfigError, ResNetError, TrainingError

if dist.is_available():
    # Imported before any process group exists, on purpose: torch.distributed.nn's functions take
    # ``group=group.WORLD`` as a default argument, so a first import after init_process_group (DDP's construction
    # makes one) keeps the default group alive for ever. destroy_process_group then leaves gloo's threads running,
    # and one still releasing a finished collective's tensors when the interpreter exits aborts the process
    # ("terminate called without an active exception", SIGABRT) after a run that ended well.
    import torch.distributed.nn  # noqa: F401

T = TypeVar("T")


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


def launched() -> DistInfo:
    """Where this process sits, from torchrun's variables (a single process without them)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))


def join(timeout_s: float = 600.0) -> DistInfo:
    """Join the process group when launched by torchrun: gloo for CPU tensors, and NCCL for CUDA ones where CUDA is
    present. Joined first, before any rank reads its input, so a rank that fails on its own can fail the others
    (:func:`decided_by_rank0`) instead of leaving them waiting."""
    info = launched()
    if info.enabled and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        try:  # a finite timeout makes a lost peer fail the survivors instead of hanging them forever
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as e:
            raise TrainingError(f"rank {info.rank} could not join the process group of {info.world_size} "
                                f"({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}); "
                                "start every rank with the same torchrun command") from None
    return info


def init_distributed(device_name: str, timeout_s: float = 600.0) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun, with this rank's device (its GPU by LOCAL_RANK)."""
    info = launched()
    device = resolve_device(device_name, info.local_rank)
    if info.enabled and device.type == "cuda":
        torch.cuda.set_device(device)
    return join(timeout_s), device


def decided_by_rank0(decide: Callable[[], T]) -> T:
    """``decide()`` run by rank 0 alone, its result (or its error) given to every rank; without a process group,
    just ``decide()``. What a run is (its config, its folder) is rank 0's to read: the other ranks' disks may lack
    the run folder, and an error on rank 0 ends every rank at once instead of leaving them in a collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return decide()
    box: list[Any] = [None]
    failure: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            box = [(True, decide())]
        except Exception as e:  # every rank must hear of it, whatever it is
            failure = e
            box = [(False, str(e) if isinstance(e, ResNetError) else f"rank 0 failed: {type(e).__name__}: {e}")]
    dist.broadcast_object_list(box, src=0)  # pickled between the job's own processes
    ok, value = box[0]
    if failure is not None:
        raise failure
    if not ok:
        raise ConfigError(value)
    return value


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
    """Leave the process group and end its threads, while the interpreter is still whole.

    Call it once the model is dropped: a DistributedDataParallel wrapper holds the group, and the group's threads
    end only with its last holder. The collection first frees wrappers caught in reference cycles, so that
    destroy_process_group drops the last reference and joins gloo's threads here, not during interpreter exit
    (where a thread releasing tensors aborts the process; see the import of torch.distributed.nn above).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def gather_to_rank0(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others); ``[obj]`` in a single process. Peers of
    one job, never files from elsewhere."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


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
