"""What ``resnet bench train|infer`` runs: our step and the reference's, each built fresh and timed alone.

Reference (docs/benchmarks.md): for the ImageNet nets torchvision has (resnet18..152) it is
``torchvision.models.resnetXX`` in a plain eager fp32 loop (TF32 allowed on CUDA), and on CUDA also the same
loop under bf16 autocast + channels_last. For CIFAR nets (and nets torchvision lacks) it is our own model in
the usual eager fp32 code: a DataLoader with per-sample CPU augmentation (torchvision transforms) for CIFAR,
a fixed synthetic batch otherwise. "Ours" is the engine's path: the tensor stream (uint8 set resident on the
device, batched crop/flip/mean there) for CIFAR, then :func:`resnet.engine.step.build_step`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from resnet.classify.group import GroupStream, GroupTask
from resnet.classify.task import ClassificationTask
from resnet.config import OptimCfg
from resnet.data.streams import TensorTrainStream
from resnet.data.transforms import Normalizer, pixel_mean
from resnet.engine.distributed import shutdown, wrap_ddp
from resnet.engine.graphs import capture_inference
from resnet.engine.optim import build_optimizer
from resnet.engine.precision import autocast_for as step_autocast
from resnet.engine.step import build_step
from resnet.errors import ConfigError
from resnet.inference import compile_for_inference, prepare_inference
from resnet.models.grouped import stack
from resnet.models.registry import create_model

TORCHVISION_NETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
LR = 0.1
"""Sec. 3.4/4.2 learning rate, so the timed SGD steps do the real arithmetic of training."""


@dataclass(frozen=True)
class BenchSpec:
    """The resolved command line: every switch has its final value (no None)."""

    workload: str
    model: str
    batch_size: int
    input_size: int
    device: torch.device
    precision: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool
    iterations: int
    warmup: int
    reference: bool
    workers: int
    dataset_size: int
    stride_in_1x1: bool | None = None
    reference_compile: bool = False
    fold_bn: bool = True
    gpu_decode: bool = False
    ddp: bool = False
    bucket_cap_mb: float = 25.0
    inductor: tuple[tuple[str, Any], ...] = ()
    """torch._inductor.config overrides for our runs (``--inductor KEY=VALUE``)."""
    seeds: int = 1
    """train: also time this many nets trained as one grouped net (``ours-group``)."""

    def switches(self) -> str:
        """Our switches in words, for the table."""
        parts = [self.precision, "channels_last" if self.channels_last else "NCHW"]
        parts += ["compile"] if self.compile else []
        parts += [f"{key}={value}" for key, value in self.inductor]
        parts += ["CUDA graph"] if self.cuda_graphs else ["eager"]
        return " ".join(parts)


@dataclass
class Built:
    """A ready workload: ``step()`` does one timed unit; ``setup_calls`` more untimed calls come first."""

    step: Callable[[], object]
    setup_calls: int = 0
    finish: Callable[[], dict[str, Any]] = field(default=lambda: {})
    host_clock: bool = False


@dataclass
class Runner:
    """A named workload, built only when its turn comes (so peak memory is its own)."""

    name: str
    setup: str
    batch_size: int
    build: Callable[[], Built]


@functools.lru_cache(maxsize=4)
def model_family(name: str) -> str:
    """``cifar`` or ``imagenet``, read off a model built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return str(getattr(create_model(name), "family", "imagenet"))


def has_torchvision_reference(name: str) -> bool:
    return name in TORCHVISION_NETS and model_family(name) == "imagenet"


def _model_options(spec: BenchSpec) -> dict[str, Any]:
    """ImageNet bottlenecks default to torchvision's v1.5 layout so both sides do the same work."""
    if spec.stride_in_1x1 is not None:
        return {"stride_in_1x1": spec.stride_in_1x1}
    return {"stride_in_1x1": False} if has_torchvision_reference(spec.model) else {}


def our_model(spec: BenchSpec, num_classes: int) -> nn.Module:
    """Our net (see :func:`_model_options`)."""
    opts: dict[str, Any] = {"num_classes": num_classes, **_model_options(spec)}
    torch.manual_seed(0)
    model = create_model(spec.model, **opts).to(spec.device)
    return model.to(memory_format=torch.channels_last) if spec.channels_last else model


def num_classes_for(spec: BenchSpec) -> int:
    return 10 if model_family(spec.model) == "cifar" and spec.input_size <= 32 else 1000


def synthetic_batch(spec: BenchSpec, batch: int, channels_last: bool) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, spec.input_size, spec.input_size, generator=g)
    y = torch.randint(0, num_classes_for(spec), (batch,), generator=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(spec.device).contiguous(memory_format=fmt), y.to(spec.device)


@functools.lru_cache(maxsize=1)
def synthetic_set(n: int, size: int, classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Random uint8 images, labels and their per-pixel mean (Sec. 4.2): the CIFAR-shaped benchmark set."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return images, labels, pixel_mean(images)


def _last_loss(box: list[Tensor]) -> Callable[[], dict[str, Any]]:
    return lambda: {"last_loss": float(box[-1].item())} if box else {}


# ------------------------------------------------------------------------------------------------- train
@contextlib.contextmanager
def single_process_group(device: torch.device) -> Iterator[None]:
    """A one-process group (NCCL on CUDA, gloo on CPU) for timing DDP's own overhead; left as found."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=0, world_size=1)
    try:
        yield
    finally:
        shutdown()


def ours_train(spec: BenchSpec, ddp: bool = False, cuda_graphs: bool | None = None) -> Built:
    """The engine's step (fused SGD on CUDA, graphs/bf16/channels_last as switched); CIFAR includes the data.

    ``ddp``: the model wrapped as the trainer wraps it under torchrun (DistributedDataParallel with
    gradient-as-bucket-view; no CUDA graph), in a one-process group: DDP's cost without any peer."""
    model = our_model(spec, num_classes_for(spec))
    optimizer = build_optimizer(model, OptimCfg(lr=LR), fused=spec.device.type == "cuda")
    net: nn.Module = model
    if ddp:
        net = wrap_ddp(model, spec.device, spec.bucket_cap_mb)
    graphs = spec.cuda_graphs if cuda_graphs is None else cuda_graphs
    step = build_step(net, optimizer, spec, spec.device, task=ClassificationTask(), cuda_graphs=graphs and not ddp)
    box: list[Tensor] = []
    if model_family(spec.model) == "cifar":
        images, labels, mean = synthetic_set(spec.dataset_size, spec.input_size, num_classes_for(spec))
        store = spec.device if spec.device.type == "cuda" else torch.device("cpu")
        stream = TensorTrainStream(images.to(store), labels.to(store), Normalizer(mean), spec.batch_size,
                                   spec.device, seed=0)

        def run() -> None:
            x, y = stream.next()
            box[:] = [step((x, y), LR)[0]]
    else:
        x, y = synthetic_batch(spec, spec.batch_size, spec.channels_last)

        def run() -> None:
            box[:] = [step((x, y), LR)[0]]

    return Built(run, setup_calls=step.setup_calls, finish=_last_loss(box))


def ours_group_train(spec: BenchSpec) -> Built:
    """``spec.seeds`` nets (seeds 0..N-1 for weights and data order) as one grouped net through the engine's step:
    what ``ours`` costs N times, in one computation. Batches are the members' own, concatenated along channels."""
    n, classes = spec.seeds, num_classes_for(spec)
    members = []
    for seed in range(n):
        torch.manual_seed(seed)
        members.append(create_model(spec.model, **{**_model_options(spec), "num_classes": classes}))
    group = stack(members).to(spec.device)
    group = group.to(memory_format=torch.channels_last) if spec.channels_last else group
    optimizer = build_optimizer(group, OptimCfg(lr=LR), fused=spec.device.type == "cuda")
    step = build_step(group, optimizer, spec, spec.device, task=GroupTask(range(n)), cuda_graphs=spec.cuda_graphs)
    box: list[Tensor] = []
    if model_family(spec.model) == "cifar":
        images, labels, mean = synthetic_set(spec.dataset_size, spec.input_size, classes)
        store = spec.device if spec.device.type == "cuda" else torch.device("cpu")
        stream = GroupStream([TensorTrainStream(images.to(store), labels.to(store), Normalizer(mean),
                                                spec.batch_size, spec.device, seed=seed) for seed in range(n)])
        batch = stream.next
    else:
        fixed = [synthetic_batch(spec, spec.batch_size, False) for _ in range(n)]
        fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
        x_all = torch.cat([x for x, _ in fixed], 1).contiguous(memory_format=fmt)
        y_all = torch.stack([y for _, y in fixed], 1)

        def batch() -> tuple[Tensor, Tensor]:
            return x_all, y_all

    def run() -> None:
        box[:] = [step(batch(), LR)[0]]

    return Built(run, setup_calls=step.setup_calls, finish=_last_loss(box))


def eager_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                     precision: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The usual eager loop body: zero_grad, forward, cross-entropy, backward, step."""

    def step(x: Tensor, y: Tensor) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with step_autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


class _CifarEagerSet(Dataset):
    """The usual CIFAR code: per-sample RandomCrop(32, padding=4) + flip + ToDtype + Normalize on the CPU."""

    def __init__(self, images: Tensor, labels: Tensor, mean: Tensor) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        size = images.shape[-1]
        self.transform = v2.Compose([
            v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean.mean((1, 2)).tolist(), [1.0, 1.0, 1.0]),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def forever(loader: DataLoader) -> Iterator[Any]:
    """Cycle a DataLoader (persistent workers make the epoch boundary cheap); an empty pass is an error."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the reference loader yields no full batch: fewer images than --batch-size")


def reference_train(spec: BenchSpec, precision: str = "fp32", channels_last: bool = False,
                    compiled: bool = False) -> Built:
    """torchvision's net (or ours for CIFAR) in the plain eager loop with torch's default SGD.

    ``compiled``: the same loop with ``torch.compile(model)`` (the compiled reference row of docs/benchmarks.md)."""
    torch.manual_seed(0)
    if has_torchvision_reference(spec.model):
        import torchvision

        model: nn.Module = getattr(torchvision.models, spec.model)(num_classes=1000).to(spec.device)
    else:
        model = create_model(spec.model, num_classes=num_classes_for(spec)).to(spec.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    step = eager_train_step(torch.compile(model) if compiled else model, optimizer, spec.device, precision)
    box: list[Tensor] = []
    if model_family(spec.model) == "cifar":
        images, labels, mean = synthetic_set(spec.dataset_size, spec.input_size, num_classes_for(spec))
        loader = DataLoader(_CifarEagerSet(images, labels, mean), batch_size=spec.batch_size, shuffle=True,
                            num_workers=spec.workers, pin_memory=spec.device.type == "cuda", drop_last=True,
                            persistent_workers=spec.workers > 0)
        batches = forever(loader)

        def run() -> None:
            x, y = next(batches)
            box[:] = [step(x.to(spec.device, non_blocking=True), y.to(spec.device, non_blocking=True))]
    else:
        x, y = synthetic_batch(spec, spec.batch_size, channels_last)

        def run() -> None:
            box[:] = [step(x, y)]

    return Built(run, setup_calls=3 if compiled else 0, finish=_last_loss(box))


# ------------------------------------------------------------------------------------------------- infer
def ours_infer(spec: BenchSpec, batch: int) -> Built:
    """Eval-mode forward with our switches (BN folded into the convolutions unless --no-fold-bn); with graphs,
    one captured forward replayed."""
    model = prepare_inference(our_model(spec, num_classes_for(spec)).eval(), spec.fold_bn, spec.channels_last)
    net = compile_for_inference(model, spec.device) if spec.compile else model
    x, _ = synthetic_batch(spec, batch, spec.channels_last)
    if spec.cuda_graphs:
        forward = capture_inference(net, x, spec.precision, spec.channels_last)
        return Built(lambda: forward(x))

    @torch.no_grad()
    def run() -> Tensor:
        with step_autocast(spec.device, spec.precision):
            return net(x)

    return Built(run, setup_calls=2 if spec.compile else 0)


def reference_infer(spec: BenchSpec, batch: int, precision: str = "fp32", channels_last: bool = False) -> Built:
    """torchvision's net (ours for CIFAR) eval-mode under no_grad, eager."""
    torch.manual_seed(0)
    if has_torchvision_reference(spec.model):
        import torchvision

        model: nn.Module = getattr(torchvision.models, spec.model)(num_classes=1000)
    else:
        model = create_model(spec.model, num_classes=num_classes_for(spec))
    model = model.to(spec.device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x, _ = synthetic_batch(spec, batch, channels_last)

    @torch.no_grad()
    def run() -> Tensor:
        with step_autocast(spec.device, precision):
            return model(x)

    return Built(run)


# ------------------------------------------------------------------------------------------------- plans
def reference_name(spec: BenchSpec) -> str:
    if has_torchvision_reference(spec.model):
        return f"torchvision {spec.model}"
    return f"our {spec.model}"


def train_runners(spec: BenchSpec) -> list[Runner]:
    """Ours, then (with --reference) the fp32 eager reference, and on CUDA its bf16 + channels_last variant."""
    cifar = model_family(spec.model) == "cifar"
    data = f", tensor stream on {spec.device.type}" if cifar else ", fixed batch"
    runners = [Runner("ours", f"our {spec.model} {spec.switches()}{data}", spec.batch_size,
                      lambda: ours_train(spec))]
    if spec.ddp:
        plain = spec.switches().replace("CUDA graph", "eager")
        runners += [
            Runner("ours-step", f"our {spec.model} {plain}{data}", spec.batch_size,
                   lambda: ours_train(spec, cuda_graphs=False)),
            Runner("ours-ddp", f"our {spec.model} {plain}, DDP 1 process, buckets {spec.bucket_cap_mb:g} MB{data}",
                   spec.batch_size, lambda: ours_train(spec, ddp=True)),
        ]  # fmt: skip
    if spec.seeds > 1:
        runners.append(Runner("ours-group", f"{spec.seeds} x our {spec.model} as one grouped net {spec.switches()}"
                              f"{data}", spec.seeds * spec.batch_size, lambda: ours_group_train(spec)))
    if not spec.reference:
        return runners
    ref_data = f", DataLoader({spec.workers} workers) + CPU aug" if cifar else ", fixed batch"
    runners.append(Runner("reference", f"{reference_name(spec)} fp32 NCHW eager{ref_data}", spec.batch_size,
                          lambda: reference_train(spec)))
    if spec.device.type == "cuda":
        runners.append(Runner("reference-bf16-cl", f"{reference_name(spec)} bf16 channels_last eager{ref_data}",
                              spec.batch_size, lambda: reference_train(spec, "bf16", True)))
    if spec.reference_compile:
        precision = "bf16" if spec.device.type == "cuda" else "fp32"
        runners.append(Runner("reference-compiled", f"{reference_name(spec)} {precision} "
                              f"{'channels_last' if precision == 'bf16' else 'NCHW'} torch.compile{ref_data}",
                              spec.batch_size, lambda: reference_train(spec, precision, precision == "bf16", True)))
    return runners


def infer_runners(spec: BenchSpec) -> list[Runner]:
    """As train; on CPU also batch-1 latency beside the reference's (the 2-core CPU question)."""
    batches = [spec.batch_size]
    if spec.device.type == "cpu" and spec.batch_size != 1:
        batches.append(1)
    runners: list[Runner] = []
    for b in batches:
        tag = "" if b == spec.batch_size else "-b1"
        folded = ", BN folded" if spec.fold_bn else ""
        runners.append(Runner(f"ours{tag}", f"our {spec.model} {spec.switches()}{folded}, no_grad", b,
                              functools.partial(ours_infer, spec, b)))
        if spec.reference:
            runners.append(Runner(f"reference{tag}", f"{reference_name(spec)} fp32 NCHW eager, no_grad", b,
                                  functools.partial(reference_infer, spec, b)))
            if spec.device.type == "cuda":
                runners.append(Runner(f"reference-bf16-cl{tag}", f"{reference_name(spec)} bf16 channels_last eager",
                                      b, functools.partial(reference_infer, spec, b, "bf16", True)))
            else:  # what a user gets from torchvision by only switching the layout
                runners.append(Runner(f"reference-cl{tag}", f"{reference_name(spec)} fp32 channels_last eager, "
                                      "no_grad", b, functools.partial(reference_infer, spec, b, "fp32", True)))
    return runners
