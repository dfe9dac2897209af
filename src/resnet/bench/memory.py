"""``resnet bench memory``: training memory of one forward+backward step, with and without gradient checkpointing.

What is measured, per device:

* CUDA: the peak of ``torch.cuda.max_memory_allocated`` during the step, less what was allocated before it (the
  weights), i.e. activations, gradients and workspace at their worst moment.
* CPU: torch keeps no statistics of CPU allocations (and ``tracemalloc`` does not see tensor memory), so the figure
  is the activation memory autograd holds for the backward pass once the forward has ended: the bytes of the
  distinct storages saved for backward, seen through ``torch.autograd.graph.saved_tensors_hooks`` (the weights,
  which are saved too, excluded). That is the memory checkpointing trades for recomputation; the working memory of
  one unit while it is recomputed and differentiated comes on top, so it is a lower bound of the step's peak.

Both runs use the same model, batch and input; the model is in training mode (BN with batch statistics).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from resnet.errors import ConfigError

DEFAULT_BATCH = 8  # memory grows linearly with the batch; a small one keeps the CPU measurement short
MIB = 2**20


@dataclass(frozen=True)
class MemoryRecord:
    """Both measurements of one model and input."""

    model: str
    device: str
    batch_size: int
    input_size: int
    measure: str
    without_bytes: int
    with_bytes: int

    @property
    def ratio(self) -> float:
        return self.with_bytes / self.without_bytes if self.without_bytes else float("nan")


def saved_tensor_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during ``model(x)``; runs the backward too."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).float().sum()
    loss.backward()
    return sum(saved.values())


def cuda_peak_bytes(model: nn.Module, x: Tensor) -> int:
    """Peak CUDA memory of one forward+backward above what was allocated before it."""
    torch.cuda.synchronize(x.device)
    before = torch.cuda.memory_allocated(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    model(x).float().sum().backward()
    torch.cuda.synchronize(x.device)
    return torch.cuda.max_memory_allocated(x.device) - before


def measure_memory(model: nn.Module, x: Tensor, measure: Callable[[nn.Module, Tensor], int]) -> tuple[int, int]:
    """(bytes without, bytes with) gradient checkpointing, one step each after gradients are cleared."""
    if not callable(getattr(model, "set_grad_checkpointing", None)):
        raise ConfigError(f"{type(model).__name__} has no set_grad_checkpointing; build it with resnet.create_model")
    model.train()
    figures = []
    for enable in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(enable)
        figures.append(measure(model, x))
    model.set_grad_checkpointing(False)
    model.zero_grad(set_to_none=True)
    return figures[0], figures[1]


def run_memory(name: str, batch_size: int, input_size: int | None, device: torch.device) -> MemoryRecord:
    """Build ``name`` on ``device`` and measure it on a random batch."""
    from resnet.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(name).to(device)
    size = input_size or (32 if model.family == "cifar" else 224)
    x = torch.randn(batch_size, model.options["in_chans"], size, size, device=device)
    cuda = device.type == "cuda"
    without, with_ = measure_memory(model, x, cuda_peak_bytes if cuda else saved_tensor_bytes)
    return MemoryRecord(name, str(device), batch_size, size, "cuda peak allocated" if cuda else
                        "saved for backward", without, with_)


def format_record(r: MemoryRecord) -> str:
    """The printed table."""
    return "\n".join([
        f"{r.model}, batch {r.batch_size} at {r.input_size}x{r.input_size} on {r.device} ({r.measure})",
        f"  without checkpointing: {r.without_bytes / MIB:10.1f} MiB",
        f"  with checkpointing:    {r.with_bytes / MIB:10.1f} MiB",
        f"  ratio with/without:    {r.ratio:10.3f}",
    ])


def memory_command(args: argparse.Namespace) -> int:
    """Handler of ``resnet bench memory``: print both figures and their ratio; ``--json`` also writes them."""
    from resnet.engine.distributed import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or DEFAULT_BATCH
    record = run_memory(args.model, batch, args.input_size, resolve_device(args.device))
    print(format_record(record))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**asdict(record), "ratio": record.ratio}, indent=2) + "\n")
    return 0
