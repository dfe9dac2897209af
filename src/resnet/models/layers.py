"""Normalization, activation and initialization factories shared by every network.

The paper puts batch normalization right after each convolution and before the activation (Sec. 3.4,
following Ioffe & Szegedy 2015). The ``norm`` option swaps that layer for another normalization so the
same architectures can be studied without batch statistics; the factories below are the one place that
knows how each choice is built.

Units ask for one of two things and never look at the norm's kind:

* ``norm_act``: a norm that feeds an activation, and that activation (conv-BN-ReLU);
* ``make_norm``: a norm that feeds a residual addition or ends a projection shortcut.

Filter Response Normalization (Singh & Krishnan 2020) is the one kind for which the two differ: FRN is always
paired with its own activation, the thresholded linear unit (TLU, ``max(y, tau)``), which replaces the ReLU
that follows a normalization. So ``norm_act("frn", c)`` is FRN+TLU followed by ``nn.Identity``, and
``make_norm("frn", c)`` is FRN without TLU (the ReLU after a residual addition stays a ReLU).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from resnet.errors import ModelError

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


def _norm(kind: str, channels: int, tlu: bool) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)
    if kind == "ln":  # one group: normalizes over (C, H, W) per sample, i.e. layer norm for conv maps
        return nn.GroupNorm(1, channels)
    if kind == "in":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "frn":
        return FilterResponseNorm2d(channels, tlu=tlu)
    if kind == "brn":
        return BatchRenorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")


def make_norm(kind: str, channels: int) -> nn.Module:
    """The normalization named ``kind`` where no activation follows (before an addition, in a projection)."""
    return _norm(kind, channels, tlu=False)


def norm_act(kind: str, channels: int, inplace: bool = True) -> tuple[nn.Module, nn.Module]:
    """A normalization and the activation after it: (norm, ReLU), or (FRN+TLU, Identity) for FRN, whose TLU
    already is the activation. Two modules, so each keeps torchvision's name (``bn1``, ``relu``)."""
    if kind == "frn":
        return _norm(kind, channels, tlu=True), nn.Identity()
    return _norm(kind, channels, tlu=False), nn.ReLU(inplace=inplace)


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
        elif isinstance(m, nn.Linear):
            init_linear(m, scheme)


def init_linear(fc: nn.Linear, scheme: str) -> None:
    """Initialize a classifier as ``init_weights`` does (a classifier built later must start the same way)."""
    if scheme == "torchvision" or fc.weight.is_meta:
        return  # nn.Linear's own default; or shapes only
    if scheme == "xavier_normal":
        nn.init.xavier_normal_(fc.weight)
    if fc.bias is not None:
        nn.init.zeros_(fc.bias)


def adapt_input_conv(in_chans: int, weight: Tensor) -> Tensor:
    """An RGB first-layer kernel ``(out, 3, kh, kw)`` for ``in_chans`` input channels, as timm adapts one.

    One channel: the three colour kernels summed, so a grey image gives the response the RGB kernel gives to
    that image replicated in R, G and B. N channels: the R, G, B kernels repeated in turn over the N channels
    and scaled by 3/N, so the activation scale stays that of an RGB input (for N a multiple of 3 the response
    to a constant image is exactly the RGB one). Returns a new tensor of ``weight``'s dtype.
    """
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ModelError(f"in_chans={in_chans!r} is not valid; give an integer >= 1")
    if weight.ndim != 4:
        raise ModelError(f"expected a conv weight (out, in, kh, kw), got shape {tuple(weight.shape)}")
    if in_chans == weight.shape[1]:
        return weight.detach().clone()
    if weight.shape[1] != 3:
        raise ModelError(f"cannot adapt a first conv with {weight.shape[1]} input channels to {in_chans}; "
                         "only RGB (3-channel) kernels can be adapted")
    w = weight.detach().float()
    if in_chans == 1:
        adapted = w.sum(dim=1, keepdim=True)
    else:
        repeats = math.ceil(in_chans / 3)
        adapted = w.repeat(1, repeats, 1, 1)[:, :in_chans] * (3.0 / in_chans)
    return adapted.to(weight.dtype)


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
