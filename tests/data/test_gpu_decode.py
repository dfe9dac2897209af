"""Device-side JPEG decoding of ImageNet training batches (resnet.data.gpu_decode), run here with torchvision's
CPU decoder: same draws and labels as the worker-decoded path, pixels within decoder/rounding noise, and every
file nvJPEG should not see (PNG, CMYK, truncated, not an image) handled like the CPU path handles it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet.bench.pipeline import make_jpeg_folder
from resnet.data.gpu_decode import _decode_all, collate_encoded
from resnet.data.imagefolder import (
    BadImageLog,
    BadSample,
    EncodedItem,
    FolderTrainSet,
    TrainItem,
    jpeg_size,
    scan_split,
)
from resnet.data.streams import FolderTrainStream
from resnet.data.transforms import Normalizer
from resnet.errors import DataError

CPU = torch.device("cpu")


def _stream(root: Path, encoded: bool, policy: str = "fail", batch: int = 8) -> FolderTrainStream:
    _, samples = scan_split(root)
    dataset = FolderTrainSet(samples, 64, 72, 128, lighting_std=0.1, seed=3, encoded=encoded)
    return FolderTrainStream(dataset, Normalizer(torch.full((3, 1, 1), 0.5)), batch, CPU, seed=5,
                             bad=BadImageLog(policy))


def _cmyk(path: Path) -> Path:
    arr = np.random.default_rng(1).integers(0, 256, (90, 120, 4), dtype=np.uint8)
    Image.fromarray(arr, "CMYK").save(path)
    return path


def test_device_decoded_batches_match_the_worker_decoded_ones(tmp_path):
    root = make_jpeg_folder(tmp_path, 16, (150, 110), classes=2)
    Image.open(root / "class_0" / "img_000000.jpg").save(root / "class_0" / "as_png.png")
    _cmyk(root / "class_1" / "cmyk.jpg")
    cpu, dev = _stream(root, False), _stream(root, True)
    for _ in range(4):  # two epochs of 18 images in batches of 8
        (xc, yc), (xd, yd) = cpu.next(), dev.next()
        assert torch.equal(yc, yd) and xd.shape == xc.shape == (8, 3, 64, 64) and xd.dtype == torch.float32
        diff = (xd - xc).abs() * 255  # in 8-bit steps
        assert diff.mean() < 0.5 and diff.max() < 1.01, (diff.mean(), diff.max())  # uint8 rounding only


def test_only_complete_rgb_or_grey_jpegs_are_left_encoded(tmp_path):
    root = make_jpeg_folder(tmp_path / "ok", 2, (50, 40), classes=1)
    jpg = next(root.rglob("*.jpg"))
    assert jpeg_size(str(jpg)) == (40, 50)
    grey = tmp_path / "grey.jpg"
    Image.open(jpg).convert("L").save(grey)
    assert jpeg_size(str(grey)) == (40, 50)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.read_bytes()[:-100])
    png = tmp_path / "x.png"
    Image.open(jpg).save(png)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    for path in (cut, png, _cmyk(tmp_path / "cmyk.jpg"), fake):
        assert jpeg_size(str(path)) is None, path
    items = FolderTrainSet([(str(jpg), 0), (str(png), 1)], 32, 40, 48, 0.1, seed=0, encoded=True)
    assert isinstance(items[(0, 0)], EncodedItem) and isinstance(items[(1, 0)], TrainItem)


def test_broken_files_follow_the_bad_images_policy_on_the_device_path(tmp_path):
    root = make_jpeg_folder(tmp_path, 6, (80, 60), classes=1)
    good = next(root.rglob("*.jpg")).read_bytes()
    (root / "class_0" / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        for _ in range(3):
            _stream(root, True, batch=7).next()
    stream = _stream(root, True, policy="skip", batch=7)
    x, y = stream.next()
    assert len(y) == 6 and x.shape[0] == 6 and stream.skipped == 1


def test_a_batch_the_device_decoder_refuses_is_decoded_file_by_file_and_the_broken_file_named(tmp_path):
    ok, junk = tmp_path / "a.jpg", tmp_path / "b.jpg"
    ok.write_bytes(_jpeg_bytes())
    junk.write_bytes(bytes([0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9]))
    files = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p in (ok, junk)]
    out = _decode_all(files, [str(ok), str(junk)], CPU)
    assert isinstance(out[0], torch.Tensor) and out[0].shape == (3, 30, 40)
    assert isinstance(out[1], BadSample) and out[1].path == str(junk) and "b.jpg" in out[1].reason


def test_a_jpeg_the_device_decoder_cannot_read_is_decoded_on_the_cpu_instead(tmp_path, monkeypatch):
    from resnet.data import gpu_decode

    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg_bytes())
    data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))

    def refuse(*args, **kwargs):
        raise RuntimeError("nvjpeg: unsupported JPEG")

    monkeypatch.setattr(gpu_decode, "decode_jpeg", refuse)
    (image,) = _decode_all([data], [str(path)], CPU)
    assert isinstance(image, torch.Tensor) and image.shape == (3, 30, 40) and image.dtype == torch.uint8


def test_a_file_only_the_decoder_finds_broken_drops_its_label_and_offsets_with_it(tmp_path):
    from resnet.data.gpu_decode import decode_batch
    from resnet.data.transforms import ScaleCrop

    ok = tmp_path / "a.jpg"
    ok.write_bytes(_jpeg_bytes())
    data = torch.from_numpy(np.fromfile(ok, dtype=np.uint8))
    junk = torch.tensor([0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9], dtype=torch.uint8)
    crop = ScaleCrop(side=30, height=30, width=40, top=0, left=4, flip=False)
    items = [EncodedItem(d, crop, torch.full((3,), float(i)), label, path)
             for i, (d, label, path) in enumerate(((data, 3, str(ok)), (junk, 5, "junk.jpg"), (data, 7, str(ok))))]
    log = BadImageLog("skip")
    x, offsets, labels = decode_batch(collate_encoded(items), 16, CPU, log)
    assert x.shape == (2, 3, 16, 16) and labels.tolist() == [3, 7] and offsets[:, 0].tolist() == [0.0, 2.0]
    assert log.skipped == 1 and log.files == {"junk.jpg"}


def test_collate_keeps_batch_order_across_encoded_and_worker_decoded_samples():
    enc = EncodedItem(torch.arange(5, dtype=torch.uint8), None, torch.ones(3), 7, "a.jpg")  # type: ignore[arg-type]
    dec = TrainItem(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(3), 2)
    batch = collate_encoded([dec, enc, BadSample("c.jpg", "broken"), enc])
    assert batch.encoded.tolist() == [False, True, True] and batch.labels.tolist() == [2, 7, 7]
    assert batch.lengths == [5, 5] and batch.data.numel() == 10 and batch.decoded.shape == (1, 3, 4, 4)
    assert [b.path for b in batch.bad] == ["c.jpg"]


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_batches_match_the_worker_decoded_ones(tmp_path):
    root = make_jpeg_folder(tmp_path, 16, (150, 110), classes=2)
    _, samples = scan_split(root)
    streams = [FolderTrainStream(FolderTrainSet(samples, 64, 72, 128, 0.1, seed=3, encoded=enc),
                                 Normalizer(torch.full((3, 1, 1), 0.5)), 8, torch.device(dev), seed=5)
               for enc, dev in ((False, "cpu"), (True, "cuda"))]
    for _ in range(4):
        (xc, yc), (xg, yg) = (s.next() for s in streams)
        assert xg.is_cuda and torch.equal(yc, yg.cpu())
        diff = (xg.cpu() - xc).abs() * 255
        assert diff.mean() < 2.0 and diff.max() < 48, (diff.mean(), diff.max())  # nvJPEG's IDCT is not libjpeg's


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_never_writes_into_memory_the_training_stream_has_yet_to_read():
    """pytorch/vision#9606's race, through our decode: blocks freed on the training stream while kernels queued
    there (behind a long one) still have to read them must not be handed to the decoder."""
    import io

    cuda = torch.device("cuda")
    rng = np.random.default_rng(1)
    files = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buf, "JPEG")
        files.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    _decode_all(files, ["x.jpg"] * 8, cuda)  # the decoder's set-up, and its output size in the allocator
    corrupted = 0
    for _ in range(10):
        held = [torch.full((3, 375, 500), 7, dtype=torch.uint8, device=cuda) for _ in range(8)]
        torch.cuda.synchronize()
        torch.cuda._sleep(100_000_000)  # keeps the reads below queued while the host decodes
        sums = [t.sum(dtype=torch.int64) for t in held]
        del held
        images = _decode_all(files, ["x.jpg"] * 8, cuda)
        torch.cuda.synchronize()
        corrupted += sum(int(s) != 7 * 3 * 375 * 500 for s in sums)
        assert all(isinstance(im, torch.Tensor) and im.shape == (3, 375, 500) for im in images)
    assert corrupted == 0
