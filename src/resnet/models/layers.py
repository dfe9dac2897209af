"""Normalization, activation and initialization factories shared by every network.

The paper puts batch normalization right after each convolution and before the activation (Sec. 3.4,
following Ioffe & Szegedy 2015). The ``norm`` option swaps that layer for another normalization so the
same architectures can be studied without batch statistics; the factories below are the one place that
knows how each choice is built.

How Filter Response Normalization composes (Singh & Krishnan 2020): FRN is always paired with its own
activation, the thresholded linear unit (TLU, ``max(y, tau)``), which replaces the ReLU that follows
a normalization. So with ``norm="frn"``:

* a norm that feeds an activation is built as FRN+TLU and the activation after it is ``nn.Identity``
  (``make_activation("frn")``);
* a norm that feeds a residual addition (the last norm of a branch, the projection shortcut's norm)
  is FRN without TLU, and the ReLU after the addition stays a ReLU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NORMS: tuple[str, ...] = ("bn", "gn", "ln", "in", "frn", "brn", "none")
INITS: tuple[str, ...] = ("kaiming_normal", "xavier_normal", "torchvision")
GN_MAX_GROUPS = 32  # Wu & He 2018 default


class FilterResponseNorm2d(nn.Module):
    """FRN (+ optional TLU): ``y = gamma * x / sqrt(mean_hw(x^2) + eps) + beta``, then ``max(y, tau)``.

    Normalizes each sample and channel by its own mean square, so it needs no batch statistics and
    behaves the same in training and evaluation (Singh & Krishnan 2020, Eq. 1-2).
    """

    is_norm_layer = True  # its gamma, beta and tau are exempt from weight decay with the other norms' (engine/optim)

    def __init__(self, num_features: int, eps: float = 1e-6, tlu: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        # tau starts at 0 so that FRN+TLU starts as FRN+ReLU.
        self.tau = nn.Parameter(torch.zeros(1, num_features, 1, 1)) if tlu else None

    def forward(self, x: Tensor) -> Tensor:
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        y = self.weight * (x * torch.rsqrt(nu2 + self.eps)) + self.bias
        return y if self.tau is None else torch.maximum(y, self.tau)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, tlu={self.tau is not None}"


class BatchRenorm2d(nn.Module):
    """Batch Renormalization (Ioffe 2017): BN whose training output is corrected towards running stats.

    In training, ``x_hat = (x - mu_B) / sigma_B * r + d`` with ``r = sigma_B / sigma`` clipped to
    ``[1/r_max, r_max]`` and ``d = (mu_B - mu) / sigma`` clipped to ``[-d_max, d_max]`` (both treated
    as constants in backprop, Alg. 1), so training and inference compute the same function when the
    clipping is inactive. In evaluation it is exactly BN with running statistics (momentum 0.1 as
    ``nn.BatchNorm2d``; running variance unbiased, as BN's). The paper ramps
    ``r_max`` 1 -> 3 and ``d_max`` 0 -> 5; they are plain attributes so a schedule can set them.
    """

    is_norm_layer = True  # exempt from weight decay as nn.BatchNorm2d is (engine/optim)

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, r_max: float = 3.0, d_max: float = 5.0
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.r_max, self.d_max = r_max, d_max
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1, 1, 1)
        if not self.training:
            x_hat = (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.eps)
            return x_hat * self.weight.view(shape) + self.bias.view(shape)
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        std = torch.sqrt(var + self.eps)
        running_std = torch.sqrt(self.running_var + self.eps)
        r = (std.detach() / running_std).clamp(1.0 / self.r_max, self.r_max)
        d = ((mean.detach() - self.running_mean) / running_std).clamp(-self.d_max, self.d_max)
        x_hat = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            unbiased = var * (n / max(n - 1, 1))
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(unbiased, self.momentum)
            self.num_batches_tracked += 1
        return x_hat * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, r_max={self.r_max}, d_max={self.d_max}"


def gn_groups(channels: int, max_groups: int = GN_MAX_GROUPS) -> int:
    """Largest group count <= 32 that divides ``channels`` (32 for every width >= 32 used here)."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def make_norm(kind: str, channels: int, activated: bool = False) -> nn.Module:
    """Build the normalization layer named ``kind`` for ``channels`` feature maps.

    ``activated`` says whether an activation follows; only FRN uses it (its TLU *is* that activation).
    """
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)
    if kind == "ln":  # one group: normalizes over (C, H, W) per sample, i.e. layer norm for conv maps
        return nn.GroupNorm(1, channels)
    if kind == "in":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "frn":
        return FilterResponseNorm2d(channels, tlu=activated)
    if kind == "brn":
        return BatchRenorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")


def make_activation(norm: str, inplace: bool = True) -> nn.Module:
    """The activation after a norm: ReLU, or nothing for FRN whose TLU already is the activation."""
    return nn.Identity() if norm == "frn" else nn.ReLU(inplace=inplace)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1 (every 3x3 layer of Table 1)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution (bottleneck reduce/restore layers and projection shortcuts, Sec. 3.3 and 4.1)."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=bias)


_NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, FilterResponseNorm2d, BatchRenorm2d)


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialize convs, norms and the classifier in place.

    * ``kaiming_normal`` (the paper, Sec. 3.4, citing He et al. 2015): conv weights ~ N(0, 2/fan_out)
      as in fb.resnet.torch; norm weight 1, bias 0; fc keeps PyTorch's default weight init with a zero
      bias (fb.resnet.torch zeroes the Linear bias).
    * ``xavier_normal`` (Glorot & Bengio 2010): convs and fc xavier_normal_, every bias 0, norms 1/0.
    * ``torchvision``: exactly torchvision's ResNet init: convs kaiming_normal_ fan_out/relu, norms 1/0,
      fc untouched (PyTorch's default Linear init, bias included).
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if any(p.is_meta for p in model.parameters()):
        return  # shapes only (complexity counting): no values to draw, and meta normal_ is slow
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "xavier_normal":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM_TYPES) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and scheme != "torchvision":
            if scheme == "xavier_normal":
                nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


def zero_last(norm: nn.Module, conv: nn.Conv2d) -> None:
    """Make a residual branch output zero at init (Goyal et al. 2017): zero the norm's scale if it has one,
    else the conv's weight (norm="none")."""
    weight = getattr(norm, "weight", None)
    target = weight if isinstance(weight, Tensor) else conv.weight
    nn.init.zeros_(target)


def fan_out_std(conv: nn.Conv2d) -> float:
    """Std of the paper's init for this conv, sqrt(2 / (k*k*out_channels)); used by tests and docs."""
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return math.sqrt(2.0 / (k * conv.out_channels))
