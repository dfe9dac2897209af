"""The published numbers each study prints beside its own (/work/shared/REFERENCE.md).

All CIFAR numbers are CIFAR-10 test error (%); Table 3's are ImageNet validation error (%, 10-crop).
Keeping them in one place lets every table cite the same values.
"""

from __future__ import annotations

# Table 6 (Sec. 4.2): CIFAR-10 test error (%) of the 6n+2 ResNets (best of runs; 110 is 6.61 +- 0.16 over 5 runs).
TABLE6_ERROR: dict[str, float] = {
    "resnet20": 8.75,
    "resnet32": 7.51,
    "resnet44": 7.17,
    "resnet56": 6.97,
    "resnet110": 6.43,
    "resnet1202": 7.93,
}
TABLE6_110_MEAN_STD: tuple[float, float] = (6.61, 0.16)

# Table 6's rounded parameter counts.
TABLE6_PARAMS: dict[str, str] = {
    "resnet20": "0.27M",
    "resnet32": "0.46M",
    "resnet44": "0.66M",
    "resnet56": "0.85M",
    "resnet110": "1.7M",
    "resnet1202": "19.4M",
}

# akamaster/pytorch_resnet_cifar10: 200 epochs, no 45k/5k split, best epoch picked on the test set.
AKAMASTER_ERROR: dict[str, float] = {
    "resnet20": 8.27,
    "resnet32": 7.37,
    "resnet44": 6.90,
    "resnet56": 6.61,
    "resnet110": 6.32,
    "resnet1202": 6.18,
}

# Table 3 (Sec. 4.1): ImageNet ResNet-34 with shortcut options A/B/C, 10-crop top-1 / top-5 error (%).
TABLE3_RESNET34: dict[str, tuple[float, float]] = {"A": (25.03, 7.76), "B": (24.52, 7.46), "C": (24.19, 7.40)}

# Identity Mappings (He et al., ECCV 2016), CIFAR-10 test error (%), one protocol for both unit types: the
# original unit at 110 layers (Table 2: 6.61, the CVPR paper's mean over 5 runs; Table 6 prints its best run,
# 6.43), full pre-activation ResNet-110 (Table 2), ResNet-164 and ResNet-1001 (Table 3).
PREACT_ERROR: dict[str, float] = {
    "resnet110": 6.61,
    "preact_resnet110": 6.37,
    "preact_resnet164": 5.46,
    "preact_resnet1001": 4.92,
}


def paper_error(model: str) -> float | None:
    """The paper's CIFAR-10 test error for a net, when it reports one (Table 6 or Identity Mappings)."""
    return TABLE6_ERROR.get(model, PREACT_ERROR.get(model))


def pretty(model: str) -> str:
    """The paper's spelling: resnet56 -> ResNet-56, plain20 -> plain-20, preact_resnet164 -> pre-act ResNet-164."""
    if model.startswith("preact_resnet"):
        return "pre-act ResNet-" + model.removeprefix("preact_resnet")
    if model.startswith("resnet"):
        return "ResNet-" + model.removeprefix("resnet")
    if model.startswith("plain"):
        return "plain-" + model.removeprefix("plain")
    return model


def depth_of(model: str) -> int | None:
    """The layer count in a net's name (resnet110 -> 110), or None."""
    digits = "".join(ch for ch in model if ch.isdigit())
    return int(digits) if digits else None
