"""BatchNorm folding for inference (resnet.inference.fold_batchnorm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet import create_model
from resnet.inference import fold_batchnorm


def _with_random_statistics(model: nn.Module) -> nn.Module:
    """Fresh BN layers are the identity map; random statistics make folding actually change the weights."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize(("name", "size", "bn_left"), [("resnet20", 32, 0), ("resnet18", 64, 0),
                                                        ("resnet50", 64, 0), ("preact_resnet110", 32, 55)])
def test_folded_net_computes_the_same_function_without_bn_after_convolutions(name, size, bn_left):
    torch.manual_seed(0)
    model = _with_random_statistics(create_model(name))
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == bn_left  # pre-act BN precedes its conv
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > bn_left  # the original is untouched
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_folding_a_model_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(create_model("resnet20"))


def test_prepared_inference_net_is_nhwc_without_bn_and_computes_the_same_function():
    from resnet.inference import prepare_inference

    torch.manual_seed(0)
    model = _with_random_statistics(create_model("resnet18"))
    fast = prepare_inference(model)
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_cpu_compiled_inference_freezes_the_weights_into_the_program():
    from resnet.inference import compile_for_inference, prepare_inference

    torch.manual_seed(0)
    model = prepare_inference(_with_random_statistics(create_model("resnet20")))
    run = compile_for_inference(model, torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = model(x), run(x)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        model.fc.weight.zero_()  # frozen: the compiled program holds the weights as constants
        assert torch.equal(run(x), got)
        assert not torch.allclose(model(x), got)


@pytest.mark.parametrize("torchvision_norm", [False, True])
def test_predict_sees_the_centre_view_resnet_eval_takes(tmp_path, torchvision_norm):
    from PIL import Image

    from resnet.data.evaluation import FolderEvalLoader
    from resnet.data.imagefolder import decode_image_file
    from resnet.data.transforms import TORCHVISION_MEAN, TORCHVISION_STD, Normalizer
    from resnet.inference import InferenceInfo, preprocess

    g = torch.Generator().manual_seed(0)
    path = tmp_path / "photo.png"  # 333x500: the resize truncates the longer side; png keeps the pixels exact
    Image.fromarray(torch.randint(0, 256, (333, 500, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    size = 96
    if torchvision_norm:
        mean, norm = None, Normalizer(torch.tensor(TORCHVISION_MEAN).view(3, 1, 1),
                                      torch.tensor(TORCHVISION_STD).view(3, 1, 1))
    else:
        mean = torch.rand(3, size, size, generator=g)
        norm = Normalizer(mean)
    info = InferenceInfo(str(path), "resnet18", size, 3, ["a"], mean)
    loader = FolderEvalLoader([(str(path), 0)], norm, "center", (), size, 4, torch.device("cpu"))
    ((views, _),) = list(loader)
    torch.testing.assert_close(preprocess(decode_image_file(str(path)), info), views[0, 0], rtol=0, atol=0)
