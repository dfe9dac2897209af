"""Export to ONNX (verified against PyTorch with ONNX Runtime) or TorchScript."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet.errors import ConfigError, ResNetError

log = logging.getLogger("resnet.export")


def _check_onnx(model: nn.Module, path: Path, x: torch.Tensor) -> dict[str, Any]:
    """Run the exported file with ONNX Runtime on ``x`` and compare with PyTorch's logits."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ResNetError("onnxruntime is not installed: pip install 'resnet[export]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    diff = (got - want).abs().max().item()
    same_top1 = bool(torch.equal(got.argmax(1), want.argmax(1)))
    if not same_top1 or diff > _tolerance(want, 1e-3):
        raise ResNetError(f"ONNX check failed for {path}: logits differ from PyTorch's by up to {diff:.3g}"
                          f"{'' if same_top1 else ', top-1 too'}; export with another opset or report the model")
    return {"onnxruntime_max_abs_diff": diff, "identical_top1": same_top1, "checked_batch": int(x.shape[0])}


def _tolerance(logits: torch.Tensor, rel: float) -> float:
    """What another float32 runtime may differ by: ``rel`` of the logits' scale (reordered sums, fused kernels)."""
    return rel * max(1.0, logits.abs().max().item())


def export_onnx(model: nn.Module, path: Path, input_size: int, in_chans: int = 3) -> dict[str, Any]:
    """ONNX with a dynamic batch axis, checked on a random batch of 4."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ResNetError("ONNX export needs onnx and onnxscript: pip install 'resnet[export]'") from None
    model = model.eval()
    x = torch.randn(4, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))
    return {"format": "onnx", "path": str(path), **_check_onnx(model, path, x)}


def export_torchscript(model: nn.Module, path: Path, input_size: int, in_chans: int = 3) -> dict[str, Any]:
    """TorchScript by tracing (the nets have no data-dependent control flow); checked against eager."""
    model = model.eval()
    x = torch.randn(2, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        traced.save(str(path))
        want = model(x)
        diff = (torch.jit.load(str(path))(x) - want).abs().max().item()
    if diff > _tolerance(want, 1e-4):
        raise ResNetError(f"TorchScript check failed for {path}: the saved program's logits differ from the "
                          f"model's by up to {diff:.3g}")
    return {"format": "torchscript", "path": str(path), "max_abs_diff": diff}


def export_model(weights: str, fmt: str, out: str | None = None, input_size: int | None = None) -> dict[str, Any]:
    """Load ``weights`` (a resnet .safetensors or run folder) and export it to ``fmt``."""
    from resnet.inference import load_for_inference

    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"--format {fmt!r} is not valid; choose one of: onnx, torchscript")
    if input_size is not None and input_size < 1:
        raise ConfigError(f"input_size={input_size} must be >= 1")
    model, info = load_for_inference(weights)
    size = input_size or info.input_size
    src = Path(info.path)
    dest = Path(out) if out else src.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    if dest.is_dir():
        raise ConfigError(f"--out {dest} is a folder; pass a file name, e.g. {dest / src.stem}.{fmt}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        return export_onnx(model, dest, size, info.in_chans)
    return export_torchscript(model, dest, size, info.in_chans)
