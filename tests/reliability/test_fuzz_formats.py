"""Property-based fuzzing of every file format ``resnet`` reads: valid files mutated (sizes, types, nesting, encodings,
declared shapes) and handed to the real command in a process under a memory limit. The only outcomes allowed are
success, or exit 2 with one ``error:`` line and no traceback, with the process alive and within its limit.

Formats: safetensors weights and their metadata, checkpoints and their sidecars, ``.pth``/``.th`` files, COCO JSON,
VOC XML and split files, recipe TOML, image files. Each example is drawn by Hypothesis (derandomized: the same
examples on every run); ``RESNET_FUZZ_EXAMPLES`` multiplies their number for a longer search.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch
from _util import HERE, TRAIN_ARGS, run_resnet, subprocess_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import resnet
from resnet.engine.checkpoint import _checksum

pytestmark = pytest.mark.slow

LIMIT = 6 * 2**30
"""The workers' address-space limit: torch itself maps about 2 GB; every bomb the project has met asks for 8 GB or
far more."""
SCALE = float(os.environ.get("RESNET_FUZZ_EXAMPLES", "1"))
DETECT = ["--pretrain", "none", "--scene-size", "64", "--min-size", "64", "--max-size", "64", "--anchor-sizes",
          "16,32,64", "--box-batch-size", "16", "--rpn-batch-size", "32", "--rpn-pre-nms-train", "100",
          "--rpn-post-nms-train", "20", "--rpn-pre-nms-test", "50", "--rpn-post-nms-test", "10", "--batch-size", "2",
          "--device", "cpu", "--workers", "0", "--iterations", "1", "--eval-every", "1", "--train-split", "train",
          "--test-split", "train"]


def examples(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


class Worker:
    """``_fuzz_worker.py`` under the limit; a crashed one is reported with the input and replaced."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def run(self, argv: list[Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            env = {**subprocess_env(), "PYTHONPATH": os.pathsep.join(sys.path)}
            self.proc = subprocess.Popen([sys.executable, str(HERE.parent / "_fuzz_worker.py"), str(LIMIT)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([str(a) for a in argv]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"code": f"the process died (exit {code})", "err": ""}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def check(answer: dict[str, Any], what: str) -> None:
    """Success, or exit 2 with exactly one ``error:`` line and no traceback."""
    err = answer["err"]
    if answer["code"] == 0:
        return
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert answer["code"] == 2 and len(errors) == 1 and "Traceback" not in err, f"{what}: {answer}"


# -- mutations -------------------------------------------------------------------------------------------------

DEEP = "\x00deep"
"""Stands for an array nested 20000 deep, written into the JSON text (json.dumps would recurse on it)."""
HOSTILE = [10**12, 2**63, 10**400, -1, 0, 1e300, float("inf"), float("nan"), "abc", "", "\x1b[2J\nforged", [1], [[[]]],
           {}, {"a": 1}, None, True, 3.5, DEEP]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return obj


@st.composite
def mutated(draw: st.DrawFn, obj: Any, avoid: tuple[str, ...] = ()) -> Any:
    """``obj`` (JSON-like) with one to three values replaced by hostile ones, or keys deleted."""
    obj = copy.deepcopy(obj)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(obj) if p and not any(a in map(str, p) for a in avoid)]
        path = draw(st.sampled_from(paths))
        value = draw(st.one_of(st.sampled_from(HOSTILE), st.integers(), st.text(max_size=4),
                               st.lists(st.integers(-2, 10**9), max_size=5)))
        obj = _set(obj, path, value, delete=draw(st.booleans()) and draw(st.booleans()))
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(obj).replace(json.dumps(DEEP), "[" * 20000 + "]" * 20000)


@st.composite
def encoded(draw: st.DrawFn, text: str) -> bytes:
    """UTF-8, or the text broken as files from elsewhere are: Latin-1 bytes, a BOM, a NUL, cut short."""
    how = draw(st.sampled_from(["utf8", "utf8", "latin1", "bom", "nul", "cut"]))
    if how == "latin1":
        return text.replace('"', '"\xe9', 1).encode("latin-1", "replace")
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "nul":
        at = draw(st.integers(0, len(text)))
        return text[:at].encode() + b"\x00" + text[at:].encode()
    if how == "cut":
        return text.encode()[: draw(st.integers(0, len(text)))]
    return text.encode()


# -- valid files to start from -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    model = resnet.create_model("resnet20")
    resnet.save_weights(model, root / "w.safetensors", metadata={"classes": json.dumps([str(i) for i in range(10)]),
                                                                 "input_size": "32"},
                        extra={"input_mean": torch.rand(3, 32, 32)})
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "x.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(root / "x.jpg")
    return {"weights": root / "w.safetensors", "png": root / "x.png", "jpg": root / "x.jpg", "root": root}


def _akamaster_state() -> dict[str, torch.Tensor]:
    return {k.replace("fc.", "linear."): v for k, v in resnet.create_model("resnet20").state_dict().items()}


# -- the formats ----------------------------------------------------------------------------------------------------


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


@examples(12)
@given(data=st.data())
def test_mutated_safetensors_headers_and_metadata(worker, base, tmp_path_factory, data):
    raw = base["weights"].read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    header["__metadata__"] = {k: _json_or_text(v) for k, v in header["__metadata__"].items()}
    header = data.draw(mutated(header))
    if isinstance(header, dict) and isinstance(header.get("__metadata__"), dict):
        header["__metadata__"] = {k: v if isinstance(v, str) or data.draw(st.booleans()) else dumps(v)
                                  for k, v in header["__metadata__"].items()}
    text = dumps(header).encode()
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
    argv = data.draw(st.sampled_from([["predict", base["png"], "--weights", path, "--device", "cpu"],
                                      ["import", path, "--out", path.with_name("out.safetensors")]]))
    check(worker.run(argv), f"safetensors header {text[:300]!r}")


@st.composite
def hostile_tensor(draw: st.DrawFn) -> Any:
    return draw(st.sampled_from([
        torch.zeros(1).expand(10**7, 64), torch.zeros(3, 3), torch.zeros(()), torch.zeros(0, 16, 3, 3),
        torch.zeros(16, 3, 3, 3, dtype=torch.int8), torch.zeros(16, dtype=torch.bool),
        torch.zeros(4, dtype=torch.complex64),
        torch.full((10,), float("nan")), torch.eye(3).to_sparse(), "abc", 7, [torch.zeros(2)],
        {"nested": torch.zeros(2)}, None,
    ]))  # fmt: skip


@examples(12)
@given(data=st.data())
def test_mutated_pth_and_th_files(worker, base, tmp_path_factory, data):
    state: dict[Any, Any] = _akamaster_state()
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(k for k in state if isinstance(k, str))))
        how = data.draw(st.sampled_from(["replace", "replace", "delete", "int key", "prefix"]))
        if how == "replace":
            state[key] = data.draw(hostile_tensor())
        elif how == "delete":
            state.pop(key)
        elif how == "int key":
            state[len(state)] = state.pop(key)
        else:
            state = {f"module.{k}": v for k, v in state.items()}
    wrapper = data.draw(st.sampled_from([None, "state_dict", "model"]))
    path = tmp_path_factory.mktemp("pth") / data.draw(st.sampled_from(["m.pth", "m.th"]))
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path,
               _use_new_zipfile_serialization=data.draw(st.booleans()))
    argv = data.draw(st.sampled_from([["import", path, "--out", path.with_name("out.safetensors")],
                                      ["predict", base["png"], "--weights", path, "--device", "cpu"]]))
    check(worker.run(argv), f"state dict {[(k, getattr(v, 'shape', v)) for k, v in list(state.items())[:4]]}")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ckpt") / "run"
    done = run_resnet("train", *TRAIN_ARGS, "--out", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("model.safetensors", "final.json"):
        (run / name).unlink()  # a run interrupted after its last checkpoint: --resume reads it
    return run


@examples(5)
@given(data=st.data())
def test_mutated_checkpoint_sidecars_and_tensor_files(worker, finished_run, tmp_path_factory, data):
    run = tmp_path_factory.mktemp("resume") / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns(".lock"))
    sidecar = sorted((run / "checkpoints").glob("ckpt-*.json"))[-1]
    if data.draw(st.booleans()):
        body = json.loads(sidecar.read_text())
        body.pop("checksum")
        body = data.draw(mutated(body))
        if isinstance(body, dict) and data.draw(st.booleans()):
            body["checksum"] = _checksum(body)  # an edit the checksum cannot see
        sidecar.write_bytes(data.draw(encoded(dumps(body))))
    else:
        tensors = sidecar.with_suffix(".safetensors")
        raw = tensors.read_bytes()
        tensors.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    check(worker.run(["train", "--resume", run, "--threads", "1"]), f"sidecar {sidecar.read_bytes()[:300]!r}")


COCO = {"images": [{"id": 1, "width": 40, "height": 30, "file_name": "a.png"},
                   {"id": 2, "width": 30, "height": 30, "file_name": "b.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8], "area": 50.0, "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [5, 5, 9, 6], "iscrowd": 0}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]}


@examples(5)
@given(data=st.data())
def test_mutated_coco_instances_files(worker, base, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("coco")
    for entry in COCO["images"]:
        (folder / "train").mkdir(exist_ok=True)
        Image.new("RGB", (entry["width"], entry["height"])).save(folder / "train" / entry["file_name"])
    (folder / "instances_train.json").write_bytes(data.draw(encoded(dumps(data.draw(mutated(COCO))))))
    check(worker.run(["detect", "train", *DETECT, "--dataset", "coco", "--data", folder, "--out", folder / "run"]),
          f"COCO {(folder / 'instances_train.json').read_bytes()[:400]!r}")


VOC_OBJECT = ("<object><name>dog</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}"
              "</xmax><ymax>{y1}</ymax></bndbox></object>")


@examples(5)
@given(data=st.data())
def test_mutated_voc_annotations_and_split_files(worker, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    hostile = st.sampled_from(["inf", "nan", "-1", "1e300", "abc", "", "99999999", "\x1b[2J", "5"])
    values = {k: data.draw(st.one_of(st.integers(1, 30).map(str), hostile)) for k in ("x0", "y0", "x1", "y1")}
    objects = VOC_OBJECT.format(**values) * data.draw(st.sampled_from([1, 2, 1001]))
    size = {k: data.draw(st.one_of(st.just(v), hostile)) for k, v in (("w", "40"), ("h", "30"))}
    xml = (f"<annotation><filename>000001.png</filename><size><width>{size['w']}</width><height>{size['h']}</height>"
           f"<depth>3</depth></size>{objects}</annotation>")
    (root / "Annotations" / "000001.xml").write_bytes(data.draw(encoded(xml)))
    Image.new("RGB", (40, 30)).save(root / "JPEGImages" / "000001.png")
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(data.draw(encoded("000001\n")))
    check(worker.run(["detect", "train", *DETECT, "--dataset", "voc", "--data", root, "--out", root / "run"]),
          f"VOC {xml[:300]!r}")


@examples(15)
@given(data=st.data())
def test_mutated_recipe_toml_files(worker, tmp_path_factory, data):
    recipe = tomllib.loads((Path(resnet.__file__).parent / "recipes" / "quick.toml").read_text())
    changed = data.draw(mutated(recipe))

    def plain(v: Any) -> Any:  # TOML has no null, and a value nested 20000 deep is JSON's problem, not TOML's
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return "null" if v is None or v == DEEP else v

    try:
        text = tomli_w.dumps(plain(changed)) if isinstance(changed, dict) else str(changed)
    except (TypeError, ValueError):  # a list of mixed types, which TOML writers refuse: write it by hand
        text = "[train]\niterations = [1, \"a\"]\n"
    path = tmp_path_factory.mktemp("toml") / "r.toml"
    path.write_bytes(data.draw(encoded(text)))
    check(worker.run(["train", "--recipe", path, "--print-config"]), f"recipe {text[:300]!r}")


PNG = b"\x89PNG"


@examples(12)
@given(data=st.data())
def test_mutated_image_files(worker, base, tmp_path_factory, data):
    raw = bytearray(base[data.draw(st.sampled_from(["png", "jpg"]))].read_bytes())
    how = data.draw(st.sampled_from(["dimensions", "cut", "flip", "flip"]))
    if how == "dimensions" and raw.startswith(PNG):  # IHDR's width and height: a pixel bomb's header
        raw[16:24] = struct.pack(">II", data.draw(st.sampled_from([0, 1, 65535, 2**31 - 1])),
                                 data.draw(st.sampled_from([0, 1, 65535, 2**31 - 1])))
    elif how == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    suffix = "png" if raw.startswith(PNG) else "jpg"
    path = tmp_path_factory.mktemp("img") / f"m.{suffix}"
    path.write_bytes(bytes(raw))
    check(worker.run(["predict", path, "--weights", base["weights"], "--device", "cpu"]), f"image {how}")
