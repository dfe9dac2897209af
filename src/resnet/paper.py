"""The published numbers printed beside ours: He et al., CVPR 2016 (Tables 1, 3-8), Identity Mappings (He et al.,
ECCV 2016) and akamaster/pytorch_resnet_cifar10's README, in one place so every table cites the same values.

All CIFAR numbers are CIFAR-10 test error (%); Tables 3 and 4 are ImageNet validation error (%).
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


# Table 1 and Sec. 3.3: multiply-adds at 224x224; Table 6 and Identity Mappings Sec. 4: parameters. The paper rounds.
PAPER_MACS: dict[str, tuple[float, str]] = {
    "resnet18": (1.8e9, "Table 1"),
    "resnet34": (3.6e9, "Table 1"),
    "resnet50": (3.8e9, "Table 1"),
    "resnet101": (7.6e9, "Table 1"),
    "resnet152": (11.3e9, "Table 1"),
    "plain18": (1.8e9, "Table 1"),
    "plain34": (3.6e9, "Sec. 3.3"),
}
PAPER_PARAMS: dict[str, tuple[float, str]] = {
    "resnet20": (0.27e6, "Table 6"),
    "resnet32": (0.46e6, "Table 6"),
    "resnet44": (0.66e6, "Table 6"),
    "resnet56": (0.85e6, "Table 6"),
    "resnet110": (1.7e6, "Table 6"),
    "resnet1202": (19.4e6, "Table 6"),
    "preact_resnet110": (1.7e6, "Identity Mappings"),
    "preact_resnet164": (1.7e6, "Identity Mappings"),
    "preact_resnet1001": (10.2e6, "Identity Mappings"),
}

# Table 4: single models, ImageNet val, multi-scale fully-convolutional testing, top-1 / top-5 error (%).
TABLE4_SINGLE: dict[str, tuple[float, float]] = {"resnet34 (B)": (21.84, 5.71), "resnet34 (C)": (21.53, 5.60),
                                                 "resnet50": (20.74, 5.25), "resnet101": (19.87, 4.60),
                                                 "resnet152": (19.38, 4.49)}
# Table 5: the ensemble of six models of different depth (two ResNet-152 among them), top-5 test error (%).
TABLE5_ENSEMBLE_TOP5 = 3.57
# Tables 7 and 8: Faster R-CNN with VGG-16 vs ResNet-101 (Sec. 4.3). VOC: mAP (%) at IoU 0.5; COCO val.
TABLE7_VOC: dict[str, dict[str, float]] = {"VOC 2007 test": {"vgg16": 73.2, "resnet101": 76.4},
                                          "VOC 2012 test": {"vgg16": 70.4, "resnet101": 73.8}}
TABLE8_COCO: dict[str, dict[str, float]] = {"mAP@.5": {"vgg16": 41.5, "resnet101": 48.4},
                                           "mAP@[.5,.95]": {"vgg16": 21.2, "resnet101": 27.2}}


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
