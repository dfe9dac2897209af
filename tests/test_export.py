"""``resnet export``: ONNX, TorchScript and torch.export programs that take any batch and image size, compute the
model's logits, and carry the preprocessing the weights need."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import resnet
from resnet.cli import main
from resnet.errors import ResNetError
from resnet.export import export_model, min_side, verify


def _reference(path) -> torch.nn.Module:
    return resnet.load_model(str(path)).eval()


def _saved_mean(path) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.get_tensor("extra.input_mean")


def _check_record(record: dict, path, size: int = 32) -> None:
    assert record["classes"] == [f"class {i}" for i in range(10)] and record["input_size"] == [3, size, size]
    torch.testing.assert_close(torch.tensor(record["mean"]), _saved_mean(path))  # the per-pixel mean image
    assert record["std"] is None and record["arch"] == "resnet20"


def _close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= rel * max(1.0, want.abs().max().item())


@pytest.mark.slow
def test_onnx_takes_any_batch_and_image_size_and_names_its_preprocessing(run_weights, tmp_path):
    import onnx
    import onnxruntime as ort

    weights = run_weights()
    out = tmp_path / "m.onnx"
    report = export_model(str(weights), "onnx", out=str(out))
    assert report["checked_sizes"] == [32, 48] and report["identical_top1"]
    proto = onnx.load(str(out))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    _check_record({p.key: json.loads(p.value) for p in proto.metadata_props}, weights)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = _reference(weights)
    for shape in ((1, 3, 32, 32), (3, 3, 48, 48), (2, 3, 40, 56)):
        x = torch.randn(shape)
        with torch.no_grad():
            _close(torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), model(x), 1e-3)


def test_torchscript_carries_preprocess_json_and_takes_other_sizes(run_weights, tmp_path):
    weights = run_weights()
    out = tmp_path / "m.pt"
    assert export_model(str(weights), "torchscript", out=str(out))["checked_sizes"] == [32, 48]
    files = {"preprocess.json": ""}
    program = torch.jit.load(str(out), _extra_files=files)
    _check_record(json.loads(files["preprocess.json"]), weights)
    model = _reference(weights)
    for shape in ((1, 3, 32, 32), (2, 3, 48, 40)):
        x = torch.randn(shape)
        with torch.no_grad():
            _close(program(x), model(x), 1e-4)


@pytest.mark.slow
def test_torch_export_program_runs_in_a_fresh_process_without_resnet(run_weights, tmp_path, capfd):
    weights = run_weights()
    out = tmp_path / "m.pt2"
    report = export_model(str(weights), "pt2", out=str(out))
    assert report["format"] == "pt2" and report["checked_sizes"] == [32, 48]
    assert "Unable to load package" not in capfd.readouterr().err  # torch's warning about the temporary file
    inputs = [torch.randn(1, 3, 32, 32), torch.randn(3, 3, 48, 48), torch.randn(2, 3, 40, 56)]
    torch.save(inputs, tmp_path / "inputs.pt")
    child = textwrap.dedent(f"""
        import json, sys, torch
        files = {{"preprocess.json": ""}}
        program = torch.export.load({str(out)!r}, extra_files=files).module()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        torch.save([program(x) for x in inputs], {str(tmp_path / "logits.pt")!r})
        record = json.loads(files["preprocess.json"])
        print(json.dumps({{"resnet_imported": "resnet" in sys.modules, "record": record}}))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["resnet_imported"] is False
    _check_record(said["record"], weights)
    model = _reference(weights)
    with torch.no_grad():
        for x, got in zip(inputs, torch.load(tmp_path / "logits.pt"), strict=True):
            _close(got, model(x), 1e-4)


def test_a_program_that_differs_at_the_second_size_is_refused(tmp_path):
    model = resnet.create_model("resnet20").eval()
    inputs = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 48, 48)]
    with pytest.raises(ResNetError, match="differ from the model's by up to 0.5 at 48x48"):
        verify(model, lambda x: model(x) + (0.5 if x.shape[-1] == 48 else 0.0), inputs, "TorchScript",
               tmp_path / "m.pt", 1e-4)


def test_dynamic_image_sides_start_one_above_the_nets_total_stride():
    assert min_side(resnet.create_model("resnet20").eval(), 3, 32) == 5  # stride 4 (two stride-2 stages)
    assert min_side(resnet.create_model("resnet18").eval(), 3, 64) == 33  # stride 32


def test_export_reads_weights_that_do_not_name_their_architecture_as_import_does(tmp_path, capsys):
    """torchvision's tensors in a .safetensors: the depth and layout come from the tensors, no --arch needed."""
    import torchvision
    from safetensors.torch import save_file

    path = tmp_path / "tv.safetensors"  # torchvision's tensors, no resnet metadata
    save_file(torchvision.models.resnet18(num_classes=10).state_dict(), str(path))
    out = tmp_path / "tv.pt"
    assert main(["export", "--weights", str(path), "--format", "torchscript", "--input-size", "64",
                 "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["checked_sizes"] == [64, 96]


@pytest.mark.slow
def test_torchvision_resnet18_exported_to_onnx_matches_torchvision_at_224_and_320(tmp_path, capsys):
    import onnx
    import onnxruntime as ort
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    out = tmp_path / "resnet18.onnx"
    assert main(["export", "--weights", str(path), "--arch", "resnet18", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checked_sizes"] == [224, 336]
    record = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert record["mean"] == pytest.approx([0.485, 0.456, 0.406]) and record["std"] == pytest.approx(
        [0.229, 0.224, 0.225])
    assert record["input_size"] == [3, 224, 224] and len(record["classes"]) == 1000
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for size in (224, 320):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            _close(torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), reference(x), 1e-3)
