"""Every registered net runs forward and backward at its native input size with the right shapes.

ImageNet nets are fully convolutional up to the global pool, so 64x64 stands in for 224x224 here.
"""

import pytest
import torch

import resnet

SLOW = {"resnet1202", "preact_resnet1001"}


def params_for(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


@pytest.mark.slow
@pytest.mark.parametrize("name", [params_for(n) for n in resnet.list_models()])
def test_forward_backward_shapes_at_native_input(name):
    torch.manual_seed(0)
    model = resnet.create_model(name)
    size = 32 if model.family == "cifar" else 64
    x = torch.randn(2, 3, size, size, requires_grad=True)
    seen = []
    model.avgpool.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape))
    logits = model(x)
    features = torch.empty(seen[0])
    side = size // 32 if model.family == "imagenet" else 8  # total stride 32 (Table 1) or 4 (Sec. 4.2)
    assert features.shape == (2, model.num_features, side, side)
    assert logits.shape == (2, 1000 if model.family == "imagenet" else 10)
    logits.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert all(p.grad is not None for p in model.parameters())


def test_imagenet_net_at_224_gives_7x7_final_maps():
    model = resnet.create_model("resnet18").eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 512, 7, 7)


@pytest.mark.slow
def test_eval_mode_is_deterministic_and_batch_independent():
    model = resnet.create_model("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:2], model(x[:2]))
