"""``resnet bench pipeline``: the generated JPEG folder and the pipeline workload's record."""

from __future__ import annotations

from PIL import Image

from resnet.bench.pipeline import make_jpeg_folder


def test_bench_pipeline_on_a_generated_jpeg_folder(bench):
    record = bench.record(["pipeline", "--batch-size", "4", "--images", "8", "--image-size", "80x60",
                           "--input-size", "32", "--reference"])
    bench.check_figures(record, ["ours", "reference"])
    assert "FolderTrainStream" in record["results"][0]["setup"]


def test_generated_jpegs_are_readable_images_of_the_asked_size(tmp_path):
    root = make_jpeg_folder(tmp_path, count=6, size=(50, 40), classes=3)
    files = sorted(root.glob("class_*/*.jpg"))
    assert len(files) == 6 and len({f.parent for f in files}) == 3
    with Image.open(files[0]) as img:
        assert img.size == (50, 40) and img.mode == "RGB"
