"""Export to ONNX (checked in ONNX Runtime), TorchScript or ``torch.export`` (.pt2), preprocessing included.

Every format takes any batch size and image size: the nets are fully convolutional up to the global average pool,
which the paper's multi-scale testing (Sec. 3.4) relies on. Each exported program is run at two image sizes and
its logits are compared with PyTorch's. The preprocessing the weights need (mean, std, input size, crop, class
names; timm's ``pretrained_cfg`` fields) travels inside the file: ONNX ``metadata_props`` (JSON strings), a
``preprocess.json`` extra file in TorchScript and .pt2 archives.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet.errors import ConfigError, ResNetError
from resnet.fsutil import check_writable, write_atomic

log = logging.getLogger("resnet.export")

FORMATS = ("onnx", "torchscript", "pt2")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}
EXTRA_FILE = "preprocess.json"
MAX_SIDE = 4096


def _tolerance(logits: torch.Tensor, rel: float) -> float:
    """What another float32 runtime may differ by: ``rel`` of the logits' scale (reordered sums, fused kernels)."""
    return rel * max(1.0, logits.abs().max().item())


def check_sizes(input_size: int) -> tuple[int, int]:
    """The two image sides every export is checked at: the net's own and half as large again (32 and 48)."""
    return input_size, input_size + input_size // 2


def _inputs(in_chans: int, input_size: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    first, second = check_sizes(input_size)
    return [torch.randn(4, in_chans, first, first, generator=g), torch.randn(2, in_chans, second, second, generator=g)]


def verify(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], inputs: list[torch.Tensor], what: str,
           path: Path, rel: float) -> dict[str, Any]:
    """Run the saved program at each input's size beside the model; one error line when they disagree."""
    diff, same_top1 = 0.0, True
    for x in inputs:
        with torch.no_grad():
            want, got = model(x), run(x)
        if got.shape != want.shape:
            raise ResNetError(f"{what} check failed for {path}: logits of shape {tuple(got.shape)} at "
                              f"{x.shape[-1]}x{x.shape[-2]}, the model's are {tuple(want.shape)}")
        d = (got - want).abs().max().item()
        same_top1 = same_top1 and bool(torch.equal(got.argmax(1), want.argmax(1)))
        if not same_top1 or not d <= _tolerance(want, rel):
            raise ResNetError(f"{what} check failed for {path}: the saved program's logits differ from the model's "
                              f"by up to {d:.3g} at {x.shape[-1]}x{x.shape[-2]}{'' if same_top1 else ', top-1 too'}"
                              "; export with another format or report the model")
        diff = max(diff, d)
    return {"max_abs_diff": diff, "identical_top1": same_top1, "checked_sizes": [int(x.shape[-1]) for x in inputs]}


def min_side(model: nn.Module, in_chans: int, input_size: int) -> int | None:
    """The smallest image side the traced graph holds for: one more than the net's total stride (at the stride
    itself the last feature map is 1x1, a shape the tracer specializes on). None when no global pool is found."""
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[-1])))
             for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
    if not seen or seen[0] < 1:
        return None
    return math.ceil(input_size / seen[0]) + 1


def dynamic_shapes(model: nn.Module, in_chans: int, input_size: int) -> tuple[dict[int, Any], ...]:
    """Batch, height and width dynamic (named for ONNX's ``dim_param``); height and width static when the export
    size is below what a dynamic graph holds for."""
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    low = min_side(model, in_chans, input_size)
    if low is None:
        dims.update({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO})
    elif input_size >= low:
        dims.update({2: torch.export.Dim("height", min=low, max=MAX_SIDE),
                     3: torch.export.Dim("width", min=low, max=MAX_SIDE)})
    return (dims,)


def _dynamic(dims: tuple[dict[int, Any], ...]) -> bool:
    return 2 in dims[0]


def export_onnx(model: nn.Module, path: Path, input_size: int, in_chans: int = 3,
                record: dict[str, Any] | None = None) -> dict[str, Any]:
    """ONNX by the dynamo exporter, dynamic batch, height and width; the record as ``metadata_props``; checked
    in ONNX Runtime at two sizes."""
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ResNetError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'resnet[export]'") from None
    model = model.eval()
    inputs = _inputs(in_chans, input_size)
    dims = dynamic_shapes(model, in_chans, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (inputs[0],), dynamo=True, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=dims, verbose=False)
    for key, value in (record or {}).items():
        program.model.metadata_props[key] = json.dumps(value)
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    checked = verify(model, run, inputs if _dynamic(dims) else inputs[:1], "ONNX", path, 1e-3)
    return {"format": "onnx", "path": str(path), "onnxruntime_max_abs_diff": checked["max_abs_diff"], **checked}


def export_torchscript(model: nn.Module, path: Path, input_size: int, in_chans: int = 3,
                       record: dict[str, Any] | None = None) -> dict[str, Any]:
    """TorchScript by tracing (no data-dependent control flow; the traced ops take any image size); the record as
    the ``preprocess.json`` extra file."""
    model = model.eval()
    inputs = _inputs(in_chans, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, inputs[0])
        traced.save(str(path), _extra_files={EXTRA_FILE: json.dumps(record or {})})
        loaded = torch.jit.load(str(path))
    return {"format": "torchscript", "path": str(path), **verify(model, loaded, inputs, "TorchScript", path, 1e-4)}


def export_program(model: nn.Module, path: Path, input_size: int, in_chans: int = 3,
                   record: dict[str, Any] | None = None) -> dict[str, Any]:
    """``torch.export`` (an ATen graph ``torch.export.load(path).module()`` runs without this package), dynamic
    batch, height and width; the record as the ``preprocess.json`` extra file."""
    model = model.eval()
    inputs = _inputs(in_chans, input_size)
    dims = dynamic_shapes(model, in_chans, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Option A shortcuts slice with a stride (x[..., ::2, ::2]): the tracer cannot prove that slice's size equals
        # the strided convolution's for every side, so that check becomes a run-time assert instead of a refusal.
        program = torch.export.export(model, (inputs[0],), dynamic_shapes=dims,
                                      prefer_deferred_runtime_asserts_over_guards=True)
        # Through a buffer: torch.export.save/load log a warning for a file not named .pt2 (the temporary file).
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={EXTRA_FILE: json.dumps(record or {})})
        path.write_bytes(buffer.getvalue())
        loaded = torch.export.load(io.BytesIO(path.read_bytes())).module()
    checked = verify(model, loaded, inputs if _dynamic(dims) else inputs[:1], "torch.export", path, 1e-4)
    return {"format": "pt2", "path": str(path), **checked}


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript, "pt2": export_program}


def export_model(weights: str, fmt: str, out: str | None = None, input_size: int | None = None,
                 arch: str | None = None) -> dict[str, Any]:
    """Load ``weights`` (a resnet .safetensors, a run folder, a torchvision/timm/MSRA file or published name) and
    export it."""
    from resnet.inference import load_for_inference, preprocess_record

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not valid; choose one of: {', '.join(FORMATS)}")
    if input_size is not None and input_size < 1:
        raise ConfigError(f"input_size={input_size} must be >= 1")
    from resnet.transfer.hub import is_published_name

    model, info = load_for_inference(weights, arch)
    size = input_size or info.input_size
    # a published name's file lies in a download cache: the default output goes to the working folder instead
    src = Path(weights.replace(":", "-") + ".x") if is_published_name(weights) else Path(info.path)
    dest = Path(out) if out else src.with_name(src.stem + SUFFIXES[fmt])
    if dest.is_dir():
        raise ConfigError(f"--out {dest} is a folder; pass a file name, e.g. {dest / src.stem}{SUFFIXES[fmt]}")
    if dest.exists() and not dest.is_file():  # /dev/null, /dev/full, a FIFO: never replaced by a file
        raise ConfigError(f"--out {dest} is not a regular file; pass a file name, e.g. {src.stem}{SUFFIXES[fmt]}")
    check_writable(dest.parent)
    _check_room(model, dest.parent)
    report: dict[str, Any] = {}
    # The exporter writes, reloads and checks the temporary file; only a checked program is renamed into place.
    write_atomic(dest, lambda tmp: report.update(EXPORTERS[fmt](model, tmp, size, info.in_chans,
                                                                preprocess_record(info))))
    report["path"] = str(dest)
    log.info("exported %s to %s", info.path, dest)
    return report


def _check_room(model: nn.Module, folder: Path) -> None:
    """Refuse before writing when the folder cannot hold the program: torch's C++ writers abort the process on a
    full disk (no Python error to turn into a line, and a partial file left behind)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    need = int(weights * 1.1) + 2**20  # the tensors, the graph and the record around them
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ResNetError(f"{folder} has {free / 2**20:.1f} MB free, the exported program needs about "
                          f"{need / 2**20:.1f} MB; free some space or pass --out on another disk")
