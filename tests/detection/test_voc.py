"""PASCAL VOC folders: coordinates, difficult objects, category order, and refusal of unsafe or foreign XML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _detection_files import voc_xml, write_voc_set

from resnet.detection.sources import open_detection
from resnet.detection.voc import VOC_CLASSES
from resnet.errors import DataError


def test_one_based_inclusive_corners_become_pixel_edges_and_the_devkit_class_order_is_kept(voc_dir: Path) -> None:
    src = open_detection(voc_dir, "train")
    assert [c["name"] for c in src.categories] == list(VOC_CLASSES)
    dog, cat = VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("cat") + 1
    first = src.records[0]
    np.testing.assert_array_equal(first.boxes, [[0, 0, 10, 20], [19, 4, 40, 30]])  # xmin-1, ymin-1, xmax, ymax
    np.testing.assert_array_equal(first.labels, [dog, cat])
    assert first.difficult.tolist() == [False, True] and first.train_mask.tolist() == [True, False]
    assert (first.name, first.image_id, first.width, first.height) == ("000005", 1, 48, 32)
    assert Path(first.file) == voc_dir / "JPEGImages" / "000005.png"


def test_cleaning_counts_difficult_and_clipped_boxes(voc_dir: Path) -> None:
    src = open_detection(voc_dir, "train")
    np.testing.assert_array_equal(src.records[1].boxes, [[4, 4, 32, 12]])
    assert src.stats.as_dict() == {"images": 2, "boxes": 2, "clipped": 1, "dropped": 0, "negatives": 0,
                                   "difficult": 1, "crowd": 0, "missing": 0}  # fmt: skip
    val = open_detection(voc_dir, "val", categories=src.categories)
    assert val.stats.negatives == 1 and val.categories == src.categories


def test_other_class_names_are_numbered_in_sorted_order(tmp_path: Path) -> None:
    entries = {"train": [("a", 20, 20, [("zebra", [1, 1, 5, 5], 0), ("apple", [6, 6, 9, 9], 0)])]}
    src = open_detection(write_voc_set(tmp_path / "voc", entries), "train")
    assert src.categories == [{"id": 1, "name": "apple"}, {"id": 2, "name": "zebra"}]
    assert src.records[0].labels.tolist() == [2, 1]


def test_another_split_with_an_unknown_class_is_refused(voc_dir: Path) -> None:
    train = open_detection(voc_dir, "train")
    (voc_dir / "Annotations" / "000009.xml").write_text(voc_xml("000009.png", 32, 24, [("unicorn", [1, 1, 4, 4], 0)]))
    with pytest.raises(DataError, match=r"\['unicorn'\] are not among the 20 categories"):
        open_detection(voc_dir, "val", categories=train.categories)


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    "<annotation><filename>&lol2;</filename></annotation>"
)
EXTERNAL = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BILLION_LAUGHS, "DOCTYPE or entity declarations is refused"),
        (EXTERNAL, "DOCTYPE or entity declarations is refused"),
        ("<annotation><object>", "malformed XML"),
        ("<html><body/></html>", "root element is <html>"),
        ("<annotation><object><name>dog</name></object></annotation>", "lacks <name> or <bndbox>"),
        ("<annotation><object><name>dog</name><bndbox><xmin>one</xmin></bndbox></object></annotation>",
         "<xmin> is 'one', not a pixel coordinate"),
        ("<annotation><size><width>inf</width><height>9</height></size></annotation>",
         "<width> is 'inf', not a pixel coordinate"),
        pytest.param("<annotation>" + "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
                     "<ymax>2</ymax></bndbox></object>" * 1001 + "</annotation>", "more than 1000 objects on one image",
                     id="1001 objects"),
    ],
)  # fmt: skip
def test_unsafe_or_foreign_xml_is_one_error_naming_the_file(voc_dir: Path, text: str, message: str) -> None:
    xml = voc_dir / "Annotations" / "000007.xml"
    xml.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        open_detection(voc_dir, "train")
    assert str(xml) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_split_file_names_where_it_belongs(voc_dir: Path) -> None:
    with pytest.raises(DataError, match=r"ImageSets/Main/test\.txt: split file not found"):
        open_detection(voc_dir, "test")


def test_size_is_read_from_the_image_when_the_xml_has_none(voc_dir: Path) -> None:
    xml = voc_dir / "Annotations" / "000005.xml"
    xml.write_text("<annotation><filename>000005.png</filename></annotation>")
    first = open_detection(voc_dir, "train").records[0]
    assert (first.width, first.height) == (48, 32)


def test_a_split_file_that_is_not_utf8_is_one_error_naming_the_byte(voc_dir: Path) -> None:
    listing = voc_dir / "ImageSets" / "Main" / "train.txt"
    listing.write_bytes(listing.read_bytes() + "caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.txt: not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        open_detection(voc_dir, "train")
