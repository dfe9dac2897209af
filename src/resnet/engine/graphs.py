"""CUDA-graph helpers shared by the training step and inference benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from resnet.engine.precision import autocast_for

# A capture may happen mid-epoch, while a DataLoader's pin-memory thread allocates pinned buffers (cudaHostAlloc,
# event queries): under torch's default "global" mode any thread's such call invalidates the capture and poisons that
# thread (it re-raises at the next batch). "thread_local" restricts only the capturing thread, which is all a graph
# needs: the loader's calls never touch the captured stream.
CAPTURE_MODE = "thread_local"


def unwrap_compiled(net: nn.Module) -> nn.Module:
    """The module a torch.compile wrapper compiled (``_orig_mod``), else ``net`` itself."""
    return getattr(net, "_orig_mod", net)


@torch.no_grad()
def capture_inference(
    model: Callable[[Tensor], Tensor], example: Tensor, precision: str, channels_last: bool, warmup: int = 3
) -> Callable[[Tensor], Tensor]:
    """Eval-mode forward replayed as a CUDA graph (for ``resnet bench infer``): ``logits = fn(x)``.

    Returns a function that copies ``x`` into the captured input and replays; the logits tensor it returns is
    the graph's static output (clone it to keep it past the next call).
    """
    device = example.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    static_x = example.clone(memory_format=fmt)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            with autocast_for(device, precision, cache=False):
                model(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with (torch.cuda.graph(graph, stream=side, capture_error_mode=CAPTURE_MODE),
          autocast_for(device, precision, cache=False)):
        static_out = model(static_x)

    def run(x: Tensor) -> Tensor:
        if x.data_ptr() != static_x.data_ptr():
            static_x.copy_(x, non_blocking=True)
        graph.replay()
        return static_out

    return run


__all__ = ["CAPTURE_MODE", "capture_inference", "unwrap_compiled"]
