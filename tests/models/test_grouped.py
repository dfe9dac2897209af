"""N nets as one grouped net: the same function, the same gradients and the same training as N separate nets.

Tolerances: a grouped convolution sums the same products as the member's own convolution, but the CPU kernels
block and order the sums differently, so one step agrees to float32 rounding (about 1e-6 relative), not bit for
bit. Training at the paper's lr 0.1 on small noisy batches is chaotic: in float32 such a 1e-7 difference grows to
1e-1 within a few dozen steps even between two runs of one net alone that differ only in summation order. So the
50-step comparison runs in float64, where rounding is 1e-16 and the same chaos leaves the runs within 1e-9 of
each other: any larger difference is a bug (a member's gradient scaled by 1.5, below, is off by 1e-2 and more).
"""

import pytest
import torch
import torch.nn.functional as F

import resnet
from resnet.errors import ModelError
from resnet.models.grouped import GroupedNet, member_state, stack

MEMBERS = 3


def _members(name: str = "resnet20", dtype: torch.dtype = torch.float32, **options) -> list[torch.nn.Module]:
    out = []
    for seed in range(MEMBERS):
        torch.manual_seed(seed)
        out.append(resnet.create_model(name, num_classes=10, **options).to(dtype))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), [("resnet20", {}), ("plain20", {}), ("resnet20", {"shortcut": "B"}),
                                               ("preact_resnet56", {})])
def test_grouped_net_computes_each_member_and_its_gradient(name, options):
    models = _members(name, **options)
    group = stack(models)
    x = torch.randn(6, MEMBERS, 3, 8, 8)
    y = torch.randint(0, 10, (6, MEMBERS))
    out = group(x)
    assert out.shape == (6, MEMBERS, 10)
    sum(F.cross_entropy(out[:, i], y[:, i]) for i in range(MEMBERS)).backward()
    grads = {k: p.grad for k, p in group.net.named_parameters()}
    for i, model in enumerate(models):
        alone = model(x[:, i])
        torch.testing.assert_close(out[:, i], alone, rtol=1e-5, atol=1e-5)
        F.cross_entropy(alone, y[:, i]).backward()
        for key, p in model.named_parameters():
            torch.testing.assert_close(grads[key].chunk(MEMBERS, 0)[i], p.grad, rtol=1e-4, atol=1e-5)
        # the BN running statistics moved per member as they did alone
        state = member_state(group, i)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)


def test_member_state_loads_into_a_single_net_strictly():
    models = _members()
    group = stack(models)
    fresh = resnet.create_model("resnet20", num_classes=10)
    fresh.load_state_dict(member_state(group, 1), strict=True)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(fresh.eval()(x), models[1].eval()(x))


def _stream(seed: int, steps: int, batch: int = 16):
    """Member ``seed``'s own data order: random images with a learnable label (the brightest channel)."""
    g = torch.Generator().manual_seed(100 + seed)
    for _ in range(steps):
        x = torch.randn(batch, 3, 8, 8, generator=g)
        x[:, 0] += 1.5 * torch.randn(batch, 1, 1, generator=g)
        y = (x.mean(dim=(2, 3)).argmax(1) + 3 * (x[:, 0].mean(dim=(1, 2)) > 0)).clamp_max(9)
        yield x.double(), y


def _sgd(params, lr: float = 0.1):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


def _train_group(models, steps: int, corrupt: bool = False):
    group = stack(models).train()
    opt = _sgd(group.parameters())
    losses = []
    for batches in zip(*[_stream(s, steps) for s in range(MEMBERS)], strict=True):
        x = torch.stack([b[0] for b in batches], 1)
        y = torch.stack([b[1] for b in batches], 1)
        out = group(x)
        per_member = torch.stack([F.cross_entropy(out[:, i], y[:, i]) for i in range(MEMBERS)])
        opt.zero_grad()
        per_member.sum().backward()
        if corrupt:  # a mutation the test must catch: member 1's gradient scaled
            for p in group.parameters():
                p.grad.chunk(MEMBERS, 0)[1].mul_(1.5)
        opt.step()
        losses.append(per_member.detach())
    return group, torch.stack(losses)


@pytest.mark.slow
def test_fifty_grouped_steps_match_each_member_trained_alone():
    steps = 50
    group, losses = _train_group(_members(dtype=torch.float64), steps)
    for i, model in enumerate(_members(dtype=torch.float64)):
        model.train()
        opt = _sgd(model.parameters())
        alone = []
        for x, y in _stream(i, steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            alone.append(loss.detach())
        torch.testing.assert_close(losses[:, i], torch.stack(alone), rtol=0, atol=1e-9)
        state = member_state(group, i)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=1e-9)
    assert losses[-1].mean() < losses[0].mean()  # they learned something


@pytest.mark.slow
def test_a_wrong_member_gradient_is_far_outside_the_tolerance():
    steps = 10
    good = member_state(_train_group(_members(dtype=torch.float64), steps)[0], 1)
    bad = member_state(_train_group(_members(dtype=torch.float64), steps, corrupt=True)[0], 1)
    assert max((good[k].double() - bad[k].double()).abs().max().item() for k in good) > 1e-2


def test_grouping_refuses_what_it_cannot_split():
    with pytest.raises(ModelError, match="cannot be grouped"):
        stack(_members(norm="gn"))
    group = GroupedNet(resnet.create_model("resnet20"), 2)
    with pytest.raises(ModelError, match="input has 3 members, the group 2"):
        group(torch.randn(1, 3, 3, 8, 8))
    with pytest.raises(ModelError, match="member 2 is not in 0..1"):
        member_state(group, 2)
