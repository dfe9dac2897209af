"""Bad weights files: for another architecture or class count, truncated, random bytes, or a .pth whose pickle would
run code. Each is refused with one WeightsError line (CLI: ``error:``, exit 2), and nothing in a pickle ever runs."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _util import one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import resnet
from resnet.errors import ModelError, WeightsError
from resnet.models.weights import read_weights


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def resnet18_pth(tmp_path_factory) -> Path:
    """torchvision-layout ResNet-18 weights (random), 1000 classes."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(resnet.to_torchvision(resnet.create_model("resnet18", stride_in_1x1=False)), path)
    return path


class _Payload:
    """A pickle that, when loaded by plain pickle / torch.load(weights_only=False), creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _malicious_pth(path: Path, marker: Path, fmt: str) -> Path:
    payload = {"fc.weight": _Payload(marker), "fc.bias": torch.zeros(3)}
    if fmt == "torch zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    return path


@pytest.mark.parametrize("fmt", ["torch zip", "raw pickle"])
def test_malicious_pth_is_refused_without_running_its_pickle(tmp_path, capsys, image, fmt):
    marker = tmp_path / "pwned"
    evil = _malicious_pth(tmp_path / "evil.pth", marker, fmt)
    live = _malicious_pth(tmp_path / "live.pth", tmp_path / "live-marker", fmt)
    with open(live, "rb") as f:  # the payload is real: an unrestricted loader does run it
        torch.load(f, weights_only=False) if fmt == "torch zip" else pickle.load(f)  # noqa: S301
    assert (tmp_path / "live-marker").exists()

    # torch's zip format names the global the payload calls; a raw pickle (protocol 4) is refused at its first opcode
    why = "refused as unsafe: its pickle calls io.open" if fmt == "torch zip" else "refused: not a file torch.load"
    code, _, err = run_cli(["predict", image, "--weights", evil, "--arch", "resnet18", "--device", "cpu"], capsys)
    assert code == 2 and why in one_line_error(err) and str(evil) in err
    code, _, err = run_cli(["eval", evil, "--arch", "resnet18", "--device", "cpu"], capsys)
    assert code == 2 and why in one_line_error(err)
    with pytest.raises(WeightsError, match=why):
        resnet.from_torchvision(evil, "resnet18")
    with pytest.raises(WeightsError, match=why):
        resnet.from_torchvision(str(evil), "resnet18", num_classes=3)
    assert not marker.exists(), "the pickle ran"


def test_pth_of_another_architecture_names_the_differing_keys(tmp_path, capsys, image, resnet18_pth):
    code, _, err = run_cli(["predict", image, "--weights", resnet18_pth, "--arch", "resnet34", "--device", "cpu"],
                           capsys)

    assert code == 2
    line = one_line_error(err)
    assert "does not fit resnet34" in line and "missing: layer1.2." in line and "more)" in line


def test_pth_with_another_class_count_names_the_mis_shaped_keys(resnet18_pth):
    with pytest.raises(WeightsError) as e:
        resnet.from_torchvision(resnet18_pth, "resnet18", num_classes=10)
    assert "fc.weight (1000, 512) vs (10, 512)" in str(e.value) and "another num_classes" in str(e.value)


def test_safetensors_of_another_architecture_or_class_count_names_keys_and_shapes(tmp_path):
    torch.manual_seed(0)
    resnet.save_weights(resnet.create_model("resnet32"), tmp_path / "r32.safetensors")
    resnet.save_weights(resnet.create_model("resnet20", num_classes=5), tmp_path / "r20-5.safetensors")
    from resnet.models.weights import load_weights

    with pytest.raises(WeightsError, match=r"does not fit resnet20: unexpected: layer1\.3\.") as e:
        load_weights(resnet.create_model("resnet20"), tmp_path / "r32.safetensors")
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match=r"fc\.weight \(5, 64\) vs \(10, 64\)"):
        load_weights(resnet.create_model("resnet20"), tmp_path / "r20-5.safetensors")


def test_weights_for_another_class_count_than_the_dataset_are_refused_by_eval(tmp_path, capsys):
    torch.manual_seed(0)
    meta = {"classes": json.dumps(["a", "b", "c", "d", "e"]), "input_size": "32"}
    resnet.save_weights(resnet.create_model("resnet20", num_classes=5), tmp_path / "r20-5.safetensors", metadata=meta)

    code, _, err = run_cli(["eval", tmp_path / "r20-5.safetensors", "--dataset", "digits", "--device", "cpu"], capsys)

    assert code == 2 and "the weights have 5 classes but digits has 10" in one_line_error(err)


@pytest.mark.parametrize("cut", [0, 7, 100, "half", "last byte"])
def test_truncated_safetensors_is_one_error_naming_the_file(tmp_path, capsys, image, cut):
    torch.manual_seed(0)
    whole = tmp_path / "whole.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), whole)
    data = whole.read_bytes()
    n = {"half": len(data) // 2, "last byte": len(data) - 1}.get(cut, cut)
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:n])

    with pytest.raises(WeightsError, match="truncated or corrupt"):
        resnet.load_model(bad)
    for argv in (["predict", image, "--weights", bad], ["eval", bad, "--dataset", "digits"]):
        code, _, err = run_cli([*argv, "--device", "cpu"], capsys)
        assert code == 2 and str(bad) in one_line_error(err)


# ------------------------------------------------------------------------------------------------- fuzzing
def _safetensors_like(header: bytes, body: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header + body


_json_headers = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12,
).map(lambda obj: json.dumps(obj).encode())
_tensor_headers = st.builds(
    lambda dtype, shape, start, end, meta: json.dumps(
        {"w": {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}, "__metadata__": meta}).encode(),
    st.sampled_from(["F32", "F16", "I64", "U8", "BOOL", "F8_E4M3", "X9"]),
    st.lists(st.integers(-2, 2**33), max_size=3), st.integers(-4, 64), st.integers(-4, 2**40),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["resnet.arch", "resnet.options", "x"]),
                                         st.sampled_from(["resnet20", "resnet999", "{}", "{\"norm\": 3}", "[", ""]))),
)
_weights_bytes = st.one_of(
    st.binary(max_size=256),
    st.builds(_safetensors_like, st.one_of(_json_headers, _tensor_headers, st.binary(max_size=64)),
              st.binary(max_size=64)),
    st.builds(lambda b: b"PK\x03\x04" + b, st.binary(max_size=128)),  # zip magic: what torch.save writes
    st.builds(lambda b: b"\x80\x02" + b, st.binary(max_size=128)),  # pickle protocol 2 magic
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_weights_bytes)
def test_random_bytes_as_weights_raise_weights_error_only(tmp_path, data):
    st_path, pth_path = tmp_path / "w.safetensors", tmp_path / "w.pth"
    st_path.write_bytes(data)
    pth_path.write_bytes(data)
    for load in (lambda: resnet.load_model(st_path), lambda: read_weights(st_path),
                 lambda: resnet.from_torchvision(pth_path, "resnet18"),
                 lambda: resnet.from_torchvision(st_path, "resnet18")):
        try:
            load()
        except WeightsError as e:
            assert str(e) and "\n" not in str(e)


_small_names = ["resnet20", "plain20", "resnet18", "preact_resnet18"]
_option_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True, width=16),
                           st.text(max_size=6), st.sampled_from(["A", "B", "C", "bn", "gn", "frn", "cifar", "imagenet",
                                                                 "kaiming_normal", "xavier_normal", "torchvision"]),
                           st.lists(st.integers(0, 3), max_size=2))
_printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))  # names are echoed in one-line errors
_option_keys = st.one_of(st.sampled_from(["num_classes", "in_chans", "shortcut", "norm", "init", "stem",
                                          "stride_in_1x1", "zero_init_residual"]), st.text(_printable, max_size=8))


@settings(max_examples=60, deadline=None)
@given(name=st.one_of(st.sampled_from(_small_names), st.text(max_size=12), st.integers(), st.none()),
       options=st.dictionaries(_option_keys, _option_values, max_size=3))
def test_create_model_with_random_names_and_options_builds_or_raises_model_error(name, options):
    try:
        model = resnet.create_model(name, **options)
    except ModelError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(model, torch.nn.Module) and name in _small_names


# ---------------------------------------------------------------------------------- metadata is untrusted input
@pytest.fixture(scope="module")
def good_weights(tmp_path_factory) -> Path:
    """A run-like ResNet-20 file: classes, input size and the per-pixel mean image, as training writes them."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("good") / "r20.safetensors"
    meta = {"classes": json.dumps([f"c{i}" for i in range(10)]), "input_size": "32"}
    mean = torch.rand(3, 32, 32)
    resnet.save_weights(resnet.create_model("resnet20"), path, metadata=meta, extra={"input_mean": mean})
    return path


def _rewrite(good: Path, out: Path, meta: dict[str, str | None], tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    state, metadata, extra = read_weights(good)
    every = {**state, **{f"extra.{k}": v for k, v in extra.items()}, **tensors}
    metadata = {k: v for k, v in {**metadata, **meta}.items() if v is not None}
    save_file({k: v.contiguous() for k, v in every.items()}, str(out), metadata=metadata)
    return out


def _options(**changes) -> str:
    options = resnet.create_model("resnet20").options
    return json.dumps({**options, **changes})


_nan_conv = torch.full((16, 16, 3, 3), float("nan"))
_BAD_METADATA = {
    "num_classes absurd": ({"resnet.options": _options(num_classes=10**13)}, {}, r"'resnet\.options\.num_classes' "
                                                                               r"must be an integer in \[0, 100000\]"),
    "num_classes not an int": ({"resnet.options": _options(num_classes="ten")}, {}, r"resnet\.options\.num_classes"),
    "options broken JSON": ({"resnet.options": '{"num_classes": 10'}, {}, r"'resnet\.options' is not valid JSON"),
    "input_size not a number": ({"input_size": "abc"}, {}, r"'input_size' must be an integer in \[8, 4096\]"),
    "input_size huge": ({"input_size": "20000"}, {}, r"'input_size' must be an integer in \[8, 4096\], got '20000'"),
    "classes not a list": ({"classes": '{"a": 1}'}, {}, r"'classes' must be a JSON list of strings"),
    "classes not strings": ({"classes": json.dumps(list(range(10)))}, {}, r"'classes' must be a JSON list of strings"),
    "classes broken JSON": ({"classes": '["a", "b"'}, {}, r"'classes' is not valid JSON"),
    "classes too many": ({"classes": json.dumps(list("abcdefghijk"))}, {},
                         r"'classes' names 11 classes but the net has num_classes=10"),
    "classes empty": ({"classes": "[]"}, {}, r"'classes' is an empty list"),
    "preprocess broken JSON": ({"resnet.preprocess": "{mean"}, {}, r"'resnet\.preprocess' is not valid JSON"),
    "preprocess input_size": ({"resnet.preprocess": json.dumps({"mean": [0.5] * 3, "std": None, "crop_pct": 1,
                                                                "input_size": [3, 20000, 20000],
                                                                "interpolation": "bilinear"})},
                              {}, r"'resnet\.preprocess\.input_size' must be \[C, H, W\]"),
    "mean wrong shape": ({}, {"extra.input_mean": torch.rand(5, 32, 32)}, r"'extra\.input_mean' must be a float"),
    "mean not finite": ({}, {"extra.input_mean": torch.full((3, 32, 32), float("inf"))},
                        r"NaN/Inf values in extra\.input_mean"),
    "int8 weights": ({}, {"layer1.0.conv1.weight": torch.ones(16, 16, 3, 3, dtype=torch.int8)},
                     r"not a float dtype: layer1\.0\.conv1\.weight I8"),
    "NaN weights": ({}, {"layer1.0.conv1.weight": _nan_conv}, r"NaN/Inf values in layer1\.0\.conv1\.weight"),
}


@pytest.mark.parametrize("case", list(_BAD_METADATA))
def test_bad_metadata_or_tensor_values_are_one_line_naming_the_field_and_the_file(tmp_path, good_weights, case):
    meta, tensors, why = _BAD_METADATA[case]
    bad = _rewrite(good_weights, tmp_path / "bad.safetensors", meta, tensors)
    with pytest.raises(WeightsError, match=why) as e:
        resnet.load_model(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["num_classes absurd", "input_size not a number", "classes too many", "int8 weights"])
def test_bad_metadata_is_refused_by_predict_and_eval_with_one_error_line(tmp_path, capsys, image, good_weights, case):
    meta, tensors, why = _BAD_METADATA[case]
    bad = _rewrite(good_weights, tmp_path / "bad.safetensors", meta, tensors)
    for argv in (["predict", image, "--weights", bad], ["eval", bad, "--dataset", "digits"]):
        code, _, err = run_cli([*argv, "--device", "cpu"], capsys)
        assert code == 2 and str(bad) in one_line_error(err)


def test_metadata_is_checked_before_the_model_is_built(tmp_path, good_weights, monkeypatch):
    """An absurd class count never reaches the builder (which would allocate the classifier it asks for)."""
    import resnet.models.weights as weights

    calls = []
    monkeypatch.setattr(weights, "create_model", lambda *a, **k: calls.append(k) or pytest.fail("model built"))
    bad = _rewrite(good_weights, tmp_path / "bad.safetensors", {"resnet.options": _options(num_classes=10**7)}, {})
    with pytest.raises(WeightsError, match="num_classes"):
        resnet.load_model(bad)
    assert calls == []


@pytest.mark.parametrize("fmt", ["zip", "legacy pickle"])
def test_pytorch_checkpoint_given_as_weights_file_says_how_to_convert_it(tmp_path, capsys, image, fmt):
    path = tmp_path / "resnet20.th"  # akamaster's suffix: neither .pth nor .safetensors
    torch.save({"state_dict": resnet.create_model("resnet20").state_dict()}, path,
               _use_new_zipfile_serialization=fmt == "zip")
    out = tmp_path / "resnet20-imported.safetensors"  # never the input's own path
    want = (f"{path} is a pickle (a torch.save checkpoint?), not a safetensors file; convert it with "
            f"`resnet import {path} --out {out}`")
    with pytest.raises(WeightsError, match=re.escape(want)):
        resnet.load_model(path)
    for argv in (["predict", image, "--weights", path], ["eval", path, "--dataset", "digits"]):
        code, _, err = run_cli([*argv, "--device", "cpu"], capsys)  # read as `resnet import` reads files
        assert code == 2 and f"{path}: not a format resnet import knows" in one_line_error(err)


def test_class_names_and_file_names_with_escape_codes_are_printed_escaped(tmp_path, capsys, image):
    """A hostile file's class names (or an image's name) could clear the screen or forge a line of output."""
    import shutil

    names = [f"class {i}" for i in range(10)]
    names[0] = "\x1b[2J\nforged: 100% sure"
    weights = tmp_path / "w.safetensors"
    torch.manual_seed(0)
    model = resnet.create_model("resnet20")
    torch.nn.init.zeros_(model.fc.weight)
    with torch.no_grad():
        model.fc.bias.copy_(torch.arange(10.0, 0.0, -1.0))  # class 0 ranks first
    resnet.save_weights(model, weights, metadata={"classes": json.dumps(names), "input_size": "32"})
    odd = tmp_path / "x\x1b[31m.png"
    shutil.copy(image, odd)
    code, out, _ = run_cli(["predict", odd, "--weights", weights, "--device", "cpu"], capsys)
    assert code == 0 and "\x1b" not in out and "\\x1b[2J\\nforged: 100% sure" in out
    assert not any(line.startswith("forged") for line in out.splitlines())
