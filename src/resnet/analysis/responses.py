"""Layer responses of Fig. 7 (Sec. 4.2, "Analysis of Layer Responses").

The paper plots "the standard deviations (std) of layer responses. The responses are the outputs of each
3x3 layer, after BN and before other nonlinearity (ReLU/addition)", measured on the CIFAR-10 test set.

What we measure, for each 3x3 conv layer in forward order (the stem's conv1 included when it is 3x3):

* the response is the output of the norm module that follows the conv (``bn1`` after ``conv1`` and ``bn2``
  after ``conv2`` in a basic unit; ``bn2`` after the 3x3 ``conv2`` of a bottleneck). Pre-activation units
  have no norm between their last 3x3 conv and the addition; there the conv output itself is the response.
* ``std``: for every channel, the population standard deviation over all test images and spatial
  positions, then the mean over channels. This is the spread of each filter's response, independent of
  the constant offset BN's beta adds, so it measures what BN's scale gamma leaves of the signal; it is the
  figure's value.
* ``std_all``: the population std over every element of the response (channels pooled), reported beside
  it in the CSV because the paper does not say which of the two it plotted.

The model runs in eval mode (BN uses its running statistics, as at test time). With ``batch_statistics`` a copy
runs in training mode instead, each BN normalizing by the test batch's own statistics: after BN a channel's std is
then about its scale ``|gamma|`` whatever the running statistics hold. The two agree once the running statistics
have settled; far apart, the eval-mode stds measure stale statistics (a net stopped after a few dozen steps), not
the net. Statistics are computed inside the forward hook, because the ReLU that follows many norms works in place
and would overwrite a stored output.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LayerResponse:
    """The response statistics of one 3x3 layer."""

    index: int
    """1-based position of the 3x3 layer in forward order (Fig. 7 top's x axis)."""
    name: str
    """Qualified name of the module whose output was measured (e.g. ``layer1.0.bn2``)."""
    std: float
    """Mean over channels of each channel's std over images and positions (the plotted value)."""
    std_all: float
    """Std over every element of the response."""


def _is_3x3(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3)


def _norm_after(unit: nn.Module, conv_name: str) -> str | None:
    """Name of the norm fed by ``conv_name`` inside a unit: bnK after convK, or bn(K+1) in pre-activation units."""
    k = int(conv_name.removeprefix("conv"))
    target = f"bn{k + 1}" if getattr(unit, "preact", False) else f"bn{k}"
    norm = getattr(unit, target, None)
    return target if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity) else None


def response_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module whose output is the response) for each 3x3 layer, in forward order.

    Needs the ResNet layout (``conv1``/``bn1`` stem, ``stage_names``, units with ``convK``/``bnK``).
    """
    layers: list[tuple[str, nn.Module]] = []
    stem_conv = getattr(model, "conv1", None)
    if stem_conv is not None and _is_3x3(stem_conv):
        stem_bn = getattr(model, "bn1", None)
        if isinstance(stem_bn, nn.Module) and not isinstance(stem_bn, nn.Identity):
            layers.append(("bn1", stem_bn))
        else:
            layers.append(("conv1", stem_conv))
    for stage in getattr(model, "stage_names", ()):
        for i, unit in enumerate(getattr(model, stage)):
            convs = [(n, m) for n, m in unit.named_children() if n.startswith("conv") and _is_3x3(m)]
            for conv_name, conv in sorted(convs, key=lambda c: int(c[0].removeprefix("conv"))):
                norm_name = _norm_after(unit, conv_name)
                module = getattr(unit, norm_name) if norm_name else conv
                layers.append((f"{stage}.{i}.{norm_name or conv_name}", module))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no 3x3 layers in the ResNet layout")
    return layers


class _Moments:
    """Per-channel running sums (float64) so many batches give the same std as one."""

    def __init__(self) -> None:
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None
        self.n = 0

    def __call__(self, _m: nn.Module, _inp: object, out: Tensor) -> None:
        x = out.detach().double().transpose(0, 1).reshape(out.shape[1], -1)  # (C, N*H*W)
        s1, s2 = x.sum(1), (x * x).sum(1)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += x.shape[1]

    def stds(self) -> tuple[float, float]:
        """(mean over channels of the per-channel std, std over all elements), population stds."""
        assert self.s1 is not None and self.s2 is not None, "the layer never ran"
        mean_c = self.s1 / self.n
        per_channel = (self.s2 / self.n - mean_c**2).clamp_min(0).sqrt()
        total = self.n * self.s1.numel()
        mean_all = self.s1.sum() / total
        std_all = (self.s2.sum() / total - mean_all**2).clamp_min(0).sqrt()
        return float(per_channel.mean()), float(std_all)


@torch.no_grad()
def layer_responses(model: nn.Module, batches: Iterable[Tensor], batch_statistics: bool = False) -> list[LayerResponse]:
    """Std of every 3x3 layer's response over ``batches`` of (already normalized) images, in eval mode (or, with
    ``batch_statistics``, a copy in training mode; ``model`` is left as it was)."""
    if batch_statistics:
        model = copy.deepcopy(model).train()
    layers = response_layers(model)
    moments = [_Moments() for _ in layers]
    hooks = [module.register_forward_hook(mom) for (_, module), mom in zip(layers, moments, strict=True)]
    was_training = model.training
    model.train(batch_statistics)
    device = next(model.parameters()).device
    try:
        for x in batches:
            model(x.to(device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    pairs = zip(layers, moments, strict=True)
    return [LayerResponse(i + 1, name, *mom.stds()) for i, ((name, _), mom) in enumerate(pairs)]


def sorted_stds(responses: list[LayerResponse]) -> list[float]:
    """The stds in descending order (Fig. 7 bottom: "sorted by magnitude")."""
    return sorted((r.std for r in responses), reverse=True)
