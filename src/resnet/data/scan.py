"""Scanning an image folder: ``root/train/<class>/**/<image>`` and ``root/val/<class>/**/<image>``.

Symbolic links are followed once: every folder and image is taken at the first path that reaches it (by resolved
path), so a link back into the tree (``ln -s . cat/again``) neither loops nor counts images twice, a link to the
split folder or above it is not walked, and a class folder linked to another is not a second class (the real
folder keeps its name). Hidden entries (names starting with ``.``: ``.ipynb_checkpoints``, macOS ``._*`` files)
are never classes or images. GIFs are images (their first frame). Whatever a split leaves out (repeated links,
hidden entries, files of other types, folders that cannot be listed) is logged as one WARNING line per split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from resnet.errors import DataError
from resnet.printable import safe_name

IMAGE_EXTENSIONS: tuple[str, ...] = (*IMG_EXTENSIONS, ".gif")
"""torchvision's image-folder extensions, and GIF (Pillow decodes it)."""

Sample = tuple[str, int]  # (path, class index)
log = logging.getLogger("resnet.data")


@dataclass
class FolderIndex:
    """The scanned tree: class names (sorted folder names) and (path, label) lists per split."""

    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]


def _count(items: list[str], one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


@dataclass
class LeftOut:
    """What a scan did not take, for its one warning line."""

    repeated: list[str] = field(default_factory=list)
    """Paths reached again through a symbolic link (or linking to the split folder or above)."""
    unreadable: list[str] = field(default_factory=list)
    """Folders that could not be listed, with the reason."""
    other_files: list[str] = field(default_factory=list)
    """Files without an image extension."""
    outside: list[str] = field(default_factory=list)
    """Files directly in the split folder, in no class folder."""
    hidden: list[str] = field(default_factory=list)

    def line(self, folder: Path) -> str | None:
        """One line saying what was left out and why, or None when nothing was."""
        parts = []
        if self.repeated:
            parts.append(f"{_count(self.repeated, 'path', 'paths')} reached again through symbolic links, each "
                         f"folder and image taken once (e.g. {safe_name(self.repeated[0])})")
        if self.unreadable:
            parts.append(f"{_count(self.unreadable, 'folder', 'folders')} that cannot be read "
                         f"(e.g. {self.unreadable[0]})")
        if self.other_files:
            kinds = sorted({Path(p).suffix.lower() or "no extension" for p in self.other_files})
            parts.append(f"{_count(self.other_files, 'file', 'files')} that are not images by extension "
                         f"({safe_name(', '.join(kinds[:5]))}{', ...' if len(kinds) > 5 else ''})")
        if self.outside:
            parts.append(f"{_count(self.outside, 'file', 'files')} outside the class folders")
        if self.hidden:
            parts.append(f"{_count(self.hidden, 'hidden entry', 'hidden entries')} (names starting with '.')")
        return f"{safe_name(folder)}: left out {'; '.join(parts)}" if parts else None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a link
    except OSError:
        return False


class _Walker:
    """Walks one split, taking each resolved folder and file once."""

    def __init__(self, split: Path) -> None:
        self.split = split
        self.split_real = os.path.realpath(split)
        self.seen: set[str] = set()
        self.left = LeftOut()

    def claim(self, path: str, real: str) -> bool:
        """True the first time a resolved path is met; a later path to it, or a link to the split folder or one
        above it (which holds everything again), is left out."""
        above = self.split_real == real or self.split_real.startswith(real.rstrip(os.sep) + os.sep)
        if real in self.seen or above:
            self.left.repeated.append(path)
            return False
        self.seen.add(real)
        return True

    def entries(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.left.unreadable.append(f"{safe_name(folder)}: {e.strerror or e}")
            return []

    def classes(self) -> list[str]:
        """Class folder names, sorted; real folders claim their place before links to them."""
        folders = []
        for e in self.entries(str(self.split)):
            if e.name.startswith("."):
                self.left.hidden.append(e.path)
            elif _is_dir(e):
                folders.append(e)
            else:
                self.left.outside.append(e.path)
        folders.sort(key=lambda e: (e.is_symlink(), e.name))
        return sorted(e.name for e in folders if self.claim(e.path, os.path.realpath(e.path)))

    def images(self, top: str) -> list[str]:
        """Image files under ``top`` in ``sorted(os.walk(top))`` order (folder by folder, names sorted)."""
        found: list[tuple[str, list[str]]] = []
        stack = [top]
        while stack:
            folder = stack.pop()
            real_folder = os.path.realpath(folder)
            files, subfolders = [], []
            for e in self.entries(folder):
                if e.name.startswith("."):
                    self.left.hidden.append(e.path)
                    continue
                real = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real_folder, e.name)
                if _is_dir(e):
                    if self.claim(e.path, real):
                        subfolders.append(e.path)
                elif not has_file_allowed_extension(e.name, IMAGE_EXTENSIONS):
                    self.left.other_files.append(e.path)
                elif self.claim(e.path, real):
                    files.append(e.path)
            found.append((folder, files))
            stack.extend(reversed(subfolders))
        return [f for _, files in sorted(found) for f in files]


def _names(names: Iterable[str]) -> str:
    return ", ".join(safe_name(n) for n in names)


def scan_split(folder: Path, class_to_idx: dict[str, int] | None = None) -> tuple[list[str], list[Sample]]:
    """Class folders of one split and its (path, label) samples; every class folder must hold an image."""
    folder = Path(folder)
    fix = f"the layout is {safe_name(folder)}/<class>/<image>.jpg"
    if not folder.is_dir():
        raise DataError(f"{safe_name(folder)}: folder not found; {fix}")
    walker = _Walker(folder)
    classes = walker.classes()
    if not classes:
        raise DataError(f"{safe_name(folder)}: no class folders inside; {fix}")
    mapping = {c: i for i, c in enumerate(classes)} if class_to_idx is None else class_to_idx
    unknown = [c for c in classes if c not in mapping]
    if unknown:
        raise DataError(f"{safe_name(folder)}: class folders [{_names(unknown[:5])}] are not among the training "
                        "classes; val/ must use the same class folder names as train/")
    samples: list[Sample] = []
    for name in classes:
        files = walker.images(str(folder / name))
        if not files:
            where = safe_name(folder / name)
            unreadable = [u for u in walker.left.unreadable if u.startswith(where + ":")]
            if unreadable:
                raise DataError(f"{unreadable[0]}: class folder cannot be read; fix its permissions or remove it")
            raise DataError(f"{where}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or "
                            "remove it")
        samples.extend((f, mapping[name]) for f in files)
    line = walker.left.line(folder)
    if line:
        log.warning(line)
    return classes, samples


def scan_image_folder(root: str | Path) -> FolderIndex:
    """Scan ``root/train`` and ``root/val``; DataError with the path and the fix when the layout is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{safe_name(root)}: dataset folder not found; pass --data FOLDER holding train/<class>/ and "
                        "val/<class>/")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"{safe_name(root / split)}: folder not found; an image-folder dataset needs "
                            f"{safe_name(root)}/train/<class>/ and {safe_name(root)}/val/<class>/")
    classes, train = scan_split(root / "train")
    _, val = scan_split(root / "val", {c: i for i, c in enumerate(classes)})
    return FolderIndex(root, classes, train, val)
