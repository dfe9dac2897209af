"""BatchNorm folding for inference (resnet.engine.inference.fold_batchnorm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet import create_model
from resnet.engine.inference import fold_batchnorm


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
