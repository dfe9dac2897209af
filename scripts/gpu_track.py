"""Diagnostic: loss curves of the fast path (graph, bf16/fp32) against the eager fp32 step, same seed and batches.

Prints 20-step window means for each (precision, graphs) at a few learning rates, to set the GPU test's tolerance.
"""

from __future__ import annotations

import sys

import torch

from resnet import create_model
from resnet.bench.check import teacher_batches
from resnet.config import OptimCfg
from resnet.engine.optim import build_optimizer
from resnet.engine.step import build_step
from resnet.engine.trainer import Switches


def curve(precision: str, graphs: bool, lr: float, data: list, dev: torch.device) -> torch.Tensor:
    torch.manual_seed(0)
    model = create_model("resnet20").to(dev)
    cl = precision != "fp32"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    step = build_step(model, build_optimizer(model, OptimCfg(), fused=True), Switches(precision, cl, False, True),
                      dev, cuda_graphs=graphs)
    return torch.stack([step((x, y), lr)[0] for x, y in data]).float().cpu()


def main() -> None:
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for noise in (1.0, 2.0):
        data = teacher_batches(200, 64, dev, noise=noise)
        for lr in (0.02, 0.05, 0.1):
            ref = curve("fp32", False, lr, data, dev)
            print(f"noise {noise} lr {lr} eager fp32 : " + " ".join(f"{v:.3f}" for v in ref.view(10, 20).mean(1)))
            for precision, graphs in (("fp32", True), ("bf16", False), ("bf16", True)):
                c = curve(precision, graphs, lr, data, dev)
                w = c.view(10, 20).mean(1)
                print(f"   {precision} graphs={graphs!s:5}: " + " ".join(f"{v:.3f}" for v in w)
                      + f"  | step0 rel {abs(c[0] - ref[0]) / ref[0]:.2e} first10 maxrel "
                      f"{((c[:10] - ref[:10]).abs() / ref[:10]).max():.2e}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
