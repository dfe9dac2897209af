"""Published weights by name: the table is the publishers' own, downloads go through torch.hub and huggingface_hub
into their caches with their hashes checked, and the files give the logits of the publishers' own nets.

Nothing leaves the machine: a local HTTP server stands for download.pytorch.org and for the Hugging Face Hub
(``HF_ENDPOINT``), serving files the tests write in each real format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from PIL import Image
from safetensors.torch import save_file

import resnet
from resnet.cli import main
from resnet.errors import WeightsError
from resnet.models.weights import read_weights
from resnet.transfer import hub


class Server:
    """Files served on 127.0.0.1 as download.pytorch.org and the Hub's ``/resolve/`` answer; every request logged."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.short: set[str] = set()  # paths whose body stops halfway (a dropped connection)
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                server.requests.append((self.command, self.path))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                for key, value in server.headers.get(self.path, {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data[: len(data) // 2] if self.path in server.short else data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add_hub_file(self, repo: str, name: str, data: bytes, lfs: bool) -> None:
        """What the Hub answers for ``/REPO/resolve/main/NAME``: its commit, and the SHA-256 (large files) or git
        blob id as the ETag."""
        path = f"/{repo}/resolve/main/{name}"
        self.files[path] = data
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.headers[path] = {"X-Repo-Commit": "0" * 40, "ETag": f'"{etag}"'}


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The server, with torch's and the Hub's caches in tmp_path and the Hub's endpoint on the server."""
    srv = Server()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "ENDPOINT", srv.url)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    template = srv.url + "/{repo_id}/resolve/{revision}/{filename}"  # made from HF_ENDPOINT at import
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty caches in tmp_path, every source kept to them (HF_HUB_OFFLINE=1)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def publish(monkeypatch: pytest.MonkeyPatch, srv: Server, name: str, data: bytes) -> hub.Published:
    """``name``'s entry pointed at the server, serving ``data`` under a torchvision-style hash-prefixed file name."""
    entry = hub.PUBLISHED[name]
    sha = hashlib.sha256(data).hexdigest()[:8] if entry.sha256 else None
    file = f"{entry.arch}-{sha}.pth" if sha else entry.file_name
    srv.files[f"/models/{file}"] = data
    moved = dataclasses.replace(entry, location=f"{srv.url}/models/{file}", sha256=sha)
    monkeypatch.setitem(hub.PUBLISHED, name, moved)
    return moved


# -- the table: the publishers' own values -------------------------------------------------------------------
def test_torchvision_names_carry_torchvisions_urls_top1_and_file_sizes():
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        for weights in torchvision.models.get_model_weights(arch):
            entry = hub.lookup(f"torchvision:{arch}.{weights.name}")
            assert entry.location == weights.url
            assert entry.sha256 and weights.url.endswith(f"-{entry.sha256}.pth")
            assert entry.top1 == pytest.approx(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])
            assert entry.size_mb == pytest.approx(weights.meta["_file_size"])
            crop, resize = weights.transforms().crop_size[0], weights.transforms().resize_size[0]
            assert entry.crop_pct == pytest.approx(crop / resize)


def test_timm_top1_agrees_with_torchvisions_for_the_same_weights_and_names_its_crop_side():
    # timm's tv_in1k / tv2_in1k are torchvision's V1 / V2 files: two publishers, one figure
    for arch in ("resnet50", "resnet101", "resnet152"):
        for tag, weights in (("tv_in1k", "IMAGENET1K_V1"), ("tv2_in1k", "IMAGENET1K_V2")):
            assert hub.lookup(f"timm:{arch}.{tag}").top1 == pytest.approx(
                hub.lookup(f"torchvision:{arch}.{weights}").top1, abs=0.02)  # each its own evaluation run
    a1 = hub.lookup("timm:resnet50.a1_in1k")
    assert (a1.top1, a1.top1_size) == (81.214, 288)  # evaluated at timm's test size, above the 224 it trained at


def test_timm_names_are_timms_pretrained_in1k_resnet_tags():
    timm = pytest.importorskip("timm")
    archs = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50c", "resnet101c", "resnet152c",
             "resnet18d", "resnet26d", "resnet34d", "resnet50d", "resnet101d", "resnet152d", "resnet200d")
    theirs = {f"timm:{n}" for a in archs for n in timm.list_pretrained(f"{a}.*") if n.endswith("_in1k")}
    ours = {n for n in hub.PUBLISHED if n.startswith("timm:")}
    assert ours == theirs
    assert hub.lookup("timm:resnet50.tv2_in1k").location == "timm/resnet50.tv2_in1k"


def test_msra_names_are_the_papers_v1_nets_from_detectron2():
    entry = hub.lookup("msra:resnet101")
    assert entry.location == "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl"
    assert (entry.layout, entry.top1) == ("v1", 76.4)


def test_a_misspelt_name_is_one_line_with_the_nearest_names():
    with pytest.raises(WeightsError, match=r"unknown weights name.*did you mean torchvision:resnet50.IMAGENET1K_V2"):
        hub.lookup("torchvision:resnet50.IMAGENET1K_V3")


def test_an_unknown_name_on_the_command_line_is_one_error_line_and_exit_2(offline: Path, capsys):
    assert main(["import", "timm:resnet50.a9_in1k", "--out", str(offline / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown weights name 'timm:resnet50.a9_in1k'; did you mean timm:resnet50.")
    assert err.count("\n") == 1 and not (offline / "x.safetensors").exists()


def test_a_file_named_like_a_source_is_read_as_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("timm:x").write_bytes(b"")
    assert not hub.is_published_name("timm:x") and hub.is_published_name("timm:y")
    assert not hub.is_published_name("imagenet:resnet50")


# -- offline, and files placed by hand ---------------------------------------------------------------------
def test_offline_without_the_file_is_one_line_naming_url_cache_and_what_to_do(offline: Path):
    with pytest.raises(WeightsError) as info:
        hub.fetch("torchvision:resnet50.IMAGENET1K_V2")
    text = str(info.value)
    assert "\n" not in text
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in text
    assert str(offline / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in text
    assert "place it at" in text and "11ad3fa6" in text


def test_offline_hub_name_is_one_line_naming_the_hub_cache_and_hf_download(offline: Path):
    with pytest.raises(WeightsError) as info:
        hub.fetch("timm:resnet50.a1_in1k")
    text = str(info.value)
    assert "\n" not in text and "resolve/main/model.safetensors" in text
    assert str(offline / "hf") in text and "hf download timm/resnet50.a1_in1k" in text


def test_a_file_placed_by_hand_is_found_and_its_hash_checked(offline: Path, monkeypatch: pytest.MonkeyPatch):
    data = b"weights" * 100
    sha = hashlib.sha256(data).hexdigest()[:8]
    monkeypatch.setitem(hub.PUBLISHED, "torchvision:resnet18.IMAGENET1K_V1", dataclasses.replace(
        hub.PUBLISHED["torchvision:resnet18.IMAGENET1K_V1"], location=f"http://h/resnet18-{sha}.pth", sha256=sha))
    target = offline / "torch" / "hub" / "checkpoints" / f"resnet18-{sha}.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    assert hub.fetch("torchvision:resnet18.IMAGENET1K_V1") == target
    target.write_bytes(data[:-1])  # a truncated copy: refused and removed, never loaded
    with pytest.raises(WeightsError, match=r"corrupt or truncated.*removed"):
        hub.fetch("torchvision:resnet18.IMAGENET1K_V1")
    assert not target.exists()


def test_init_from_and_resnet_weights_take_a_name_to_its_cached_file(offline: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys):
    from resnet.detection.backbones import weights_path as detection_weights
    from resnet.transfer.finetune import weights_path as finetune_weights

    target = offline / "torch" / "hub" / "checkpoints" / "R-50.pkl"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"placed by hand")
    assert finetune_weights("msra:resnet50") == detection_weights("msra:resnet50") == target
    assert main(["weights", "msra:resnet50"]) == 0
    assert capsys.readouterr().out.strip() == f"msra:resnet50: {target}"


def test_resnet_weights_lists_names_source_layout_top1_size_and_cache(offline: Path, capsys):
    assert main(["weights", "--source", "torchvision"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("torchvision:resnet50.IMAGENET1K_V2 "))
    assert row.split() == ["torchvision:resnet50.IMAGENET1K_V2", "torchvision", "resnet50", "v1.5", "80.86", "97.8",
                           "MB", "no"]
    assert len(lines) == 1 + 8


# -- downloads from a local server -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_download_is_cached_and_a_second_call_asks_nothing(server: Server, monkeypatch: pytest.MonkeyPatch):
    entry = publish(monkeypatch, server, "torchvision:resnet18.IMAGENET1K_V1", b"w" * 5000)
    first = hub.fetch(entry.name, progress=False)
    assert first.read_bytes() == b"w" * 5000 and first.parent == Path(torch.hub.get_dir()) / "checkpoints"
    asked = len(server.requests)
    assert hub.fetch(entry.name, progress=False) == first
    assert len(server.requests) == asked == 1


@pytest.mark.slow
def test_a_corrupt_or_truncated_download_is_removed_and_reported(server: Server, monkeypatch: pytest.MonkeyPatch):
    entry = publish(monkeypatch, server, "torchvision:resnet18.IMAGENET1K_V1", b"w" * 5000)
    path = next(iter(server.files))
    server.files[path] = b"v" * 5000  # another file under the hash-named URL
    with pytest.raises(WeightsError, match=r"corrupt or truncated.*nothing was kept") as info:
        hub.fetch(entry.name, progress=False)
    assert "\n" not in str(info.value)
    server.files[path] = b"w" * 5000
    server.short.add(path)  # the connection drops halfway
    with pytest.raises(WeightsError, match=r"corrupt or truncated|cannot download"):
        hub.fetch(entry.name, progress=False)
    assert not any((Path(torch.hub.get_dir()) / "checkpoints").iterdir())  # no partial file left


@pytest.mark.slow
def test_torchvision_name_gives_torchvisions_logits_everywhere(server: Server, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path, capsys, random_bn):
    torch.manual_seed(0)
    theirs = random_bn(torchvision.models.resnet18())
    buffer = tmp_path / "tv.pth"
    torch.save(theirs.state_dict(), buffer)
    entry = publish(monkeypatch, server, "torchvision:resnet18.IMAGENET1K_V1", buffer.read_bytes())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        for model in (resnet.create_model("resnet18", pretrained=entry.name),
                      resnet.create_model(entry.name, pretrained=True), resnet.import_weights(entry.name)):
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    assert resnet.data_config(model)["crop_pct"] == pytest.approx(224 / 256)
    assert model.pretrained_cfg["label_names"][:2] == ["tench", "goldfish"]  # ImageNet's, as torchvision publishes
    out = tmp_path / "imported.safetensors"
    assert main(["import", entry.name, "--out", str(out)]) == 0
    assert resnet.load_model(out).arch == "resnet18"
    assert json.loads(read_weights(out)[1]["classes"])[0] == "tench"
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save("grey.png")
    capsys.readouterr()
    assert main(["predict", "grey.png", "--weights", entry.name, "--top", "1"]) == 0
    label = capsys.readouterr().out.splitlines()[1].split(". ", 1)[1].rsplit(" ", 1)[0].strip()  # "  1. NAME  P"
    assert label in model.pretrained_cfg["label_names"]  # ImageNet's names, not class numbers
    assert [m for m, _ in server.requests] == ["GET"]  # one download served every use


@pytest.mark.slow
@pytest.mark.parametrize("arch, tag", [("resnet18", "a1_in1k"), ("resnet26d", "bt_in1k")])
def test_timm_name_downloads_through_huggingface_hub_with_its_config(server: Server, tmp_path: Path, random_bn,
                                                                     arch: str, tag: str):
    """A plain net and a Bag-of-Tricks one (deep stem, average-pooled shortcuts), by timm's name."""
    timm = pytest.importorskip("timm")
    theirs = random_bn(timm.create_model(arch, pretrained=False), seed=1)
    name, repo = f"timm:{arch}.{tag}", f"timm/{arch}.{tag}"
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(weights))
    config = {"architecture": arch, "pretrained_cfg": {
        "input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "crop_pct": 0.95, "interpolation": "bicubic", "crop_mode": "center"}}
    server.add_hub_file(repo, "model.safetensors", weights.read_bytes(), lfs=True)
    server.add_hub_file(repo, "config.json", json.dumps(config).encode(), lfs=False)
    model = resnet.create_model(name, pretrained=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-4, atol=1e-4)
    assert (resnet.data_config(model)["crop_pct"], resnet.data_config(model)["interpolation"]) == (0.95, "bicubic")
    assert hub.cached(hub.lookup(name)) is not None
    asked = len(server.requests)
    resnet.import_weights(name)  # from the cache: not even the Hub's freshness check
    assert len(server.requests) == asked


@pytest.mark.slow
def test_a_hub_blob_that_is_not_its_sha256_is_removed(server: Server, tmp_path: Path):
    repo = "timm/resnet18.a1_in1k"
    server.add_hub_file(repo, "model.safetensors", b"x" * 4000, lfs=True)
    server.add_hub_file(repo, "config.json", b"{}", lfs=False)
    server.files[f"/{repo}/resolve/main/model.safetensors"] = b"y" * 4000  # same size, other bytes
    with pytest.raises(WeightsError, match=r"corrupt or truncated.*removed"):
        hub.fetch("timm:resnet18.a1_in1k")
    assert hub.cached(hub.lookup("timm:resnet18.a1_in1k")) is None


def test_a_server_that_accepts_and_never_answers_is_reported_after_the_timeout(tmp_path, monkeypatch):
    import socket
    import time

    silent = socket.socket()  # a firewall that swallows the request: the connection opens, no byte ever comes
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    entry = hub.PUBLISHED["torchvision:resnet18.IMAGENET1K_V1"]
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/models/{entry.file_name}"
    monkeypatch.setitem(hub.PUBLISHED, entry.name, dataclasses.replace(entry, location=url))
    monkeypatch.setattr(hub, "DOWNLOAD_TIMEOUT_S", 1.0)
    started = time.monotonic()
    with pytest.raises(WeightsError, match=rf"cannot download {url} .*place it at .*{entry.file_name}"):
        hub.fetch(entry.name, progress=False)
    assert time.monotonic() - started < 10 and socket.getdefaulttimeout() is None
    assert not list((tmp_path / "torch").rglob("*.pth"))
    silent.close()
