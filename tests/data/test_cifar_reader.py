"""CIFAR reader on tiny files written in the real python-pickle format (dicts with bytes keys, numpy arrays)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet.config import DataCfg
from resnet.data.cifar import CIFAR10_CLASSES, load_cifar, read_pickle
from resnet.data.loaders import build_data
from resnet.errors import ConfigError, DataError

N = 6  # images per tiny batch


def _dump(path: Path, obj: object, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(root: Path, protocol: int = 2, n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """The real layout: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta (bytes keys)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"f.png"] * n}
        _dump(folder / name, batch, protocol)
        arrays[name], arrays[name + "_labels"] = data, np.array(labels)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": n, b"num_vis": 3072}
    _dump(folder / "batches.meta", meta, protocol)
    return arrays


def write_cifar100(root: Path, n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for name, count in (("train", 2 * n), ("test", n)):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, count)
        fine[0] = 99
        batch = {b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}
        _dump(folder / name, batch)
        arrays[name], arrays[name + "_labels"] = data, fine
    _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    return arrays


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_the_standard_folder_in_channel_major_layout(tmp_path: Path, protocol: int) -> None:
    arrays = write_cifar10(tmp_path, protocol)
    train_x, train_y, test_x, test_y, classes = load_cifar(tmp_path, "cifar10")
    assert train_x.shape == (5 * N, 3, 32, 32) and train_x.dtype == torch.uint8
    assert test_x.shape == (N, 3, 32, 32) and train_y.dtype == torch.int64
    first = arrays["data_batch_1"][0]
    assert torch.equal(train_x[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))  # red plane first
    assert torch.equal(train_x[0, 2], torch.from_numpy(first[2048:].reshape(32, 32)))
    assert torch.equal(train_x[N : 2 * N].flatten(1), torch.from_numpy(arrays["data_batch_2"]))
    assert train_y.tolist()[:N] == arrays["data_batch_1_labels"].tolist()
    assert test_y.tolist() == arrays["test_batch_labels"].tolist()
    assert classes == CIFAR10_CLASSES


def test_cifar10_folder_may_be_the_root_itself(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    assert load_cifar(tmp_path / "cifar-10-batches-py", "cifar10")[0].shape[0] == 5 * N


def test_cifar100_reads_fine_labels_and_names(tmp_path: Path) -> None:
    arrays = write_cifar100(tmp_path)
    train_x, train_y, test_x, _, classes = load_cifar(tmp_path, "cifar100")
    assert train_x.shape == (2 * N, 3, 32, 32) and test_x.shape == (N, 3, 32, 32)
    assert train_y.tolist() == arrays["train_labels"].tolist() and int(train_y.max()) == 99
    assert len(classes) == 100 and classes[7] == "c7"


def test_missing_folder_says_where_it_looked_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_cifar(tmp_path / "nowhere", "cifar10")
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and "--data" in msg and "--download" in msg and "\n" not in msg


def _corrupt(tmp_path: Path, **changes: object) -> Path:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch = {b"data": np.zeros((N, 3072), np.uint8), b"labels": [0] * N}
    batch.update({k.encode(): v for k, v in changes.items()})
    _dump(path, batch)
    return path


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"data": np.zeros((N, 1024), np.uint8)}, "(N, 3072)"),
        ({"data": np.zeros((N, 3072), np.float32)}, "float32"),
        ({"labels": [0] * (N - 1)}, "5 labels for 6 images"),
        ({"labels": [0] * (N - 1) + [10]}, "expected 0..9"),
        ({"labels": [-1] + [0] * (N - 1)}, "expected 0..9"),
        ({"labels": ["cat"] * N}, "integer labels"),
    ],
)
def test_malformed_batch_is_a_one_line_data_error_naming_the_file(
    tmp_path: Path, changes: dict[str, object], expect: str
) -> None:
    path = _corrupt(tmp_path, **changes)
    with pytest.raises(DataError) as e:
        load_cifar(tmp_path, "cifar10")
    assert str(path) in str(e.value) and expect in str(e.value) and "\n" not in str(e.value)


def test_cifar100_label_range_is_0_to_99(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    _dump(tmp_path / "cifar-100-python" / "test", {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]})
    with pytest.raises(DataError, match=r"expected 0\.\.99"):
        load_cifar(tmp_path, "cifar100")


class _Payload:
    """Unpickling this would create a marker file: what an attacker's 'dataset' would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


class _SystemPayload(_Payload):
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_Payload, _SystemPayload])
@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path, payload: type, protocol: int) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    _dump(path, {b"data": payload(marker), b"labels": [0]}, protocol)
    with pytest.raises(DataError, match="refused to unpickle .*: not a CIFAR batch") as e:
        load_cifar(tmp_path, "cifar10")
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_truncated_pickle_is_a_data_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        load_cifar(tmp_path, "cifar10")


def test_non_dict_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x"
    _dump(path, [1, 2, 3])
    with pytest.raises(DataError, match="expected a CIFAR batch dict"):
        read_pickle(path)


def test_val_split_holds_out_a_fixed_subset_of_training_images(tmp_path: Path) -> None:
    """The paper's 45k/5k split, in miniature: 30 train images -> 24 train + 6 validation, test kept apart."""
    write_cifar10(tmp_path)
    cfg = DataCfg(dataset="cifar10", data=str(tmp_path), val_split=6)
    bundle = build_data(cfg, batch_size=8, device="cpu", seed=0)
    assert bundle.num_train == 24 and bundle.eval.num_samples == 6
    assert bundle.test is not None and bundle.test.num_samples == N
    assert bundle.classes == CIFAR10_CLASSES and bundle.num_classes == 10 and bundle.input_size == 32
    all_rows = {bytes(r) for r in load_cifar(tmp_path, "cifar10")[0].flatten(1).numpy()}
    train_rows = {bytes(r) for r in bundle.train.images.flatten(1).numpy()}
    val_rows = {bytes(r) for r in bundle.eval.images.flatten(1).numpy()}
    assert not train_rows & val_rows and train_rows | val_rows == all_rows
    again = build_data(cfg, batch_size=8, device="cpu", seed=123)  # another run seed: the same validation images
    assert torch.equal(again.eval.images, bundle.eval.images)
    assert torch.allclose(bundle.mean, bundle.train.images.double().mean(0).div(255).float())


def test_val_split_zero_trains_on_all_and_evaluates_on_test(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bundle = build_data(DataCfg(dataset="cifar10", data=str(tmp_path), val_split=0), 8, "cpu", 0)
    assert bundle.num_train == 5 * N and bundle.eval.num_samples == N and bundle.test is None


def test_val_split_larger_than_the_training_set_is_a_config_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(ConfigError, match="val_split=5000"):
        build_data(DataCfg(dataset="cifar10", data=str(tmp_path), val_split=5000), 8, "cpu", 0)


def test_download_only_fetches_and_reading_uses_the_restricted_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets.utils as tvu

    calls = []

    def fake_download(url: str, root: str, filename: str, md5: str) -> None:
        calls.append((url, filename, md5))
        write_cifar10(Path(root))

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    train_x = load_cifar(tmp_path, "cifar10", download=True)[0]
    assert train_x.shape == (5 * N, 3, 32, 32)
    assert calls and calls[0][1] == "cifar-10-python.tar.gz"
    load_cifar(tmp_path, "cifar10", download=True)  # already there: no second fetch
    assert len(calls) == 1


def test_failed_download_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tvu

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not download CIFAR-100"):
        load_cifar(tmp_path, "cifar100", download=True)
