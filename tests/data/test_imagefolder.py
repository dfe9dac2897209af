"""Image folders on tiny trees of real JPEG/PNG files: decoding to RGB, bad-file policy, layout errors, loaders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet.config import DataCfg
from resnet.data.imagefolder import decode_image_file, scan_image_folder
from resnet.data.loaders import build_data
from resnet.errors import ConfigError, DataError


def _rgb(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_tree(root: Path, per_class: int = 4, classes: tuple[str, ...] = ("cat", "dog", "emu")) -> Path:
    for split, n in (("train", per_class), ("val", 2)):
        for c, name in enumerate(classes):
            for i in range(n):
                ext = "jpg" if i % 2 else "png"
                _rgb(root / split / name / f"{i}.{ext}", (36 + 4 * i, 32 + c), seed=100 * c + i)
    return root


def _bad_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("this is not a JPEG\n")
    good = _rgb(folder / "full.jpg", (64, 64), seed=7)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    return [empty, text, truncated]


# ------------------------------------------------------------------------------------------------ decoding


def test_grayscale_rgba_palette_cmyk_and_16bit_files_are_converted_to_rgb_uint8(tmp_path: Path) -> None:
    grey = np.full((6, 5), 77, np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((6, 5, 3), (200, 100, 50), np.uint8)).convert("P", palette=Image.ADAPTIVE).save(
        tmp_path / "palette.png"
    )
    Image.new("CMYK", (5, 6), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((6, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.full((6, 5), 257 * 100, np.uint16)).save(tmp_path / "deep100.png")
    Image.new("LA", (5, 6), (90, 10)).save(tmp_path / "la.png")
    out = {p.stem: decode_image_file(p) for p in sorted(tmp_path.iterdir())}
    for name, x in out.items():
        assert x.shape == (3, 6, 5) and x.dtype == torch.uint8, name
    assert (out["grey"] == 77).all() and (out["la"] == 90).all()
    assert out["rgba"][:, 0, 0].tolist() == [10, 20, 30]
    assert out["palette"][:, 0, 0].tolist() == [200, 100, 50]
    assert (out["cmyk"] >= 250).all()  # no ink = white
    assert (out["deep"] == 255).all() and (out["deep100"] == 100).all()  # rescaled, not clipped


@pytest.mark.parametrize("which", [0, 1, 2])
def test_unreadable_files_raise_a_data_error_naming_the_file(tmp_path: Path, which: int) -> None:
    bad = _bad_files(tmp_path)[which]
    with pytest.raises(DataError) as e:
        decode_image_file(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------- layout


def test_scan_finds_sorted_classes_and_maps_val_to_the_training_indices(tmp_path: Path) -> None:
    make_tree(tmp_path)
    index = scan_image_folder(tmp_path)
    assert index.classes == ["cat", "dog", "emu"]
    assert len(index.train) == 12 and len(index.val) == 6
    assert {label for _, label in index.val} == {0, 1, 2}
    assert all(Path(p).parent.name == index.classes[y] for p, y in index.train + index.val)


@pytest.mark.parametrize(
    ("breakage", "expect"),
    [
        ("no_root", "dataset folder not found"),
        ("no_val", "val: folder not found"),
        ("no_train", "train: folder not found"),
        ("empty_class", "dog: class folder holds no images"),
        ("no_classes", "no class folders"),
        ("val_unknown_class", "not among the training classes"),
    ],
)
def test_broken_layouts_are_data_errors_with_the_path_and_fix(tmp_path: Path, breakage: str, expect: str) -> None:
    import shutil

    root = make_tree(tmp_path / "ds")
    if breakage == "no_root":
        root = tmp_path / "missing"
    elif breakage in ("no_val", "no_train"):
        shutil.rmtree(root / breakage[3:])
    elif breakage == "empty_class":
        shutil.rmtree(root / "train" / "dog")
        (root / "train" / "dog").mkdir()
        (root / "train" / "dog" / "readme.txt").write_text("x")
    elif breakage == "no_classes":
        shutil.rmtree(root / "val")
        (root / "val").mkdir()
    elif breakage == "val_unknown_class":
        _rgb(root / "val" / "yak" / "0.png")
    with pytest.raises(DataError, match=expect) as e:
        scan_image_folder(root)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_imagefolder_without_data_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        DataCfg(dataset="imagefolder")


# -------------------------------------------------------------------------------------------------- loaders


def _cfg(root: Path, **kw: object) -> DataCfg:
    base = dict(
        dataset="imagefolder",
        data=str(root),
        val_split=0,
        crop_size=16,
        scale_min=16,
        scale_max=24,
        workers=0,
        scales=(224, 336),
    )
    base.update(kw)
    return DataCfg(**base)  # type: ignore[arg-type]


def test_imagefolder_bundle_trains_and_evaluates_with_the_paper_transforms(tmp_path: Path) -> None:
    make_tree(tmp_path)
    bundle = build_data(_cfg(tmp_path, protocol="10crop"), batch_size=4, device="cpu", seed=0, eval_batch_size=20)
    assert bundle.num_classes == 3 and bundle.classes == ["cat", "dog", "emu"] and bundle.input_size == 16
    assert bundle.mean.shape == (3, 16, 16) and bundle.num_train == 12 and bundle.test is None
    x, y = bundle.train.next()
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.shape == (4,)
    batches = list(bundle.eval)
    assert len(batches) == len(bundle.eval) == 3 and bundle.eval.num_samples == 6  # 20 views // 10 = 2 images
    assert batches[0][0].shape == (2, 10, 3, 16, 16)
    multi = build_data(_cfg(tmp_path, protocol="multiscale"), batch_size=4, device="cpu", seed=0)
    groups, _ = next(iter(multi.eval))
    assert [g.shape[:3] for g in groups] == [(1, 1, 3)] * 2  # one image per batch: each keeps its aspect ratio
    assert min(groups[0].shape[-2:]) == 16 and min(groups[1].shape[-2:]) == 24  # 224, 336 scaled by 16/224


def test_imagefolder_val_split_holds_out_training_images_and_tests_on_val(tmp_path: Path) -> None:
    make_tree(tmp_path)
    bundle = build_data(_cfg(tmp_path, val_split=3), batch_size=3, device="cpu", seed=0)
    assert bundle.num_train == 9 and bundle.eval.num_samples == 3
    assert bundle.test is not None and bundle.test.num_samples == 6


def test_given_mean_skips_the_mean_pass_and_std_mode_uses_torchvision_constants(tmp_path: Path) -> None:
    make_tree(tmp_path)
    given = torch.full((3, 16, 16), 0.5)
    bundle = build_data(_cfg(tmp_path), batch_size=4, device="cpu", seed=0, mean=given)
    assert torch.equal(bundle.mean, given) and bundle.std is None
    tv = build_data(_cfg(tmp_path, normalize="imagenet"), batch_size=4, device="cpu", seed=0)
    assert tv.std is not None and tv.mean.shape == (3, 16, 16)
    assert abs(tv.mean[0, 0, 0].item() - 0.485) < 1e-6


def test_bad_images_fail_policy_stops_with_the_file_path(tmp_path: Path) -> None:
    make_tree(tmp_path)
    bad = _bad_files(tmp_path / "train" / "cat")
    with pytest.raises(DataError) as e:
        build_data(_cfg(tmp_path), batch_size=4, device="cpu", seed=0)
    assert any(str(p) in str(e.value) for p in bad) and "bad_images=skip" in str(e.value)


def test_bad_images_skip_policy_drops_logs_once_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_tree(tmp_path)
    bad = _bad_files(tmp_path / "train" / "cat") + _bad_files(tmp_path / "val" / "dog")
    caplog.set_level(logging.WARNING, logger="resnet.data")
    bundle = build_data(_cfg(tmp_path, bad_images="skip"), batch_size=3, device="cpu", seed=0)
    assert bundle.num_train == 15  # listed; dropped when met
    seen = 0
    for _ in range(bundle.train.batches_per_epoch):
        x, y = bundle.train.next()
        assert x.shape[0] == y.shape[0] <= 3
        seen += len(y)
    assert seen == 12
    assert sum(len(y) for _, y in bundle.eval) == 6
    assert bundle.bad_images.files == {str(p) for p in bad}
    assert bundle.bad_images.skipped == 9  # 3 in the mean pass, 3 in the training epoch, 3 in evaluation
    warned = [r for r in caplog.records if r.name == "resnet.data"]
    assert len(warned) == 6 and all("skipping unreadable image" in r.getMessage() for r in warned)


def test_folder_stream_resumes_bit_identically_and_matches_with_workers(tmp_path: Path) -> None:
    make_tree(tmp_path)
    cfg = _cfg(tmp_path)
    full = build_data(cfg, batch_size=4, device="cpu", seed=5).train
    ref = [full.next() for _ in range(5)]  # 3 batches per epoch: crosses into epoch 1
    resumed = build_data(cfg, batch_size=4, device="cpu", seed=5).train
    for _ in range(2):
        resumed.next()
    state = resumed.state_dict()
    assert state == {"epoch": 0, "position": 8}
    fresh = build_data(_cfg(tmp_path, workers=2), batch_size=4, device="cpu", seed=5).train
    fresh.load_state_dict(state)
    for want in ref[2:]:
        got = fresh.next()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert fresh.epoch == 1
