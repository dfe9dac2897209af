"""Decoding one image file: decompression bombs refused from the header, EXIF orientation applied, 16-bit and
32-bit pixels scaled (or refused) rather than clipped, GIF decoded, names printed escaped."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet.data.decode import decode_image_file, jpeg_size, try_decode
from resnet.data.imagefolder import BadSample, FolderEvalSet, FolderTrainSet
from resnet.errors import DataError


def png_of_zeros(path: Path, width: int, height: int, bit_depth: int = 8, rows_per_block: int = 100) -> Path:
    """A complete, valid greyscale PNG of ``width x height`` black pixels: a few hundred KB on disk for what
    decodes to gigabytes (a decompression bomb). Written fast: every block of rows compresses to the same bytes
    after a full flush, so one block is compressed and repeated, and the stream's checksum is computed apart."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    assert height % rows_per_block == 0
    rows = bytes((1 + width * bit_depth // 8) * rows_per_block)  # each row: filter byte 0, then zeros
    packer = zlib.compressobj(9)
    head = packer.compress(rows) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(rows) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.flush()[:-4]  # the final block without the checksum of the two blocks it saw
    checksum = 1
    for _ in range(height // rows_per_block):
        checksum = zlib.adler32(rows, checksum)
    idat = head + block * (height // rows_per_block - 1) + end + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_the_bomb_writer_makes_a_png_that_decodes_to_its_declared_size(tmp_path):
    small = png_of_zeros(tmp_path / "small.png", 300, 200)
    with Image.open(small) as img:
        pixels = np.asarray(img)
    assert pixels.shape == (200, 300) and not pixels.any()


# ------------------------------------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_a_13000x13000_png_of_a_few_hundred_kb_is_refused_from_its_header_before_decoding(tmp_path, bit_depth):
    bomb = png_of_zeros(tmp_path / "bomb.png", 13000, 13000, bit_depth)
    assert bomb.stat().st_size < 400_000

    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e:
            decode_image_file(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    message = str(e.value)
    assert str(bomb) in message and "13000x13000 (169.0 Mpixel)" in message and "data.max_pixels=40000000" in message
    assert "--max-pixels" in message and "\n" not in message
    assert peak < 50_000_000  # nothing near the 169 MB (8-bit) or 338 MB (16-bit) of pixels was allocated


def test_the_pixel_limit_is_a_setting_and_a_larger_image_is_a_bad_sample_for_the_policy(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((30, 40, 3), 9, np.uint8)).save(image)
    assert decode_image_file(image, max_pixels=1200).shape == (3, 30, 40)
    bad = try_decode(str(image), max_pixels=1199)
    assert isinstance(bad, BadSample) and "40x30" in bad.reason and "data.max_pixels=1199" in bad.reason
    assert decode_image_file(image, max_pixels=None).shape == (3, 30, 40)
    samples = [(str(image), 0)]
    assert isinstance(FolderEvalSet(samples, "center", 16, (16,), max_pixels=1000)[0], BadSample)
    assert not isinstance(FolderEvalSet(samples, "center", 16, (16,), max_pixels=2000)[0], BadSample)
    train = FolderTrainSet(samples, 16, 16, 20, 0.0, seed=0, max_pixels=1000)
    assert isinstance(train[0, 0], BadSample)


def test_the_gpu_path_applies_the_pixel_limit_from_the_jpeg_header(tmp_path):
    jpg = tmp_path / "a.jpg"
    Image.fromarray(np.full((30, 40, 3), 9, np.uint8)).save(jpg)
    samples = [(str(jpg), 0)]
    item = FolderTrainSet(samples, 16, 16, 20, 0.0, seed=0, encoded=True, max_pixels=1000)[0, 0]
    assert isinstance(item, BadSample) and "40x30" in item.reason
    item = FolderTrainSet(samples, 16, 16, 20, 0.0, seed=0, encoded=True, max_pixels=2000)[0, 0]
    assert not isinstance(item, BadSample)


# ---------------------------------------------------------------------------------------------- 16 and 32 bits


def test_16bit_pixels_round_to_8_bits_exactly_as_x_over_257(tmp_path):
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(levels).save(tmp_path / "all16.png")
    out = decode_image_file(tmp_path / "all16.png")
    want = np.clip(np.rint(levels / 257.0), 0, 255).astype(np.uint8)
    assert torch.equal(out[0], torch.from_numpy(want)) and torch.equal(out[0], out[2])


def test_16bit_images_are_converted_without_a_float64_copy(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65536, (1000, 1000), dtype=np.uint16)).save(tmp_path / "deep.png")
    decode_image_file(tmp_path / "deep.png")  # imports and caches warmed up
    tracemalloc.start()
    try:
        decode_image_file(tmp_path / "deep.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1000 * 1000  # a float64 copy and its rounding alone take 16 bytes per pixel


def test_float_pixels_on_0_1_are_scaled_to_8_bits_not_clipped(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32).repeat(3, axis=0)
    Image.fromarray(values, "F").save(tmp_path / "float.tif")
    out = decode_image_file(tmp_path / "float.tif")
    assert out[:, 0].tolist() == [[0, 64, 128, 255]] * 3


@pytest.mark.parametrize(
    ("mode", "values", "needle"),
    [
        ("F", [0.0, 300.0, 1000.0], "32-bit float pixels (0..1000) are not on [0, 1]"),
        ("F", [0.0, float("nan"), 1.0], "32-bit float pixels (non-finite values)"),
        ("I", [0, 70_000, 100_000], "32-bit integer pixels span 0..100000, beyond 16 bits"),
        ("I", [-5, 0, 200], "32-bit integer pixels span -5..200"),
    ],
)
def test_32bit_pixels_without_an_8bit_meaning_are_one_clear_error_not_clipped(tmp_path, mode, values, needle):
    dtype = np.float32 if mode == "F" else np.int32
    path = tmp_path / f"odd-{mode}.tif"
    Image.fromarray(np.array([values] * 2, dtype), mode).save(path)
    assert Image.open(path).mode == mode
    with pytest.raises(DataError) as e:
        decode_image_file(path)
    assert needle in str(e.value) and str(path) in str(e.value) and "convert the file" in str(e.value)


def test_32bit_integer_pixels_within_16_bits_are_scaled_like_16bit_ones(tmp_path):
    Image.fromarray(np.array([[0, 257 * 100, 65535]], np.int32), "I").save(tmp_path / "i32.tif")
    assert decode_image_file(tmp_path / "i32.tif")[0, 0].tolist() == [0, 100, 255]


# ------------------------------------------------------------------------------------------------ orientation


def _two_colour_jpeg(path: Path, orientation: int | None) -> Path:
    """40 wide, 20 high: red left half, blue right half; optionally with an EXIF Orientation tag."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


def test_exif_orientation_is_applied_as_a_viewer_shows_the_photo(tmp_path):
    plain = decode_image_file(_two_colour_jpeg(tmp_path / "plain.jpg", None))
    assert plain.shape == (3, 20, 40)
    # Orientation 6: the camera was turned a quarter clockwise; viewers rotate the stored pixels 90 degrees clockwise
    rotated = decode_image_file(_two_colour_jpeg(tmp_path / "rotated.jpg", 6))
    assert rotated.shape == (3, 40, 20)
    top, bottom = rotated[:, 5, 10].tolist(), rotated[:, 35, 10].tolist()
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top, blue below
    assert decode_image_file(_two_colour_jpeg(tmp_path / "upright.jpg", 1)).shape == (3, 20, 40)


def test_a_rotated_jpeg_is_not_sent_to_the_gpu_decoder_which_ignores_exif(tmp_path):
    assert jpeg_size(str(_two_colour_jpeg(tmp_path / "plain.jpg", 1))) == (20, 40)
    assert jpeg_size(str(_two_colour_jpeg(tmp_path / "rotated.jpg", 6))) is None


# --------------------------------------------------------------------------------------------- GIF, odd names


def test_gif_files_decode_to_their_first_frame(tmp_path):
    frames = [Image.new("P", (12, 10), i) for i in (3, 7)]
    for i, frame in enumerate(frames):
        frame.putpalette([0, 0, 0] * 3 + [200, 100, 50] + [0, 0, 0] * 3 + [10, 20, 30] + [0, 0, 0] * 248)
        frames[i] = frame
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out = decode_image_file(tmp_path / "anim.gif")
    assert out.shape == (3, 10, 12) and out[:, 0, 0].tolist() == [200, 100, 50]


def test_a_file_name_with_escape_codes_and_a_newline_is_printed_escaped(tmp_path):
    bad = tmp_path / "x\x1b[2J\nname.jpg"
    bad.write_text("not an image")
    with pytest.raises(DataError) as e:
        decode_image_file(bad)
    message = str(e.value)
    assert "\x1b" not in message and "\n" not in message and "\\x1b[2J\\nname.jpg" in message
