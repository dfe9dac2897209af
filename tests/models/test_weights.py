"""Safetensors weights files: round trip from the file alone, metadata, extras, and one-line errors."""

import json
from pathlib import Path

import pytest
import torch

import resnet
from resnet.errors import WeightsError
from resnet.models.weights import ARCH_KEY, OPTIONS_KEY, PREPROCESS_KEY, load_weights, read_weights


class WritesMarker:
    """A pickle payload that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def trained_like(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = resnet.create_model(name, **options)
    model.train()
    with torch.no_grad():  # a few batches move the BN running statistics off their defaults
        for _ in range(2):
            model(torch.randn(4, model.options["in_chans"], 32, 32))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options"),
    [("resnet20", {}), ("preact_resnet164", {"norm": "gn", "num_classes": 100}), ("resnet50", {"stem": "cifar"}),
     ("plain20", {"norm": "brn", "in_chans": 1, "shortcut": None})],
)
def test_safetensors_round_trip_rebuilds_the_same_model_from_the_file_alone(tmp_path, name, options):
    model = trained_like(name, **options)
    path = tmp_path / "m.safetensors"
    resnet.save_weights(model, path)
    loaded = resnet.load_model(path)
    assert loaded.arch == name and loaded.options == model.options and not loaded.training
    x = torch.randn(2, model.options["in_chans"], 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
def test_metadata_and_extra_tensors_are_stored_but_extras_never_enter_the_model(tmp_path):
    model = trained_like("resnet20")
    path = tmp_path / "m.safetensors"
    mean = torch.rand(3, 32, 32)
    names = [f"class {i}" for i in range(10)]
    resnet.save_weights(model, path, metadata={"classes": json.dumps(names)}, extra={"input_mean": mean})
    state, metadata, extra = read_weights(path)
    assert metadata[ARCH_KEY] == "resnet20" and json.loads(metadata[OPTIONS_KEY]) == model.options
    assert json.loads(metadata["classes"]) == names
    assert torch.equal(extra["input_mean"], mean) and not any(k.startswith("extra.") for k in state)
    resnet.load_model(path)  # strict load still succeeds with the extra tensor in the file
    assert not (tmp_path / ".m.safetensors.tmp").exists()


def test_metadata_must_be_strings_and_cannot_override_the_arch(tmp_path):
    model = resnet.create_model("resnet20")
    with pytest.raises(WeightsError, match="reserved"):
        resnet.save_weights(model, tmp_path / "m.safetensors", metadata={ARCH_KEY: "resnet56"})
    with pytest.raises(WeightsError, match="str to str"):
        resnet.save_weights(model, tmp_path / "m.safetensors", metadata={"epoch": 3})


def test_missing_file_raises_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        resnet.load_model(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        resnet.from_torchvision(tmp_path / "nope.pth", "resnet18")


def test_truncated_safetensors_raises_weights_error(tmp_path):
    path = tmp_path / "m.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as err:
        resnet.load_model(path)
    assert "\n" not in str(err.value)


def test_garbage_file_raises_weights_error(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        resnet.load_model(path)


def test_weights_for_another_architecture_name_the_differing_keys(tmp_path):
    path = tmp_path / "m.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), path)
    with pytest.raises(WeightsError, match=r"does not fit resnet32: missing: layer1\.3\.conv1\.weight"):
        load_weights(resnet.create_model("resnet32"), path)
    with pytest.raises(WeightsError, match=r"num_classes.*fc\.weight \(10, 64\) vs \(100, 64\)"):
        load_weights(resnet.create_model("resnet20", num_classes=100), path)


def test_file_whose_metadata_disagrees_with_its_tensors_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), path)
    state, metadata, _ = read_weights(path)
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={**metadata, ARCH_KEY: "resnet56"})
    with pytest.raises(WeightsError, match="does not fit resnet56"):
        resnet.load_model(path)


def test_safetensors_without_arch_metadata_points_to_resnet_import(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match="no 'resnet.arch' metadata.*convert foreign weights with `resnet import"):
        resnet.load_model(path)


def test_malicious_pickle_is_refused_as_unsafe_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": WritesMarker(marker)}, path)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refused as unsafe: its pickle calls getattr, which could run code") as err:
        resnet.from_torchvision(path, "resnet18")
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
    assert not marker.exists()


def test_training_checkpoint_holding_objects_names_the_object_and_the_fix(tmp_path):
    import argparse

    path = tmp_path / "checkpoint.pth"
    torch.save({"model": resnet.create_model("resnet18").state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(WeightsError, match=r"calls argparse.Namespace, .*save just the state dict"):
        resnet.from_torchvision(path, "resnet18")


def test_corrupt_pth_is_not_called_unsafe(tmp_path):
    path = tmp_path / "bad.pth"
    for garbage in (b"\x00" * 64, bytes(range(200))):
        path.write_bytes(garbage)
        with pytest.raises(WeightsError, match="refused: not a file torch.load.weights_only=True. reads") as err:
            resnet.from_torchvision(path, "resnet18")
        assert "unsafe" not in str(err.value) and "\n" not in str(err.value)


def test_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match=".pth, .pt, .safetensors"):
        resnet.from_torchvision(path, "resnet18")


def test_load_model_moves_to_the_requested_device(tmp_path):
    path = tmp_path / "m.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), path)
    assert next(resnet.load_model(path, device="cpu").parameters()).device.type == "cpu"


def test_save_weights_unwraps_compiled_and_data_parallel_models(tmp_path):
    model = resnet.create_model("resnet20")
    wrapper = torch.nn.Module()
    wrapper.module = model  # the attribute DistributedDataParallel uses
    path = tmp_path / "m.safetensors"
    resnet.save_weights(wrapper, path)
    assert resnet.load_model(path).arch == "resnet20"


def test_save_into_a_missing_folder_is_one_weights_error_and_leaves_no_temp_file(tmp_path):
    with pytest.raises(WeightsError, match="folder .*missing.* does not exist"):
        resnet.save_weights(resnet.create_model("resnet20"), tmp_path / "missing" / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- what is saved describes the model
@pytest.mark.slow
def test_saved_options_read_the_class_and_channel_counts_from_the_modules(tmp_path):
    torch.manual_seed(0)
    model = resnet.create_model("resnet18").eval()
    model.fc = torch.nn.Linear(512, 3)  # a new head, as in fine-tuning
    model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    resnet.save_weights(model, tmp_path / "m.safetensors")
    assert json.loads(read_weights(tmp_path / "m.safetensors")[1][OPTIONS_KEY])["num_classes"] == 3
    loaded = resnet.load_model(tmp_path / "m.safetensors")
    assert loaded.fc.out_features == 3 and loaded.options["in_chans"] == 1
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_model_whose_modules_no_longer_match_its_architecture_is_refused_before_writing(tmp_path):
    model = resnet.create_model("resnet20")
    model.fc = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(64, 3))
    with pytest.raises(WeightsError, match=r"cannot save resnet20: its modules no longer match.*unexpected: fc\.1\."):
        resnet.save_weights(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------- preprocessing record
IMAGENET_RECORD = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": [3, 224, 224],
                   "crop_pct": 0.875, "interpolation": "bicubic", "crop_mode": "center"}


@pytest.mark.slow
def test_preprocess_record_is_saved_read_back_and_attached_as_pretrained_cfg(tmp_path):
    path = tmp_path / "m.safetensors"
    resnet.save_weights(resnet.create_model("resnet18"), path, preprocess=IMAGENET_RECORD)
    assert json.loads(read_weights(path)[1][PREPROCESS_KEY]) == IMAGENET_RECORD
    assert resnet.load_model(path).pretrained_cfg == IMAGENET_RECORD
    cfg = resnet.data_config(path)
    assert cfg["input_size"] == (3, 224, 224) and cfg["mean"] == (0.485, 0.456, 0.406)
    assert cfg["interpolation"] == "bicubic" and cfg == resnet.data_config(resnet.load_model(path))


def test_per_pixel_mean_of_our_runs_is_recorded_and_gives_the_paper_preprocessing(tmp_path):
    path = tmp_path / "m.safetensors"
    mean = torch.rand(3, 32, 32)
    resnet.save_weights(resnet.create_model("resnet20"), path, metadata={"input_size": "32"},
                        extra={"input_mean": mean})
    cfg = resnet.data_config(path)
    assert cfg["mean"] == "per_pixel" and cfg["std"] is None and cfg["input_size"] == (3, 32, 32)
    assert torch.equal(cfg["mean_image"], mean)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    expected = image.float() / 255 - mean  # Sec. 4.2: "the per-pixel mean subtracted", nothing else
    torch.testing.assert_close(resnet.transforms_for(cfg)(image), expected, rtol=0, atol=1e-6)

    again = tmp_path / "again.safetensors"  # a loaded model saves its record and mean image back
    resnet.save_weights(resnet.load_model(path), again)
    assert torch.equal(read_weights(again)[2]["input_mean"], mean) and resnet.data_config(again)["mean"] == "per_pixel"


def test_files_without_a_preprocess_record_still_load_with_what_eval_assumes(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), path)
    state, metadata, _ = read_weights(path)
    save_file(state, str(path), metadata={k: v for k, v in metadata.items() if k != PREPROCESS_KEY})
    model = resnet.load_model(path)
    assert model.pretrained_cfg["input_size"] == [3, 32, 32] and model.pretrained_cfg["crop_mode"] == "squash"
    assert resnet.data_config(path)["mean"] == (0.485, 0.456, 0.406)


@pytest.mark.parametrize(("change", "field"), [({"crop_pct": 2.0}, "crop_pct"), ({"mean": [0.5]}, "mean"),
                                                ({"interpolation": "cubic"}, "interpolation"),
                                                ({"mean": "per_pixel"}, "mean")])
def test_save_weights_refuses_a_preprocess_record_it_could_not_read_back(tmp_path, change, field):
    with pytest.raises(WeightsError, match=f"cannot save .*'resnet.preprocess.{field}'"):
        resnet.save_weights(resnet.create_model("resnet18"), tmp_path / "m.safetensors",
                            preprocess={**IMAGENET_RECORD, **change})


def test_models_of_other_families_are_saved_with_their_own_options(tmp_path):
    """A net the registry does not know (a detector around one of ours) rebuilds itself: its options are kept."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    model.arch, model.options = "detector_of_resnet18", {"backbone": "resnet18", "num_classes": 3}
    resnet.save_weights(model, tmp_path / "d.safetensors")
    assert json.loads(read_weights(tmp_path / "d.safetensors")[1][OPTIONS_KEY]) == model.options


@pytest.mark.slow
def test_headless_model_round_trips(tmp_path):
    """timm's num_classes=0: fc is an Identity, the net returns pooled features; the file says so."""
    torch.manual_seed(0)
    model = resnet.create_model("resnet20").eval()
    model.fc = torch.nn.Identity()
    resnet.save_weights(model, tmp_path / "m.safetensors")
    loaded = resnet.load_model(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded(x).shape == (2, 64)
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
