"""PASCAL VOC folders: ``Annotations/{id}.xml``, ``ImageSets/Main/{split}.txt``, ``JPEGImages/``.

The XML is parsed with the standard library only after a first pass that refuses any DOCTYPE (and so any entity
declaration: the "billion laughs" and external-entity attacks defusedxml guards against), so a hostile
annotation file cannot expand or fetch anything.

Coordinates: VOC's corners are 1-based inclusive pixel indices; as detectron2's ``pascal_voc.py`` does, 1 is
taken off ``xmin`` and ``ymin`` so a box becomes pixel-edge xyxy (its width, ``xmax - xmin + 1``, is the one the
VOC devkit scores with). Image ids are positions in the split file (1-based); the record's ``name`` keeps the
VOC id. Categories: the 20 VOC classes in the devkit's order when every object is one of them, else the names
found, sorted; pass the training split's list to open another split.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.parsers import expat

import numpy as np
from PIL import Image

from resnet.detection.data import Category, DetectionStats, Record, make_record, map_categories
from resnet.errors import DataError
from resnet.limits import MAX_BOXES_PER_IMAGE, MAX_IMAGE_SIDE

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
_EXPECTED = "a VOC annotation is an <annotation> with <object>s holding <name> and <bndbox> (xmin, ymin, xmax, ymax)"


def is_voc_folder(root: Path) -> bool:
    """A folder laid out as VOC (Annotations/ beside ImageSets/Main/)."""
    return (root / "Annotations").is_dir() and (root / "ImageSets" / "Main").is_dir()


class _Refused(Exception):
    pass


def _refuse(*_: object) -> None:
    raise _Refused


def parse_xml_safely(path: Path) -> ET.Element:
    """The XML's root element; DataError for unreadable or malformed files and for any DOCTYPE or entity."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    guard = expat.ParserCreate()
    guard.StartDoctypeDeclHandler = _refuse
    guard.EntityDeclHandler = _refuse
    guard.ExternalEntityRefHandler = _refuse
    try:
        guard.Parse(data, True)
        return ET.fromstring(data)
    except _Refused:
        raise DataError(f"{path}: XML with a DOCTYPE or entity declarations is refused; {_EXPECTED}") from None
    except (expat.ExpatError, ET.ParseError) as e:
        raise DataError(f"{path}: malformed XML ({e}); {_EXPECTED}") from None


def _number(node: ET.Element, tag: str, path: Path) -> float:
    """The finite number in ``<tag>``; NaN when the tag is absent (a box without it is dropped in cleaning)."""
    text = node.findtext(tag)
    if text is None:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or abs(value) > MAX_IMAGE_SIDE:
        raise DataError(f"{path}: <{tag}> is {text.strip()!r:.40}, not a pixel coordinate (a finite number up to "
                        f"{MAX_IMAGE_SIDE}); {_EXPECTED}")
    return value


def parse_annotation(path: Path) -> tuple[str | None, tuple[int, int] | None, list[tuple[str, list[float], bool]]]:
    """(file name, (width, height) or None, [(name, xyxy pixel edges, difficult), ...]) of one VOC XML."""
    root = parse_xml_safely(path)
    if root.tag != "annotation":
        raise DataError(f"{path}: root element is <{root.tag}>; {_EXPECTED}")
    objects = []
    for obj in root.iter("object"):
        name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        if not name or box is None:
            raise DataError(f"{path}: an <object> lacks <name> or <bndbox>; {_EXPECTED}")
        x0, y0, x1, y1 = (_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        objects.append((name, [x0 - 1.0, y0 - 1.0, x1, y1], difficult))
        if len(objects) > MAX_BOXES_PER_IMAGE:
            raise DataError(f"{path}: more than {MAX_BOXES_PER_IMAGE} objects on one image (training compares every "
                            "box with every anchor); split the image or filter its objects")
    size = root.find("size")
    width, height = (_number(size, t, path) if size is not None else 0.0 for t in ("width", "height"))
    dims = (int(width), int(height)) if width > 0 and height > 0 else None
    return root.findtext("filename"), dims, objects


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError, SyntaxError):
        return None  # missing or unreadable: the bad_images policy deals with it when the file is read


def read_voc(
    root: Path, split: str, stats: DetectionStats, categories: list[Category] | None = None
) -> tuple[list[Record], list[Category]]:
    """Records of the images listed in ``ImageSets/Main/{split}.txt`` and the categories."""
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: split file not found; a VOC folder lists each split's image ids there")
    try:
        text = listing.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{listing}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); a split file "
                        "lists one image id per line: re-save it as UTF-8") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    odd = next((i for i in ids if "\x00" in i or "/" in i or not i.isprintable()), None)
    if odd is not None:
        raise DataError(f"{listing}: {odd!r:.60} is not an image id (a file name without a folder); a split file "
                        "lists one image id per line")
    parsed = [(i, parse_annotation(root / "Annotations" / f"{i}.xml")) for i in ids]
    names = sorted({obj[0] for _, (_, _, objs) in parsed for obj in objs})
    order = list(VOC_CLASSES) if set(names) <= set(VOC_CLASSES) else names
    found = [{"id": k + 1, "name": n} for k, n in enumerate(order)]
    cats, label = map_categories(found, categories, "name", str(listing))
    records = []
    for position, (voc_id, (fname, dims, objs)) in enumerate(parsed, start=1):
        file = root / "JPEGImages" / (fname or f"{voc_id}.jpg")
        dims = dims or _image_size(file) or (0, 0)
        records.append(make_record(
            position, dims, np.array([o[1] for o in objs], np.float64).reshape(-1, 4),
            np.array([label[o[0]] for o in objs], np.int64), stats,
            difficult=np.array([o[2] for o in objs], bool), file=str(file), name=voc_id,
        ))  # fmt: skip
    return records, cats
