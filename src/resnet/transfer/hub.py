"""Published weights by name, downloaded through the ecosystem's own clients into their own caches.

One naming scheme, ``SOURCE:ARCH.TAG``:

- ``torchvision:resnet50.IMAGENET1K_V2``: torchvision's weights (``ResNet50_Weights.IMAGENET1K_V2``), fetched with
  ``torch.hub.download_url_to_file`` into torch's hub cache (``$TORCH_HOME/hub/checkpoints``), its SHA-256 checked
  against the prefix the file name carries, as ``torch.hub.load_state_dict_from_url(check_hash=True)`` does (that
  function would also unpickle the file; here it goes through ``import_weights``, ``weights_only=True``);
- ``timm:resnet50.a1_in1k``: the Hugging Face Hub repository ``timm/resnet50.a1_in1k`` (``model.safetensors`` and
  its ``config.json``, the preprocessing), fetched with ``huggingface_hub.hf_hub_download`` into its cache
  (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply); the Hub names a weights blob by its
  SHA-256, which is checked;
- ``msra:resnet50``: MSRA's original ResNet-50/101/152, the paper's nets, as detectron2 distributes them
  (``ImageNetPretrained/MSRA/R-50.pkl``), into torch's hub cache; no hash is published, so a download is accepted
  once the restricted unpickler reads it whole (``transfer.msra``).

A name is accepted wherever a weights file is (``import_weights``, ``resnet import``, ``train --init-from``,
``detect train --init-from``, ``eval``, ``predict``, ``export``): :func:`resolve` turns it into the cached file, and
the file goes through ``import_weights`` like any other. ``HF_HUB_OFFLINE=1`` keeps every source to its cache.
"""

from __future__ import annotations

import difflib
import http.client
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet.errors import WeightsError
from resnet.fsutil import file_sha256
from resnet.models.preprocess import Preprocess

log = logging.getLogger("resnet.transfer")

SOURCES: tuple[str, ...] = ("torchvision", "timm", "msra")
TORCHVISION_URL = "https://download.pytorch.org/models/"
MSRA_URL = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/"
TIMM_FILES: tuple[str, ...] = ("config.json", "model.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")
DOWNLOAD_TIMEOUT_S = 60.0
"""How long a download may wait for the server's next bytes before it is reported as unreachable."""


@dataclass(frozen=True)
class Published:
    """One published set of weights: where it comes from and what its publisher reports."""

    name: str
    arch: str
    location: str
    """The file's URL (torchvision, msra) or the Hub repository (timm)."""
    top1: float | None = None
    """ImageNet-1k validation top-1 (%), single centre crop, as published; None where no figure is published."""
    size_mb: float | None = None
    """The file's size in MB as published (torchvision's ``_file_size``)."""
    sha256: str | None = None
    """The SHA-256 prefix torchvision's file names carry."""
    crop_pct: float = 0.875
    """torchvision's evaluation crop over its resize (224/256; 224/232 for IMAGENET1K_V2)."""
    top1_size: int = 224
    """The side of the crop that top-1 was measured at (timm evaluates some weights above their training size)."""

    @property
    def source(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def layout(self) -> str:
        """Where a down-sampling unit strides: v1 (the first 1x1, the paper's) or v1.5 (the 3x3); basic units (18,
        34) have one place only."""
        if self.arch in ("resnet18", "resnet34"):
            return "basic"
        return "v1" if self.source == "msra" else "v1.5"

    @property
    def file_name(self) -> str:
        return TIMM_FILES[1] if self.source == "timm" else self.location.rsplit("/", 1)[1]


def _torchvision() -> list[Published]:
    # torchvision.models.ResNet*_Weights: url (SHA-256 prefix in the name), meta["_metrics"] acc@1, meta["_file_size"]
    rows = [("resnet18", "IMAGENET1K_V1", "f37072fd", 69.758, 44.661),
            ("resnet34", "IMAGENET1K_V1", "b627a593", 73.314, 83.275),
            ("resnet50", "IMAGENET1K_V1", "0676ba61", 76.130, 97.781),
            ("resnet50", "IMAGENET1K_V2", "11ad3fa6", 80.858, 97.790),
            ("resnet101", "IMAGENET1K_V1", "63fe2227", 77.374, 170.511),
            ("resnet101", "IMAGENET1K_V2", "cd907fc2", 81.886, 170.530),
            ("resnet152", "IMAGENET1K_V1", "394f9c45", 78.312, 230.434),
            ("resnet152", "IMAGENET1K_V2", "f82ba261", 82.284, 230.474)]
    return [Published(f"torchvision:{arch}.{tag}", arch, f"{TORCHVISION_URL}{arch}-{sha}.pth", top1, size, sha,
                      224 / (232 if tag == "IMAGENET1K_V2" else 256)) for arch, tag, sha, top1, size in rows]


# timm's pretrained tags of its resnet18..152 and of its Bag-of-Tricks ResNet-C and -D nets (timm.list_pretrained),
# each a Hub repository timm/ARCH.TAG, with the
# top-1 and crop side that huggingface/pytorch-image-models publishes for it in results/results-imagenet.csv
# (None: the file has no row for the tag)
TIMM_TOP1: dict[str, dict[str, tuple[float, int] | None]] = {
    "resnet18": {"a1_in1k": (73.158, 288), "a2_in1k": (72.372, 288), "a3_in1k": (68.254, 224),
                 "fb_ssl_yfcc100m_ft_in1k": (72.594, 224), "fb_swsl_ig1b_ft_in1k": (73.282, 224),
                 "gluon_in1k": (70.838, 224), "tv_in1k": (69.760, 224)},
    "resnet34": {"a1_in1k": (77.918, 288), "a2_in1k": (77.158, 288), "a3_in1k": (72.970, 224),
                 "bt_in1k": (76.480, 288), "gluon_in1k": (74.578, 224), "ra4_e3600_r224_in1k": None, "tv_in1k": None},
    "resnet50": {"a1_in1k": (81.214, 288), "a2_in1k": (80.772, 288), "a3_in1k": (78.048, 224),
                 "a1h_in1k": (80.676, 224), "am_in1k": (78.998, 224), "b1k_in1k": (80.706, 288),
                 "b2k_in1k": (80.454, 288), "bt_in1k": (79.640, 288), "c1_in1k": (80.912, 288),
                 "c2_in1k": (80.870, 288), "d_in1k": (80.972, 288), "fb_ssl_yfcc100m_ft_in1k": (79.234, 224),
                 "fb_swsl_ig1b_ft_in1k": (81.182, 224), "gluon_in1k": (77.580, 224), "ra_in1k": (79.836, 288),
                 "ram_in1k": (79.976, 288), "tv_in1k": (76.130, 224), "tv2_in1k": (80.850, 224)},
    "resnet101": {"a1_in1k": (82.322, 288), "a2_in1k": (82.236, 288), "a3_in1k": (79.814, 224),
                  "a1h_in1k": (82.778, 288), "gluon_in1k": (79.310, 224), "tv_in1k": (77.376, 224),
                  "tv2_in1k": (81.890, 224)},
    "resnet152": {"a1_in1k": (82.732, 288), "a2_in1k": (82.608, 288), "a3_in1k": (80.546, 224),
                  "a1h_in1k": (83.450, 288), "gluon_in1k": (79.694, 224), "tv_in1k": (78.322, 224),
                  "tv2_in1k": (82.288, 224)},
    "resnet50c": {"gluon_in1k": (78.012, 224)},
    "resnet101c": {"gluon_in1k": (79.542, 224)},
    "resnet152c": {"gluon_in1k": (79.910, 224)},
    "resnet18d": {"ra2_in1k": (73.794, 288), "ra4_e3600_r224_in1k": None},
    "resnet26d": {"bt_in1k": (77.408, 288)},
    "resnet34d": {"ra2_in1k": (78.436, 288)},
    "resnet50d": {"a1_in1k": (81.450, 288), "a2_in1k": (81.164, 288), "a3_in1k": (78.722, 224),
                  "gluon_in1k": (79.078, 224), "ra2_in1k": (81.356, 288), "ra4_e3600_r224_in1k": None},
    "resnet101d": {"gluon_in1k": (80.426, 224), "ra2_in1k": (83.016, 320)},
    "resnet152d": {"gluon_in1k": (80.476, 224), "ra2_in1k": (83.684, 320)},
    "resnet200d": {"ra2_in1k": (83.964, 320)},
}  # fmt: skip


def _timm() -> list[Published]:
    return [Published(f"timm:{arch}.{tag}", arch, f"timm/{arch}.{tag}", top1=result[0] if result else None,
                      top1_size=result[1] if result else 224)
            for arch, tags in TIMM_TOP1.items() for tag, result in tags.items()]


def _msra() -> list[Published]:
    # KaimingHe/deep-residual-networks: 1-crop validation top-1 error 24.7 / 23.6 / 23.0 % (224 crop of 256)
    rows = [("resnet50", "R-50.pkl", 75.3), ("resnet101", "R-101.pkl", 76.4), ("resnet152", "R-152.pkl", 77.0)]
    return [Published(f"msra:{arch}", arch, MSRA_URL + file, top1) for arch, file, top1 in rows]


PUBLISHED: dict[str, Published] = {p.name: p for p in (*_torchvision(), *_timm(), *_msra())}


def is_published_name(src: Any) -> bool:
    """``SOURCE:...`` with a known source, and no file of that name here (a file wins)."""
    return (isinstance(src, str) and ":" in src and src.split(":", 1)[0] in SOURCES
            and not os.path.exists(src))


def lookup(name: str) -> Published:
    """The table's entry; one WeightsError line with the nearest names for a misspelt one."""
    entry = PUBLISHED.get(name)
    if entry is None:
        near = difflib.get_close_matches(name, PUBLISHED, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise WeightsError(f"unknown weights name {name!r}; {hint}`resnet weights` lists the known names")
    return entry


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_checkpoints() -> Path:
    """torch's hub cache for weights files (``$TORCH_HOME/hub/checkpoints``), where torchvision keeps them too."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _check_hash(path: Path, expected: str, name: str, links: tuple[Path, ...] = ()) -> None:
    """The file's SHA-256 starts with ``expected``, or the file (and the cache's links to it) is removed and one
    WeightsError line says so: nothing corrupt or half-written is ever loaded."""
    digest = file_sha256(path)
    if digest.startswith(expected):
        return
    for p in (path, *links):
        p.unlink(missing_ok=True)
    raise WeightsError(f"{name}: {path} is corrupt or truncated (SHA-256 {digest[:16]}..., expected {expected[:16]}"
                       "...); it was removed: run again to download it")


def _unreachable(entry: Published, target: Path, reason: str) -> WeightsError:
    where = f"{target} (its SHA-256 starts with {entry.sha256})" if entry.sha256 else str(target)
    return WeightsError(f"{entry.name}: cannot download {entry.location} ({reason}); download it where the network "
                        f"allows and place it at {where}: it is found there")


def _fetch_url(entry: Published, progress: bool) -> Path:
    target = hub_checkpoints() / entry.file_name
    if target.is_file():  # downloaded before or placed by hand: checked all the same
        if entry.sha256:
            _check_hash(target, entry.sha256, entry.name)
        return target
    if _offline():
        raise _unreachable(entry, target, "HF_HUB_OFFLINE is set")
    import torch.hub

    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", entry.location, target)
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub's urlopen takes none: a silent firewall must not hang us
    try:  # into a temporary file beside the target, renamed once whole and its hash checked
        torch.hub.download_url_to_file(entry.location, str(target), hash_prefix=entry.sha256, progress=progress)
    except RuntimeError as e:
        if "invalid hash" not in str(e):
            raise
        raise WeightsError(f"{entry.name}: the download of {entry.location} is corrupt or truncated ({e}); nothing "
                           "was kept: run again") from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, refused connections, short reads
        raise _unreachable(entry, target, str(e) or type(e).__name__) from None
    finally:
        socket.setdefaulttimeout(before)
    if entry.sha256 is None:  # MSRA's pickles: no published hash; whole when the restricted unpickler reads them
        from resnet.transfer.msra import read_array_pickle

        try:
            read_array_pickle(target)
        except WeightsError as e:
            target.unlink(missing_ok=True)
            raise WeightsError(f"{entry.name}: the download of {entry.location} is unreadable, removed ({e})") from None
    return target


def _fetch_hub(entry: Published) -> Path:
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    found = [try_to_load_from_cache(entry.location, file) for file in TIMM_FILES]
    try:  # cached: no request at all (behind a firewall the Hub's freshness check would wait for its timeout)
        paths = [Path(p) if isinstance(p, str) else Path(hf_hub_download(entry.location, file))
                 for p, file in zip(found, TIMM_FILES, strict=True)]
    except (OSError, ValueError, EntryNotFoundError) as e:  # offline, unreachable, not found: not in the cache
        url = f"{constants.ENDPOINT}/{entry.location}/resolve/main/{TIMM_FILES[1]}"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{entry.name}: cannot download {url} ({reason:.120}); where the network allows, run `hf "
                           f"download {entry.location} {' '.join(TIMM_FILES)}` and copy its cache folder models--"
                           f"{entry.location.replace('/', '--')} into {constants.HF_HUB_CACHE}, or pass the "
                           f"downloaded {TIMM_FILES[1]} as a file (with its {TIMM_FILES[0]} beside it)") from None
    weights = paths[1]
    blob = weights.resolve()
    if _SHA256.fullmatch(blob.name):  # the Hub's cache names a large file's blob by its SHA-256
        _check_hash(blob, blob.name, entry.name, (weights,))
    return weights


def fetch(name: str, progress: bool = True) -> Path:
    """The local file of a published name, downloaded into its cache first when it is not there."""
    entry = lookup(name)
    return _fetch_hub(entry) if entry.source == "timm" else _fetch_url(entry, progress)


def cached(entry: Published) -> Path | None:
    """The entry's file in the local cache, or None; downloads nothing."""
    if entry.source != "timm":
        path = hub_checkpoints() / entry.file_name
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(entry.location, TIMM_FILES[1])
    return Path(found) if isinstance(found, str) else None


def resolve(src: str | os.PathLike[str]) -> Path:
    """A path as it is; a published name as its file in the local cache (downloaded there first)."""
    return fetch(src) if is_published_name(src) else Path(src)


def torchvision_preprocess(path: str | os.PathLike[str], in_chans: int) -> Preprocess | None:
    """The preprocessing of torchvision's file ``path`` by its published name (``resnet50-11ad3fa6.pth``: resize 232,
    crop 224), wherever it lies; None for another file."""
    name = Path(path).name
    for entry in PUBLISHED.values():
        if entry.source == "torchvision" and entry.file_name == name:
            return Preprocess.imagenet(in_chans, 224, entry.crop_pct)
    return None


def published_file(path: str | os.PathLike[str]) -> Published | None:
    """The entry whose file ``path`` is (torchvision's and MSRA's by their published file names, timm's by its Hub
    cache folder ``models--timm--ARCH.TAG``), or None."""
    p = Path(path)
    for entry in PUBLISHED.values():
        if entry.source == "timm":
            if f"models--{entry.location.replace('/', '--')}" in p.parts:
                return entry
        elif p.name == entry.file_name:
            return entry
    return None


def imagenet_classes() -> list[str]:
    """ImageNet-1k's class names in the order every published ResNet's classifier uses (torchvision's
    ``meta["categories"]``; timm's and MSRA's nets share the synset order)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
