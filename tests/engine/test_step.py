"""The training step (resnet.engine.step): CPU fallback is the eager step's exact math; the CUDA graph
path (GPU-only tests, skipped without CUDA) captures once and tracks eager fp32 within bf16 tolerance."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from resnet import create_model
from resnet.bench.check import compare, teacher_batches
from resnet.classify.task import ClassificationTask
from resnet.config import OptimCfg
from resnet.engine.graphs import capture_inference
from resnet.engine.optim import build_optimizer
from resnet.engine.step import DeviceLR, optimizer_state_dict
from resnet.engine.step import Step as EngineStep
from resnet.engine.step import build_step as engine_build_step
from resnet.engine.trainer import Switches

CPU = torch.device("cpu")
FP32 = Switches(precision="fp32", channels_last=False, compile=False, fused_sgd=False)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def build_step(*args, **kwargs):
    """The engine's build_step for a classifier (cross-entropy), the task most tests here step."""
    return engine_build_step(*args, task=kwargs.pop("task", ClassificationTask()), **kwargs)


def Step(*args, **kwargs):  # noqa: N802 - stands for the class
    return EngineStep(*args, task=kwargs.pop("task", ClassificationTask()), **kwargs)


def _batches(n: int, batch: int = 8, size: int = 32, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n)]


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20")


def _hand_written_sgd(model: torch.nn.Module, batches, lrs, momentum=0.9, wd=1e-4) -> list[torch.Tensor]:
    """Sec. 3.4 SGD written out: g = grad + wd*w; buf = m*buf + g (buf = g at first); w -= lr*buf."""
    bufs: dict[int, torch.Tensor] = {}
    losses = []
    for (x, y), lr in zip(batches, lrs, strict=True):
        for p in model.parameters():
            p.grad = None
        loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                g = p.grad.add(p, alpha=wd)
                bufs[i] = g.clone() if i not in bufs else bufs[i].mul_(momentum).add_(g)
                p.add_(bufs[i], alpha=-lr)
        losses.append(loss.detach())
    return losses


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cpu_fallback_gives_bit_identical_parameters_to_a_hand_written_sgd_step():
    ours, ref = _tiny_model(), _tiny_model()
    batches, lrs = _batches(3), [0.1, 0.1, 0.05]
    step = build_step(ours, build_optimizer(ours, OptimCfg()), FP32, CPU)
    assert not step.graphs and step.setup_calls == 0
    losses = [step((x, y), lr)[0] for (x, y), lr in zip(batches, lrs, strict=True)]
    ref_losses = _hand_written_sgd(ref, batches, lrs)
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses, strict=True))
    assert _same_state(ours, ref)  # parameters and BN running statistics


def test_step_returns_the_wrong_prediction_count_of_the_batch():
    model = _tiny_model()
    (x, y), = _batches(1)
    with torch.no_grad():
        expected = int((model(x).argmax(1) != y).sum())  # BN in train mode: the step sees the same logits
    step = build_step(model, build_optimizer(model, OptimCfg()), FP32, CPU)
    _, wrong = step((x, y), 0.1)
    assert int(wrong) == expected


def test_device_tensor_lr_follows_a_schedule_exactly_like_a_float_lr():
    a, b = _tiny_model(), _tiny_model()
    batches, lrs = _batches(4), [0.1, 0.02, 0.02, 0.005]
    fused = OptimCfg()
    step_t = Step(a, build_optimizer(a, fused, fused=True), FP32, CPU, tensor_lr=True)
    step_f = Step(b, build_optimizer(b, fused, fused=True), FP32, CPU, tensor_lr=False)
    assert step_t.lr is not None
    lr_tensor = step_t.lr.value
    for (x, y), lr in zip(batches, lrs, strict=True):
        step_t((x, y), lr)
        step_f((x, y), lr)
        assert all(g["lr"] is lr_tensor for g in step_t.optimizer.param_groups)  # never re-pointed
        assert lr_tensor.item() == pytest.approx(lr)
    assert _same_state(a, b)


def test_device_lr_refills_only_when_the_value_changes():
    model = _tiny_model()
    lr = DeviceLR(build_optimizer(model, OptimCfg(), fused=True), CPU)
    lr.set(0.1)
    version = lr.value._version
    lr.set(0.1)
    assert lr.value._version == version
    lr.set(0.01)
    assert lr.value._version > version and lr.value.item() == pytest.approx(0.01)
    lr.set(torch.tensor(0.5))
    assert lr.value.item() == 0.5


def test_zero_tensor_lr_leaves_parameters_unchanged():
    model = _tiny_model()
    step = Step(model, build_optimizer(model, OptimCfg(), fused=True), FP32, CPU, tensor_lr=True)
    (x, y), (x2, y2) = _batches(2)
    step((x, y), 0.1)
    before = [p.detach().clone() for p in model.parameters()]
    step((x2, y2), 0.0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_skip_nonfinite_drops_the_update_without_a_host_check():
    model = _tiny_model()
    opt = build_optimizer(model, OptimCfg(), fused=True)
    step = Step(model, opt, FP32, CPU, tensor_lr=True, skip_nonfinite=True)
    (x, y), (x2, y2) = _batches(2)
    step((x, y), 0.1)
    params = [p.detach().clone() for p in model.parameters()]
    bufs = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    stats = [b.clone() for b in model.buffers()]
    loss, _ = step((torch.full_like(x2, float("nan")), y2), 0.1)
    assert not torch.isfinite(loss)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert all(torch.equal(opt.state[p]["momentum_buffer"], b) for p, b in zip(model.parameters(), bufs, strict=True))
    assert all(torch.equal(b, s) for b, s in zip(model.buffers(), stats, strict=True))  # BN stats put back
    assert not hasattr(opt, "found_inf")  # the flag does not leak into later optimizer use
    step((x2, y2), 0.1)  # a finite batch after it trains as usual, BN statistics included
    assert not all(torch.equal(b, s) for b, s in zip(model.buffers(), stats, strict=True))


def test_a_skipped_first_fused_step_leaves_momentum_as_if_no_step_had_run():
    # fused SGD's first step allocates momentum with empty_like and skips the write when found_inf is set
    model, ref = _tiny_model(), _tiny_model()
    opt = build_optimizer(model, OptimCfg(), fused=True)
    step = Step(model, opt, FP32, CPU, tensor_lr=True, skip_nonfinite=True)
    (x, y), (x2, y2) = _batches(2)
    step((torch.full_like(x, float("nan")), y), 0.1)  # skipped first step (BN statistics do see the NaN batch)
    assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in model.parameters())
    step((x2, y2), 0.1)
    _hand_written_sgd(ref, [(x2, y2)], [0.1])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True))


def _ddp_skip_worker(rank: int, init: str, out: str) -> None:
    """One of two gloo processes: a normal step, then a step where only rank 1's batch is NaN."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from resnet.engine.distributed import shutdown  # before the group exists: see its import of torch.distributed.nn

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        model = _tiny_model()
        net = DistributedDataParallel(model, broadcast_buffers=False)
        step = build_step(net, build_optimizer(model, OptimCfg(), fused=True), FP32, CPU, skip_nonfinite=True)
        (x, y), (x2, y2) = _batches(2, seed=rank)
        step((x, y), 0.1)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss, _ = step((torch.full_like(x2, float("nan")) if rank == 1 else x2, y2), 0.1)
        torch.save({"finite": bool(torch.isfinite(loss)), "before": before, "after": model.state_dict()},
                   f"{out}/rank{rank}.pt")
    finally:
        net = step = None  # the DDP wrapper holds the group: dropped first, so shutdown() ends its threads
        shutdown()


@pytest.mark.slow
@pytest.mark.dist
def test_under_ddp_a_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_skip_worker, args=(f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["finite"] and not r1["finite"]
    for r in (r0, r1):  # rank 0's batch was fine, yet it skipped too: replicas stay identical
        assert all(torch.equal(r["before"][k], r["after"][k]) for k in r["before"])
    assert all(torch.equal(r0["after"][k], r1["after"][k]) for k in r0["after"] if "running" not in k)


def test_tensor_lr_and_graphs_are_refused_where_they_cannot_work():
    model = _tiny_model()
    with pytest.raises(ValueError, match="fused SGD"):
        Step(model, build_optimizer(model, OptimCfg()), FP32, CPU, tensor_lr=True)
    with pytest.raises(ValueError, match="CUDA"):
        Step(model, build_optimizer(model, OptimCfg(), fused=True), FP32, CPU, cuda_graphs=True)


def test_optimizer_state_dict_with_a_tensor_lr_stays_json_serializable():
    model = _tiny_model()
    opt = build_optimizer(model, OptimCfg(), fused=True)
    step = Step(model, opt, FP32, CPU, tensor_lr=True)
    (x, y), = _batches(1)
    step((x, y), 0.05)
    state = optimizer_state_dict(opt)
    json.dumps(state["param_groups"])
    assert state["param_groups"][0]["lr"] == pytest.approx(0.05)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)  # the live optimizer is left as it was


FP16 = Switches(precision="fp16", channels_last=False, compile=False, fused_sgd=False)


def _amp_recipe_sgd(model: torch.nn.Module, batches, lr: float) -> tuple[list[torch.Tensor], float]:
    """torch's documented AMP loop: autocast fp16, scaler.scale(loss).backward(), scaler.step, scaler.update."""
    opt = build_optimizer(model, OptimCfg())
    for group in opt.param_groups:
        group["lr"] = lr
    scaler = torch.amp.GradScaler("cpu")
    losses = []
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.detach())
    return losses, scaler.get_scale()


def test_fp16_step_is_torchs_amp_recipe_with_its_loss_scaling():
    # fp16 autocast is slow on CPUs (no fp16 kernels): 8x8 images keep the test at a second
    ours, ref = _tiny_model(), _tiny_model()
    batches = _batches(3, batch=4, size=8)
    step = build_step(ours, build_optimizer(ours, OptimCfg()), FP16, CPU)
    assert step.scaler is not None
    losses = [step((x, y), 0.1)[0] for x, y in batches]
    ref_losses, ref_scale = _amp_recipe_sgd(ref, batches, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses, strict=True))
    assert _same_state(ours, ref)
    assert step.scaler.get_scale() == ref_scale  # both skipped the same overflowing steps


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused-tensor-lr"])
def test_fp16_step_whose_gradients_overflow_is_skipped_and_the_scale_backs_off(fused):
    model = _tiny_model()
    opt = build_optimizer(model, OptimCfg(), fused=fused)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)  # scaled fp16 gradients overflow to inf
    step = Step(model, opt, FP16, CPU, tensor_lr=fused, scaler=scaler)
    (x, y), (x2, y2) = _batches(2, batch=4, size=8)
    params = [p.detach().clone() for p in model.parameters()]
    loss, _ = step((x, y), 0.1)
    assert torch.isfinite(loss)  # the loss itself is fine: only its scaled gradients overflow
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert scaler.get_scale() == 2.0 ** 99
    assert not hasattr(opt, "found_inf") and not hasattr(opt, "grad_scale")
    scaler.update(2.0 ** 10)  # a scale that fits: the next step updates, at the unscaled gradients' size
    step((x2, y2), 0.1)
    moved = [(p - q).abs().max().item() for p, q in zip(model.parameters(), params, strict=True)]
    assert 0 < max(moved) < 1.0


# ------------------------------------------------------------------------------------------------ GPU only
def _teacher_batches(n: int, batch: int, device: torch.device,
                     noise: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A learnable task (noisy copies of 10 class prototypes), so the loss really falls within 200 steps."""
    return teacher_batches(n, batch, device, noise=noise)


def _gpu_graph_step(dev: torch.device, compile: bool = False) -> tuple[torch.nn.Module, Step]:
    """The GPU defaults' step (bf16, channels_last, fused SGD, CUDA graph) on the tiny model."""
    model = _tiny_model().to(dev).to(memory_format=torch.channels_last)
    sw = Switches(precision="bf16", channels_last=True, compile=compile, fused_sgd=True)
    return model, build_step(model, build_optimizer(model, OptimCfg(), fused=True), sw, dev)


@pytest.mark.gpu
@needs_cuda
def test_graph_step_captures_once_and_replays_with_a_live_lr():
    dev = torch.device("cuda")
    model, step = _gpu_graph_step(dev)
    assert step.graphs
    batches = _teacher_batches(step.setup_calls + 3, 32, dev)
    for x, y in batches[:-1]:
        loss, _ = step((x, y), 0.1)
    assert step.captured and torch.isfinite(loss)
    graph = step.graph
    before = [p.detach().clone() for p in model.parameters()]
    step(batches[-1], 0.0)  # lr changed after capture: the replay must use it
    assert step.graph is graph
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    step(batches[0], 0.1)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.gpu
@needs_cuda
def test_graph_step_takes_the_eager_path_for_a_batch_of_another_shape():
    dev = torch.device("cuda")
    _, step = _gpu_graph_step(dev)
    for x, y in _teacher_batches(step.setup_calls + 1, 32, dev):
        step((x, y), 0.1)
    (x, y), = _teacher_batches(1, 16, dev)
    loss, _ = step((x, y), 0.1)
    assert torch.isfinite(loss)
    for x, y in _teacher_batches(2, 32, dev):
        loss, _ = step((x, y), 0.1)
    assert torch.isfinite(loss)


@pytest.mark.gpu
@needs_cuda
def test_a_short_batch_at_capture_time_defers_the_capture_to_the_next_full_batch():
    dev = torch.device("cuda")
    _, step = _gpu_graph_step(dev)
    for x, y in _teacher_batches(step.warmup_steps, 32, dev):
        step((x, y), 0.1)
    (x, y), = _teacher_batches(1, 30, dev)  # two images of the batch were unreadable
    assert torch.isfinite(step((x, y), 0.1)[0]) and not step.captured
    (x, y), = _teacher_batches(1, 32, dev)
    step((x, y), 0.1)
    assert step.captured and step._static[0].shape[0] == 32


@pytest.mark.gpu
@needs_cuda
def test_a_batch_larger_than_every_warm_up_is_warmed_up_before_it_is_captured():
    dev = torch.device("cuda")
    _, step = _gpu_graph_step(dev)
    for x, y in _teacher_batches(step.warmup_steps, 24, dev):  # the warm-ups all met short batches
        step((x, y), 0.1)
    (x, y), = _teacher_batches(1, 32, dev)
    assert torch.isfinite(step((x, y), 0.1)[0]) and not step.captured  # warmed up at 32 first, outside any capture
    (x, y), = _teacher_batches(1, 32, dev)
    step((x, y), 0.1)
    assert step.captured and step._static[0].shape[0] == 32


@pytest.mark.gpu
@needs_cuda
def test_fast_path_losses_track_eager_fp32_over_200_iterations(monkeypatch):
    """Same seed, same 200 fresh batches. Graph replay must be the eager step's math exactly (same precision),
    and bf16 must track fp32 within bf16 tolerance: step by step at first, then in 20-step window means while the
    runs are still close, then in the mean of the last 100 steps. Why not window by window to the end: two runs of
    the *same* fp32 eager step part ways after ~60 steps here (cuDNN's nondeterministic backward, amplified by
    SGD), window means differing by up to 3x late in training (H200, 2026-11-26)."""
    dev = torch.device("cuda")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # given back after the test
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    # Deterministic convolutions: "the graph changes nothing" compares two bf16 runs over all 200 steps, which
    # cuDNN's nondeterministic backward (or benchmark mode's algorithm choice) alone could make part ways.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    batches = _teacher_batches(200, 64, dev, noise=2.0)
    runs = {}
    for name, sw, graphs in (("eager", FP32, False),
                             ("bf16-eager", Switches("bf16", True, False, True), False),
                             ("fast", Switches("bf16", True, False, True), True)):
        model = _tiny_model().to(dev)
        if sw.channels_last:
            model = model.to(memory_format=torch.channels_last)
        step = build_step(model, build_optimizer(model, OptimCfg(), fused=True), sw, dev, cuda_graphs=graphs)
        runs[name] = torch.stack([step((x, y), 0.02)[0] for x, y in batches]).float().cpu()
        assert step.captured == graphs
    assert torch.allclose(runs["fast"], runs["bf16-eager"], rtol=1e-4, atol=1e-5)  # the graph changes nothing
    result = compare(runs["fast"], runs["eager"])  # bf16 vs fp32: resnet.bench.check's tolerances (its docstring)
    assert result["passed"], result


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
def test_graph_step_captures_a_compiled_model():
    dev = torch.device("cuda")
    _, step = _gpu_graph_step(dev, compile=True)
    for x, y in _teacher_batches(step.setup_calls + 2, 32, dev):
        loss, _ = step((x, y), 0.1)
    assert step.captured and torch.isfinite(loss)


@pytest.mark.gpu
@needs_cuda
def test_captured_inference_matches_the_eager_forward():
    dev = torch.device("cuda")
    model = copy.deepcopy(_tiny_model()).to(dev).eval()
    (x, _), = _teacher_batches(1, 16, dev)
    forward = capture_inference(model, x, "fp32", channels_last=False)
    x2 = torch.randn_like(x)
    with torch.no_grad():
        expected = model(x2)
    got = forward(x2).clone()
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@needs_cuda
def test_fp16_graph_step_backs_off_its_loss_scale_on_the_device_at_every_replay():
    dev = torch.device("cuda")
    model = _tiny_model().to(dev).to(memory_format=torch.channels_last)
    sw = Switches(precision="fp16", channels_last=True, compile=False, fused_sgd=True)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 100)  # every step's scaled gradients overflow
    step = build_step(model, build_optimizer(model, OptimCfg(), fused=True), sw, dev, scaler=scaler)
    assert step.graphs and step.scaler is scaler
    batches = _teacher_batches(step.setup_calls + 4, 32, dev)
    before = [p.detach().clone() for p in model.parameters()]
    for x, y in batches:
        step((x, y), 0.1)
    assert step.captured
    assert scaler.get_scale() == 2.0 ** (100 - len(batches))  # halved by warm-up, capture and replays alike
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    scaler.update(2.0 ** 8)  # a scale that fits: replays now update, with finite weights
    for x, y in batches[:3]:
        step((x, y), 0.1)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ one step everywhere
@pytest.mark.slow
def test_the_trainer_on_cpu_trains_exactly_as_the_step_called_directly(tmp_path):
    """The loop adds nothing to the arithmetic: the trainer's losses and final weights equal those of the same step
    driven by hand over the same batches and learning rates."""
    from resnet.classify import make_trainer
    from resnet.config import build_config

    cfg = build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "val_split": 0},
                        "optim": {"milestones": [6]}, "train": {"iterations": 12, "batch_size": 16, "eval_every": 12,
                                                               "checkpoint_every": 0, "device": "cpu"}}, "quick")
    trainer = make_trainer(cfg, tmp_path).setup()
    twin = copy.deepcopy(trainer.model)
    seen: list[tuple[tuple[torch.Tensor, torch.Tensor], float, torch.Tensor]] = []
    original = trainer.train_step

    def recording(batch, lr):
        kept = (batch[0].clone(), batch[1].clone())
        loss, sums = original(batch, lr)
        seen.append((kept, lr, loss))
        return loss, sums

    trainer.train_step = recording
    trainer.run()
    step = build_step(twin, build_optimizer(twin, cfg.optim), FP32, CPU)
    for batch, lr, loss in seen:
        assert torch.equal(step(batch, lr)[0], loss)
    assert len(seen) == 12 and _same_state(twin, trainer.model)


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_skip_nonfinite_works_with_either_sgd_kernel(fused):
    model = _tiny_model()
    opt = build_optimizer(model, OptimCfg(), fused=fused)
    step = Step(model, opt, FP32, CPU, skip_nonfinite=True)
    (x, y), (x2, y2) = _batches(2)
    step((x, y), 0.1)
    params = [p.detach().clone() for p in model.parameters()]
    stats = [b.clone() for b in model.buffers()]
    loss, _ = step((torch.full_like(x2, float("nan")), y2), 0.1)
    assert not torch.isfinite(loss)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert all(torch.equal(b, s) for b, s in zip(model.buffers(), stats, strict=True))


def test_fp16_skip_of_a_nonfinite_loss_backs_the_loss_scale_off_on_every_device():
    """One behaviour for fp16 + --nan-policy skip: the scaler sees the non-finite gradients, drops the update and
    halves its scale (the captured CUDA step can only do it this way, so the CPU does too)."""
    model = _tiny_model()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    step = Step(model, build_optimizer(model, OptimCfg()), FP16, CPU, skip_nonfinite=True, scaler=scaler)
    (x, y), = _batches(1, batch=4, size=8)
    params = [p.detach().clone() for p in model.parameters()]
    stats = [b.clone() for b in model.buffers()]
    step((torch.full_like(x, float("nan")), y), 0.1)
    assert scaler.get_scale() == 2.0 ** 7
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert all(torch.equal(b, s) for b, s in zip(model.buffers(), stats, strict=True))
