"""Checkpoints: exact round trip, atomic writes, damaged files passed over, no pickle anywhere."""

import json

import pytest
import torch
from torch import nn

from resnet import create_model
from resnet.config import OptimCfg
from resnet.engine import checkpoint as ckpt
from resnet.engine.optim import build_optimizer, param_groups
from resnet.errors import WeightsError


def _model_and_opt():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8))
    opt = build_optimizer(model, OptimCfg(lr=0.1))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return model, opt


def _state(step, model, opt):
    return ckpt.Checkpoint(step=step, model=model.state_dict(), optimizer=opt.state_dict(),
                           extra={"data": {"epoch": 1, "position": 256}}, rng=ckpt.rng_state())


def test_checkpoint_round_trip_restores_model_optimizer_and_extra(tmp_path):
    model, opt = _model_and_opt()
    ckpt.save_checkpoint(tmp_path, _state(7, model, opt))
    back = ckpt.latest_checkpoint(tmp_path)
    assert back.step == 7 and back.extra["data"] == {"epoch": 1, "position": 256}
    for k, v in model.state_dict().items():
        assert torch.equal(back.model[k], v)
    model2, opt2 = _model_and_opt()
    opt2.load_state_dict(back.optimizer)
    for a, b in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model, opt = _model_and_opt()
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, _state(step, model, opt), keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000004.json", "ckpt-00000003.json"]
    assert not (tmp_path / "ckpt-00000001.safetensors").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "sidecar"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    model, opt = _model_and_opt()
    ckpt.save_checkpoint(tmp_path, _state(1, model, opt))
    ckpt.save_checkpoint(tmp_path, _state(2, model, opt))
    target = tmp_path / "ckpt-00000002.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    else:
        (tmp_path / "ckpt-00000002.json").write_text("{not json")
    with pytest.raises(WeightsError, match="ckpt-00000002"):
        ckpt.load_checkpoint(tmp_path / "ckpt-00000002.json")
    assert ckpt.latest_checkpoint(tmp_path).step == 1


def test_failed_write_leaves_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    model, opt = _model_and_opt()
    ckpt.save_checkpoint(tmp_path, _state(1, model, opt))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, _state(2, model, opt))
    assert ckpt.latest_checkpoint(tmp_path).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001.json", "ckpt-00000001.safetensors"]


def test_sidecar_is_plain_json_with_hash(tmp_path):
    model, opt = _model_and_opt()
    path = ckpt.save_checkpoint(tmp_path, _state(3, model, opt))
    side = json.loads(path.read_text())
    assert len(side["sha256"]) == 64 and side["step"] == 3


def test_weight_decay_exemptions_are_chosen_by_module_type_not_name():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Sequential(nn.Conv2d(4, 4, 1, bias=False),
                                                                         nn.BatchNorm2d(4)), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, OptimCfg(no_decay_norm_bias=True))
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["1.1.bias", "1.1.weight", "2.bias"]
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    assert len(param_groups(model, OptimCfg())) == 1


@pytest.mark.parametrize("norm", ["bn", "gn", "ln", "in", "frn", "brn"])
def test_every_norm_of_the_zoo_is_exempt_from_weight_decay_with_the_biases(norm):
    model = create_model("resnet20", norm=norm)
    decay, no_decay = param_groups(model, OptimCfg(no_decay_norm_bias=True))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    assert decayed == sorted(n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                             for n in [f"{n}.weight"])  # conv and fc weights only
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_channels_last_fused_sgd_resumed_from_a_checkpoint_matches_the_uninterrupted_run(tmp_path):
    """Checkpoints hold momentum contiguous (NCHW); a channels_last model resumed must get it back in NHWC, or fused
    SGD (which needs equal strides: CUDA raises, CPU walks them in different orders) updates wrongly."""
    from resnet import create_model
    from resnet.engine.optim import load_optimizer_state

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(3)]

    def fresh():
        torch.manual_seed(0)
        model = create_model("resnet20").to(memory_format=torch.channels_last)
        return model, build_optimizer(model, OptimCfg(lr=0.1), fused=True)

    def steps(model, opt, todo):
        for x, y in todo:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(memory_format=torch.channels_last)), y).backward()
            opt.step()

    model, opt = fresh()
    steps(model, opt, batches)
    cut, cut_opt = fresh()
    steps(cut, cut_opt, batches[:2])
    ckpt.save_checkpoint(tmp_path, _state(2, cut, cut_opt))
    state = ckpt.latest_checkpoint(tmp_path)
    resumed, resumed_opt = fresh()
    resumed.load_state_dict(state.model)
    load_optimizer_state(resumed_opt, state.optimizer)
    for p in resumed.parameters():
        assert resumed_opt.state[p]["momentum_buffer"].stride() == p.stride()
    steps(resumed, resumed_opt, batches[2:])
    for a, b in zip(resumed.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_keeps_the_runs_optimizer_settings_and_takes_only_the_momentum():
    from resnet.engine.optim import load_optimizer_state
    from resnet.errors import ConfigError

    torch.manual_seed(0)
    model = create_model("resnet20")
    saved = build_optimizer(model, OptimCfg(weight_decay=1e-4))  # a CPU run: foreach
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    saved.step()
    state = saved.state_dict()
    resumed = build_optimizer(model, OptimCfg(weight_decay=5e-4, momentum=0.8), fused=True)  # resumed on a GPU
    load_optimizer_state(resumed, state)
    (group,) = resumed.param_groups
    assert group["fused"] is True and not group["foreach"]  # what the CUDA-graph step needs
    assert group["weight_decay"] == 5e-4 and group["momentum"] == 0.8  # what config.toml says
    p = next(model.parameters())
    assert torch.equal(resumed.state[p]["momentum_buffer"], saved.state[p]["momentum_buffer"])
    two_groups = build_optimizer(model, OptimCfg(no_decay_norm_bias=True))
    with pytest.raises(ConfigError, match="1 parameter group.*this run's 2: --decay-norm-bias"):
        load_optimizer_state(two_groups, state)


def test_weights_and_checkpoint_files_follow_the_umask_like_the_run_folders_other_files(tmp_path):
    import os
    import stat

    import resnet

    old = os.umask(0o022)
    try:
        model = resnet.create_model("resnet20")
        resnet.save_weights(model, tmp_path / "m.safetensors")
        state = ckpt.Checkpoint(step=1, model=model.state_dict(), optimizer={"state": {}, "param_groups": []},
                                extra={}, rng=ckpt.rng_state())
        ckpt.save_checkpoint(tmp_path / "checkpoints", state)
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    files = [*tmp_path.iterdir(), *(tmp_path / "checkpoints").iterdir()]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.is_file()}
    assert set(modes.values()) == {0o644}, modes
