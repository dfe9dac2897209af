"""Hostile files and flags: every size they carry is checked before anything of that size exists, and every malformed
field is one error line naming the file (``resnet.limits``; the fuzz harness is test_fuzz_formats.py)."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _util import one_line_error, run_cli
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import resnet
from resnet.config import build_config
from resnet.errors import ConfigError, ModelError, WeightsError
from resnet.limits import MAX_CLASSES
from resnet.models import weights
from resnet.models.weights import read_torch_file
from resnet.transfer import importer


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def _akamaster(**replace: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ResNet-20 state dict under akamaster/pytorch_resnet_cifar10's names (``linear`` head)."""
    state = {k.replace("fc.", "linear."): v for k, v in resnet.create_model("resnet20").state_dict().items()}
    return {**state, **replace}


def _rewrite(src: Path, dst: Path, metadata: dict[str, str] | None = None, **tensors: torch.Tensor) -> Path:
    with safe_open(str(src), "pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file({**state, **tensors}, str(dst), metadata={**meta, **(metadata or {})})
    return dst


def test_a_broadcast_view_in_a_pth_is_refused_before_a_net_of_its_shape_is_built(tmp_path, monkeypatch):
    # 10**8 classes from a 4-byte storage: importing it used to build a 25 GB classifier
    path = tmp_path / "bomb.th"
    torch.save(_akamaster(**{"linear.weight": torch.zeros(1).expand(10**8, 64),
                             "linear.bias": torch.zeros(1).expand(10**8)}), path)
    monkeypatch.setattr(importer, "create_model", lambda *a, **k: pytest.fail("a net was built"))
    with pytest.raises(WeightsError, match=r"'linear.weight' declares 100000000x64 elements but stores 4 bytes"):
        resnet.import_weights(path)


def test_a_compressed_torch_archive_is_refused_before_it_is_unpacked(tmp_path, monkeypatch):
    raw, bomb = tmp_path / "raw.pth", tmp_path / "bomb.pth"
    torch.save({"a": torch.zeros(2**22)}, raw)  # 16 MB of zeros, deflated to a few kB below
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 2**20
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load unpacked it"))
    with pytest.raises(WeightsError, match=r"declares 16 MB of contents in a 0.0 MB file \(compressed"):
        read_torch_file(bomb)


def test_a_class_count_in_metadata_is_checked_against_the_tensors_on_the_meta_device_first(run_weights, tmp_path,
                                                                                          monkeypatch):
    options = {"num_classes": 50_000, "in_chans": 3}  # within the limit, but not what the tensors hold
    path = tmp_path / "lies.safetensors"
    with safe_open(str(run_weights()), "pt") as f:
        saved = json.loads(f.metadata()["resnet.options"])
    _rewrite(run_weights(), path, {"resnet.options": json.dumps({**saved, **options})})
    devices: list[str] = []
    real = weights.create_model
    monkeypatch.setattr(weights, "create_model", lambda *a, **k: devices.append(torch.empty(0).device.type)
                        or real(*a, **k))
    with pytest.raises(WeightsError, match=r"does not fit resnet20 \(another num_classes\?\).*fc.weight \(10, 64\) "
                                           r"vs \(50000, 64\)"):
        resnet.load_model(path)
    assert devices == ["meta"]  # the real net, 50,000 classes wide, was never built


@pytest.mark.parametrize(("options", "message"), [
    ({"num_classes": 10**9}, r"num_classes=1000000000; valid values: an integer in \[0, 100000\]"),
    ({"in_chans": 10**6}, r"in_chans=1000000; valid values: an integer in \[1, 1024\]"),
])
def test_class_and_channel_counts_have_a_stated_limit(options, message):
    with pytest.raises(ModelError, match=message):
        resnet.create_model("resnet20", **options)


def test_flags_asking_for_absurd_sizes_are_one_error_line(capsys):
    code, _, err = run_cli(["train", "--num-classes", "1000000000", "--iterations", "1", "--device", "cpu"], capsys)
    assert code == 2 and f"[0, {MAX_CLASSES}]" in one_line_error(err)
    with pytest.raises(ConfigError, match=r"\(65 seeds\): give 2 to 64 different seeds"):
        build_config({"train": {"seeds": list(range(65))}})
    for field, value in (("min_size", 100_000), ("fpn_channels", 10**9), ("rpn_pre_nms_test", 10**9)):
        with pytest.raises(ConfigError, match=rf"detect.{field}={value} must be an integer in \[1, "):
            build_config({"detect": {field: value}}, recipe="detect-quick")


@pytest.mark.parametrize(("change", "message"), [
    ({"drop": "layer2.0.conv2.weight"}, r"KeyError: 'layer2.0.conv2.weight'"),
    ({"layer1.0.conv1.weight": torch.tensor(1.0)}, "IndexError"),
])
def test_akamaster_names_over_other_tensors_are_one_error_line(tmp_path, change, message):
    state = _akamaster(**{k: v for k, v in change.items() if k != "drop"})
    state.pop(change.get("drop", ""), None)
    torch.save({"state_dict": state}, tmp_path / "odd.th")
    with pytest.raises(WeightsError, match=rf"named like an akamaster CIFAR checkpoint but its tensors do not form "
                                           rf"one \({message}"):
        resnet.import_weights(tmp_path / "odd.th")


def test_a_sparse_tensor_in_a_pth_is_one_error_line(tmp_path):
    torch.save({"fc.weight": torch.eye(3).to_sparse()}, tmp_path / "sparse.pth")
    with pytest.raises(WeightsError, match="'fc.weight' is a torch.sparse_coo tensor, not a dense weight"):
        read_torch_file(tmp_path / "sparse.pth")


def test_a_state_dict_keyed_by_numbers_is_one_error_line(tmp_path):
    torch.save({1: torch.zeros(3)}, tmp_path / "numbers.pth")
    with pytest.raises(WeightsError, match="expected a state dict .* with keys that are not names"):
        resnet.import_weights(tmp_path / "numbers.pth")


def test_a_pickle_that_calls_os_system_is_named_without_torchs_advice_to_run_it(tmp_path):
    class Shell:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"fc.weight": Shell()}, protocol=2))
    with pytest.raises(WeightsError) as err:
        read_torch_file(path)
    text = str(err.value)
    assert "its pickle calls posix.system, which could run code" in text or "calls nt.system" in text
    assert "weights_only" not in text.replace("torch.load(weights_only=True)", "") and "Re-running" not in text


def test_folders_fifos_and_devices_are_named_as_what_they_are(tmp_path, capsys, image):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for target, said in ((tmp_path / "folder", "is a folder, not a file"),
                         (tmp_path / "fifo", "is not a regular file (a device, FIFO or socket)"),
                         (Path("/dev/zero"), "is not a regular file (a device, FIFO or socket)")):
        code, _, err = run_cli(["import", target, "--out", tmp_path / "x.safetensors"], capsys)
        assert code == 2 and f"weights file {target} {said}" in one_line_error(err)
    code, _, err = run_cli(["predict", image, "--weights", tmp_path / "fifo", "--device", "cpu"], capsys)
    assert code == 2 and "is not a regular file" in one_line_error(err)


def test_finite_weights_that_overflow_float32_are_an_error_not_nan_probabilities(tmp_path, capsys, image):
    model = resnet.create_model("resnet20")
    with torch.no_grad():
        model.fc.weight.fill_(3e38)
    resnet.save_weights(model, tmp_path / "huge.safetensors")
    code, out, err = run_cli(["predict", image, "--weights", tmp_path / "huge.safetensors", "--device", "cpu"], capsys)
    assert code == 2 and "nan" not in out
    assert "scores for" in one_line_error(err) and "largest magnitude 3e+38 in fc.weight" in one_line_error(err)


def test_a_per_channel_mean_tensor_under_a_per_pixel_record_predicts_as_the_same_mean_everywhere(
        run_weights, tmp_path, capsys, image):
    src = run_weights()
    flat = _rewrite(src, tmp_path / "flat.safetensors", **{"extra.input_mean": torch.tensor([0.2, 0.5, 0.7])})
    image3 = _rewrite(src, tmp_path / "image.safetensors",
                      **{"extra.input_mean": torch.tensor([0.2, 0.5, 0.7]).view(3, 1, 1).expand(3, 32, 32).clone()})
    printed = []
    for path in (flat, image3):
        code, out, err = run_cli(["predict", image, "--weights", path, "--device", "cpu"], capsys)
        assert code == 0, err
        printed.append(out.splitlines()[1:])
    assert printed[0] == printed[1]


def test_out_of_memory_is_one_error_line_and_exit_2(monkeypatch, capsys):
    from resnet import cli

    def oom(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory:"
                           " you tried to allocate 204800000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(cli, "cmd_list", oom, raising=False)
    parser = cli._parser
    monkeypatch.setattr(cli, "_parser", lambda: _with_handler(parser(), oom))
    code = cli.main(["list"])
    err = capsys.readouterr().err
    said = one_line_error(err)
    assert code == 2 and said.startswith("error: out of memory: can't allocate memory: you tried to allocate 2048")
    monkeypatch.setattr(cli, "_parser", lambda: _with_handler(parser(), lambda a: 1 / 0))
    with pytest.raises(ZeroDivisionError):  # any other failure is not dressed up as memory
        cli.main(["list"])


def _with_handler(parser, handler):
    parser.set_defaults(handler=handler)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(handler=handler)
    return parser
