"""Gradient checkpointing: the same gradients and the same normalization statistics as without it, less memory."""

import copy

import pytest
import torch
from torch import nn

import resnet
from resnet.bench.memory import saved_tensor_bytes


def one_step(model: nn.Module, x: torch.Tensor, checkpointing: bool) -> tuple[dict, dict, int]:
    """(gradients, buffers, unit forward calls) after one training forward+backward."""
    model.train().set_grad_checkpointing(checkpointing)
    calls = []
    hook = model.layer1[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model(x).logsumexp(1).mean().backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return grads, {n: b.clone() for n, b in model.named_buffers()}, len(calls)


def compare(name: str, size: int, batch: int = 2, **options) -> None:
    torch.manual_seed(0)
    plain = resnet.create_model(name, **options)
    checkpointed = copy.deepcopy(plain)
    x = torch.randn(batch, 3, size, size)
    grads, buffers, calls = one_step(plain, x, checkpointing=False)
    grads_ckpt, buffers_ckpt, calls_ckpt = one_step(checkpointed, x, checkpointing=True)
    assert (calls, calls_ckpt) == (1, 2)  # the unit really ran again in the backward pass
    for key, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[key], grad, rtol=1e-6, atol=1e-6, msg=key)
    for key, buffer in buffers.items():  # running stats and batch counters moved once, not twice
        torch.testing.assert_close(buffers_ckpt[key], buffer, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_checkpointed_resnet110_has_the_same_gradients_and_running_statistics():
    compare("resnet110", 32)


@pytest.mark.slow
def test_checkpointed_bottleneck_net_has_the_same_gradients_and_running_statistics():
    compare("resnet50", 64)


@pytest.mark.slow
def test_checkpointed_preact_bottleneck_net_has_the_same_gradients():
    compare("preact_resnet164", 16)


def test_batch_renorm_recompute_sees_the_statistics_of_the_first_forward():
    # Batch renormalization's output depends on the running statistics, which the forward itself updates:
    # a recompute that saw the updated ones would give other gradients.
    compare("resnet20", 32, batch=4, norm="brn")


def test_checkpointing_is_off_in_eval_and_without_autograd():
    model = resnet.create_model("resnet20")
    model.set_grad_checkpointing(True)
    calls = []
    model.layer1[0].register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()(x)
    model.eval()(x).sum().backward()
    assert len(calls) == 2


def test_features_only_module_checkpoints_too():
    features = resnet.create_model("resnet20", features_only=True).train()
    features.set_grad_checkpointing(True)
    calls = []
    features.layer2[0].register_forward_pre_hook(lambda *_: calls.append(1))
    sum(f.sum() for f in features(torch.randn(2, 3, 32, 32))).backward()
    assert len(calls) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet56", "preact_resnet164"])
def test_checkpointing_saves_fewer_bytes_for_backward(name):
    model = resnet.create_model(name).train()
    x = torch.randn(4, 3, 32, 32)
    without = saved_tensor_bytes(model, x)
    model.set_grad_checkpointing(True)
    assert saved_tensor_bytes(model, x) < without / 2
