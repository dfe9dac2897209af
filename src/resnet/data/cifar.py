"""CIFAR-10 / CIFAR-100 from the standard python-pickle folders (Sec. 4.2 trains on CIFAR-10).

``cifar-10-batches-py/`` holds ``data_batch_1..5`` and ``test_batch`` (dicts with ``b'data'`` (N, 3072) uint8,
channel-major R, G, B planes of 32x32, and ``b'labels'``); ``cifar-100-python/`` holds ``train`` and ``test`` with
``b'fine_labels'``. The files are pickles, so they are read with :class:`CifarUnpickler`, which can only rebuild
numpy arrays and plain containers: a file that names anything else is refused before it can run code.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from resnet.errors import DataError
from resnet.printable import safe_name

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and labels."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    downloader: str  # the torchvision dataset class whose url/md5 fetch the archive


LAYOUTS = {
    "cifar10": CifarLayout(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
        10,
        "CIFAR10",
    ),
    "cifar100": CifarLayout(
        "CIFAR-100",
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
        "CIFAR100",
    ),
}


def _numpy_core(sub: str) -> Any:
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{sub}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Everything a CIFAR batch pickle may name: numpy array/dtype reconstruction and builtin containers."""
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol-5 arrays
    for mod in ("builtins", "__builtin__"):  # python 3 and python 2 (the original files) names
        for name, obj in (("list", list), ("dict", dict), ("tuple", tuple), ("bytearray", bytearray)):
            allowed[(mod, name)] = obj
    import codecs

    allowed[("_codecs", "encode")] = codecs.encode  # how protocol <= 2 pickles store python 3 bytes
    return allowed


class CifarUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only numpy arrays and plain containers and refuses every other global.

    An unrestricted ``pickle.load`` runs whatever callable the file names (``os.system`` included); here such a
    file fails with ``error`` (DataError for CIFAR batches) before anything is called. The one reader of pickled
    arrays: CIFAR batches, and detectron2's pickles of the MSRA ImageNet weights (``resnet.transfer.msra``).
    """

    def __init__(self, file: Any, path: Path, kind: str = "a CIFAR batch",
                 error: type[Exception] = DataError) -> None:
        super().__init__(file, encoding="bytes")
        self._path, self._kind, self._error = path, kind, error
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global; raise ``error`` for anything else."""
        obj = self._allowed.get((module, name))
        if obj is None:
            raise self._error(f"{safe_name(self._path)}: refused to unpickle {module}.{name}: not {self._kind}")
        return obj


def read_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle safely; keys come back as ``str`` (the originals are python-2 byte strings)."""
    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, path).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(
            f"{safe_name(path)}: cannot read ({e.strerror or e}); check the file or re-fetch it with --download"
        ) from None
    except Exception as e:  # truncated or not a pickle at all: UnpicklingError, EOFError, ValueError, ...
        msg = f"{safe_name(path)}: not a readable CIFAR pickle ({type(e).__name__}: {e}); re-fetch it with --download"
        raise DataError(msg) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"{safe_name(path)}: holds a {type(obj).__name__}, expected a CIFAR batch dict; re-fetch it with --download"
        )
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def parse_batch(batch: dict[str, Any], path: Path, label_key: str, num_classes: int) -> tuple[Tensor, Tensor]:
    """Validate a batch dict and return (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    fix = "re-fetch the dataset with --download"
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{safe_name(path)}: missing key 'data' or {label_key!r} (has {sorted(batch)}); not a CIFAR "
                        f"batch, {fix}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{safe_name(path)}: 'data' is {desc}, expected (N, 3072) uint8 CIFAR images; {fix}")
    try:
        labels = np.asarray(batch[label_key])
    except Exception:
        labels = np.asarray([None])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{safe_name(path)}: {label_key!r} is not a list of integer labels; {fix}")
    if len(labels) != len(data):
        raise DataError(f"{safe_name(path)}: {len(labels)} labels for {len(data)} images; the file is damaged, {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        lo, hi = int(labels.min()), int(labels.max())
        raise DataError(
            f"{safe_name(path)}: labels span {lo}..{hi}, expected 0..{num_classes - 1}; wrong dataset or damaged, {fix}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32).clone()
    return images, torch.from_numpy(labels.astype(np.int64))


def find_cifar_folder(root: Path, layout: CifarLayout) -> Path | None:
    """``<root>/<standard folder>`` or ``root`` itself, whichever holds the batch files."""
    for candidate in (root / layout.folder, root):
        if all((candidate / f).is_file() for f in (*layout.train_files, layout.test_file)):
            return candidate
    return None


def download_cifar(root: Path, layout: CifarLayout) -> None:
    """Fetch and unpack the official archive with torchvision's downloader (md5-checked); no unpickling here."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(tvd, layout.downloader)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as e:
        raise DataError(
            f"could not download {layout.name} into {safe_name(root)} ({type(e).__name__}: {e}); "
            f"download {cls.url} by hand, unpack it there and pass --data {safe_name(root)}"
        ) from None


def _class_names(folder: Path, layout: CifarLayout) -> list[str]:
    meta_path = folder / layout.meta_file
    if meta_path.is_file():
        names = read_pickle(meta_path).get(layout.names_key)
        if isinstance(names, list) and len(names) == layout.num_classes:
            return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    return list(CIFAR10_CLASSES) if layout.num_classes == 10 else [str(i) for i in range(layout.num_classes)]


def load_cifar(
    root: str | Path, dataset: str = "cifar10", download: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    """(train images (50000, 3, 32, 32) uint8, train labels, test images, test labels, class names).

    Looks in ``<root>/cifar-10-batches-py`` (``cifar-100-python``) and then ``root`` itself; with ``download``
    a missing folder is fetched first.
    """
    layout = LAYOUTS[dataset]
    root = Path(root).expanduser()
    folder = find_cifar_folder(root, layout)
    if folder is None and download:
        download_cifar(root, layout)
        folder = find_cifar_folder(root, layout)
    if folder is None:
        files = ", ".join((*layout.train_files, layout.test_file))
        raise DataError(
            f"{layout.name} not found: looked for {files} in {safe_name(root / layout.folder)} and {safe_name(root)}; "
            f"pass --data FOLDER (the one holding {layout.folder}/) or --download"
        )
    parts = [
        parse_batch(read_pickle(folder / f), folder / f, layout.label_key, layout.num_classes)
        for f in layout.train_files
    ]
    test_x, test_y = parse_batch(
        read_pickle(folder / layout.test_file), folder / layout.test_file, layout.label_key, layout.num_classes
    )
    train_x = torch.cat([p[0] for p in parts])
    train_y = torch.cat([p[1] for p in parts])
    return train_x, train_y, test_x, test_y, _class_names(folder, layout)
