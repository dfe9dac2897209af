"""MSRA's original ImageNet ResNet-50/101/152 (the paper's own nets), as detectron2 distributes them
(``ImageNetPretrained/MSRA/R-50.pkl``): a pickle of a dict of numpy arrays under Caffe2 names.

The names (detectron2's ``checkpoint/c2_model_loading.py`` converts the same ones): ``conv1_w`` and ``res_conv1_bn_s``/
``_b`` (the stem), ``res{2..5}_{i}_branch2{a,b,c}_w`` with ``..._bn_s``/``_bn_b`` (each unit's three convs),
``res{s}_0_branch1_w`` with its ``_bn_s``/``_bn_b`` (the projection shortcut), ``fc1000_w``/``_b``. The nets are the
v1 layout: the stride in the first 1x1 of a down-sampling unit (Sec. 3.3, Table 1).

BatchNorm was folded into a fixed affine map ``y = s * x + b`` (the Caffe models' mean/variance and scale layers in
one). Our BatchNorm computes ``(x - mean) / sqrt(var + eps) * weight + bias``, so the statistics become mean 0 and
variance ``1 - eps``: the same map, to float rounding (detectron2's FrozenBatchNorm2d uses variance 1, which scales
each layer by ``1 / sqrt(1 + eps)``).

Their input is a BGR image on the 0-255 scale with the per-channel mean (B, G, R) = (103.53, 116.28, 123.675)
subtracted, nothing divided. The importer reverses the first conv's input channels, so the net takes RGB like every
other here, and records that preprocessing in our terms: RGB mean (123.675, 116.28, 103.53) / 255 and std 1 / 255 on
[0, 1] pixels, which is exactly 255 * x - mean. Their max pool is detectron2's (3x3, stride 2, padding 1, as
torchvision's); the original Caffe prototxt pools without padding and rounds up, a one-pixel shift of the pooling
grid that detectron2 accepts too.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from resnet.errors import WeightsError
from resnet.limits import check_stored
from resnet.models.preprocess import Preprocess
from resnet.printable import safe_name

MSRA_MEAN_BGR = (103.530, 116.280, 123.675)
"""Their pixel mean on the 0-255 scale, in their channel order (B, G, R)."""
BN_EPS = 1e-5
"""Our BatchNorm's eps (torch's default), which the converted statistics cancel."""
_UNIT = re.compile(r"^res(\d)_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_CONV = {"2a": "conv1", "2b": "conv2", "2c": "conv3", "1": "downsample.0"}
_BN = {"2a": "bn1", "2b": "bn2", "2c": "bn3", "1": "downsample.1"}


def read_array_pickle(path: Path) -> dict[str, Tensor]:
    """The tensors of a pickle of numpy arrays, read with the restricted unpickler (anything that names another
    global, code included, is refused before it runs). Non-array entries (detectron2 stores none, Caffe2 some
    bookkeeping) are left out."""
    from resnet.data.cifar import CifarUnpickler

    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, path, "a pickle of numpy arrays", WeightsError).load()
    except WeightsError:
        raise
    except OSError as e:
        raise WeightsError(f"{safe_name(path)}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # truncated or not a pickle: UnpicklingError, EOFError, ValueError, ...
        raise WeightsError(f"{safe_name(path)}: not a readable pickle of arrays ({type(e).__name__}: {e}); "
                           "truncated? fetch it again") from None
    if isinstance(obj, dict) and isinstance(obj.get(b"blobs", obj.get("blobs")), dict):  # Caffe2's detection files
        obj = obj.get(b"blobs", obj.get("blobs"))
    if not isinstance(obj, dict):
        raise WeightsError(f"{safe_name(path)}: holds a {type(obj).__name__}, expected a dict of numpy arrays")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if isinstance(value, np.ndarray) and value.ndim and value.dtype.kind == "f" and not name.endswith("_momentum"):
            out[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    check_stored(out, safe_name(path), WeightsError)  # the same size check as every torch file's tensors
    return out


def is_msra(state: dict[str, Tensor]) -> bool:
    return "conv1_w" in state and "res_conv1_bn_s" in state and "res2_0_branch2a_w" in state


def _batchnorm(state: dict[str, Tensor], out: dict[str, Tensor], c2: str, ours: str) -> None:
    """A folded affine map (``_bn_s``, ``_bn_b``) as BatchNorm with mean 0 and variance 1 - eps; statistics the file
    has (``_bn_rm``/``_bn_riv``, as detectron2 reads them) are kept."""
    scale = out[f"{ours}.weight"] = state[f"{c2}_bn_s"]
    if f"{c2}_bn_b" in state:  # else the strict load names the missing bias
        out[f"{ours}.bias"] = state[f"{c2}_bn_b"]
    out[f"{ours}.running_mean"] = state.get(f"{c2}_bn_rm", torch.zeros_like(scale))
    out[f"{ours}.running_var"] = state.get(f"{c2}_bn_riv", torch.full_like(scale, 1.0 - BN_EPS))


def convert_msra(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Their names to ours (torchvision's), the first conv's input channels reversed (BGR to RGB); a name we do not
    know is kept under its own, so that the strict load names it."""
    out: dict[str, Tensor] = {"conv1.weight": state["conv1_w"].flip(1)}
    _batchnorm(state, out, "res_conv1", "bn1")
    done = {"conv1_w", "res_conv1_bn_s", "res_conv1_bn_b", "res_conv1_bn_rm", "res_conv1_bn_riv"}
    for key, value in state.items():
        m = _UNIT.match(key)
        if m:
            stage, unit, branch, kind = m.groups()
            prefix = f"layer{int(stage) - 1}.{unit}."
            if kind == "w":
                out[prefix + _CONV[branch] + ".weight"] = value
            elif kind == "bn_s":  # its bias and statistics go with it
                _batchnorm(state, out, key[: -len("_bn_s")], prefix + _BN[branch])
        elif key in ("fc1000_w", "fc1000_b"):
            out["fc." + ("weight" if key.endswith("w") else "bias")] = value
        elif key not in done:
            out[key] = value
    return out


def msra_preprocess(in_chans: int) -> Preprocess:
    """Their BGR 0-255 mean subtraction as our RGB [0, 1] record (the first conv's channels reversed on import):
    ``(x - mean / 255) / (1 / 255) == 255 * x - mean``; the 224 crop of the image resized to 256 (Sec. 3.4)."""
    record = Preprocess((3, 224, 224), tuple(m / 255 for m in reversed(MSRA_MEAN_BGR)), (1 / 255,) * 3, 0.875)
    return record.for_channels(in_chans)
