"""Several seeds of one classifier trained as one grouped net: ``resnet train --seeds 0,1,2``.

Member ``k`` is the run ``--seed S_k`` would train: its own initialisation, data order and augmentation (its own
training stream), its own BatchNorm statistics, weight decay and momentum (the group is a
:class:`resnet.models.grouped.GroupedNet`, whose parameters are the members' side by side). The loop is the engine's
own: one step trains every member, checkpoints hold the group, and ``--resume`` continues it. At the end each member
gets a run folder ``OUT/seedS`` of the form a separate run writes (config with its seed, metrics.jsonl, final.json,
model.safetensors, curves.png), so reports, ``resnet eval`` and the studies read them unchanged.

Shared by the members: the learning-rate schedule (so the ResNet-110 warm-up of Sec. 4.2, decided on each member's
own error, is not available here: such a net is refused) and the non-finite policy, which sees the sum of the
members' losses: one diverging member stops (or skips a step of) the whole group.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from resnet.classify.task import ClassificationTask
from resnet.config import RunCfg
from resnet.engine.distributed import DistInfo
from resnet.errors import ConfigError


def member_folder(out: Path, seed: int) -> Path:
    """Where member ``seed``'s run folder goes inside the group's."""
    return out / f"seed{seed}"


def refuse_shared(cfg: RunCfg) -> None:
    """What a group cannot do per member, refused before anything is built: a learning rate or loss scale that a
    separate run would steer by its own error or overflow, and starting from (or freezing) trained weights."""
    if cfg.finetune.init_from or cfg.finetune.freeze_stages or cfg.finetune.freeze_bn:
        raise ConfigError("--seeds trains members from their own initialisation; drop --init-from, "
                          "--freeze-stages and --freeze-bn")
    if cfg.optim.schedule == "plateau" or cfg.optim.warmup_lr is not None:
        raise ConfigError("--seeds shares one learning rate, but a plateau schedule or --warmup-lr follows each "
                          "run's own error: use --schedule step (or cosine), or train the seeds as separate runs")
    if cfg.train.keep_best:
        raise ConfigError("--seeds has no one best evaluation (each member has its own): drop --keep-best, or train "
                          "the seeds as separate runs")
    modern = {"--label-smoothing": cfg.train.label_smoothing, "--loss bce": cfg.train.loss == "bce",
              "--mixup-alpha": cfg.data.mixup_alpha, "--cutmix-alpha": cfg.data.cutmix_alpha,
              "--ema-decay": cfg.train.ema_decay, "--optimizer": cfg.optim.optimizer != "sgd",
              "--drop-path-rate": cfg.model.drop_path_rate}
    if any(modern.values()):
        raise ConfigError(f"--seeds trains with the paper's SGD and cross-entropy; drop "
                          f"{', '.join(k for k, v in modern.items() if v)}, or train the seeds as separate runs")
    if cfg.train.precision == "fp16":
        raise ConfigError("--seeds shares one fp16 loss scale, so one member's overflow would skip every member's "
                          "step: use --precision bf16 or fp32")


class GroupStream:
    """The members' own training streams in lock step: one batch is every member's batch, images concatenated
    along the channels (the grouped net's input), labels stacked (B, N)."""

    def __init__(self, streams: Sequence[Any]) -> None:
        self.streams = list(streams)

    def next(self) -> tuple[Tensor, Tensor]:
        pairs = [s.next() for s in self.streams]
        return torch.cat([x for x, _ in pairs], 1), torch.stack([y for _, y in pairs], 1)

    def state_dict(self) -> dict[str, Any]:
        return {"members": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for stream, member in zip(self.streams, state["members"], strict=True):
            stream.load_state_dict(member)

    def close(self) -> None:
        for stream in self.streams:
            stream.close()


class GroupTask(ClassificationTask):
    """Classification for ``len(seeds)`` members at once (see the module docstring)."""

    name = "classification-group"
    monitor = "test_error"

    def __init__(self, seeds: Sequence[int]) -> None:
        super().__init__()
        if len(seeds) < 2 or len(set(seeds)) != len(seeds):
            raise ConfigError(f"--seeds {','.join(map(str, seeds))}: give two or more different seeds")
        self.seeds = list(seeds)
        self.running = (*[f"wrong_seed{s}" for s in self.seeds], *[f"loss_seed{s}" for s in self.seeds])

    def build_data(self, cfg: RunCfg, device: torch.device, dist: DistInfo) -> Any:
        refuse_shared(cfg)
        from resnet.data import build_data

        bundles = [build_data(cfg.data, cfg.train.batch_size, device, seed, dist.rank, dist.world_size)
                   for seed in self.seeds]
        return dataclasses.replace(bundles[0], train=GroupStream([b.train for b in bundles]))

    def build_model(self, cfg: RunCfg, data: Any) -> nn.Module:
        """Member ``k`` initialised exactly as a run with ``--seed S_k`` (the global generator seeded, then the
        net built: the data streams draw from generators of their own)."""
        from resnet.models.grouped import stack

        members = []
        for seed in self.seeds:
            torch.manual_seed(seed)
            members.append(super().build_model(dataclasses.replace(cfg, train=dataclasses.replace(
                cfg.train, seed=seed)), data))
        from resnet.engine.rules import apply_recipe_rules

        if apply_recipe_rules(cfg, members[0]).optim.warmup_lr is not None:
            raise ConfigError("--seeds shares one learning rate, and the paper's ResNet-110 warm-up is decided on "
                              "each run's own error: train these seeds as separate runs")
        torch.manual_seed(self.seeds[0])
        return stack(members)

    def batch_size(self, batch: Any) -> int:
        return int(batch[1].shape[0])  # images per member

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        from resnet.models.grouped import member_losses

        x, y = batch
        logits = model(x).float()  # (B, N, K)
        each = member_losses(logits, y)
        wrong = (logits.argmax(-1) != y).sum(0)
        return each.sum(), torch.cat([wrong.to(each.dtype), each * y.shape[0]])

    def train_figures(self, sums: dict[str, float], images: float) -> dict[str, float]:
        per = max(images, 1.0)
        out = {f"train_error_seed{s}": 100.0 * sums[f"wrong_seed{s}"] / per for s in self.seeds}
        out.update({f"train_loss_seed{s}": sums[f"loss_seed{s}"] / per for s in self.seeds})
        out["train_error"] = sum(out[f"train_error_seed{s}"] for s in self.seeds) / len(self.seeds)
        out["train_loss"] = sum(out[f"train_loss_seed{s}"] for s in self.seeds) / len(self.seeds)  # not their sum
        return out

    def evaluate(self, model: nn.Module, loader: Iterable[Any], device: torch.device, precision: str,
                 channels_last: bool) -> dict[str, float]:
        """Every member scored in one pass over the loader (each view through the group once); the row's
        ``test_*`` columns are the members' means, ``test_*_seedS`` each member's."""
        from resnet.classify.evaluate import predict_scores
        from resnet.engine.distributed import all_reduce_sum

        n = len(self.seeds)
        was_training = model.training
        model.eval()
        sums = torch.zeros(n, 4, dtype=torch.float64, device=device)  # top1 wrong, top5 wrong, nll, count

        def every_member(flat: Tensor) -> Tensor:  # one image batch to every member: logits (B, N, K)
            return model(flat.repeat(1, n, 1, 1))

        with torch.no_grad():
            for x, y in loader:
                y = y.to(device, non_blocking=True)
                # the views' softmax scores averaged as for one net, each member's over its own K classes
                probs = predict_scores(every_member, x, device, precision, channels_last).view(len(y), n, -1)
                top = probs.topk(min(5, probs.shape[-1]), dim=-1).indices  # (B, N, k)
                correct = top.eq(y[:, None, None])
                sums[:, 0] += (~correct[..., 0]).sum(0)
                sums[:, 1] += (~correct.any(-1)).sum(0)
                nll = -probs.clamp_min(1e-12).log().gather(-1, y[:, None, None].expand(-1, n, 1)).squeeze(-1)
                sums[:, 2] += nll.sum(0).double()
                sums[:, 3] += y.numel()
        model.train(was_training)
        all_reduce_sum(sums)
        count_t = sums[:, 3].clamp_min(1.0)
        top1, top5, loss = (100.0 * sums[:, 0] / count_t, 100.0 * sums[:, 1] / count_t, sums[:, 2] / count_t)
        out: dict[str, float] = {}
        for i, s in enumerate(self.seeds):
            out.update({f"test_error_seed{s}": float(top1[i]), f"test_top5_error_seed{s}": float(top5[i]),
                        f"test_loss_seed{s}": float(loss[i])})
        out.update({"test_error": float(top1.mean()), "test_top5_error": float(top5.mean()),
                    "test_loss": float(loss.mean())})
        return out

    # -- the members' run folders ---------------------------------------------------------------------------
    def member_row(self, row: dict[str, Any], seed: int) -> dict[str, Any]:
        """A group metrics row (or final.json) as member ``seed``'s run would have logged it: its own ``*_seedS``
        figures under their plain names; the group's means of them, and the other members', left out."""
        tagged = tuple(f"_seed{s}" for s in self.seeds)
        means = {k[: -len(f"_seed{s}")] for k in row for s in self.seeds if k.endswith(f"_seed{s}")}
        out = {k: v for k, v in row.items() if not k.endswith(tagged) and k not in means}
        mine = f"_seed{seed}"
        out.update({k[: -len(mine)]: v for k, v in row.items() if k.endswith(mine)})
        return out

    def write_results(self, out: Path, cfg: RunCfg, model: nn.Module, final: dict[str, Any],
                      history: list[dict[str, Any]], meta: dict[str, str], extra: dict[str, Tensor]) -> None:
        """One run folder per member, as a separate run of its seed leaves it; the group keeps its rows and its
        final.json (the members' figures side by side)."""
        from resnet.fsutil import write_atomic

        self.write_members(out, cfg, model, final, history, meta, extra)
        write_atomic(out / "final.json", json.dumps(final, indent=1))

    def write_members(self, out: Path, cfg: RunCfg, model: nn.Module, final: dict[str, Any],
                      history: list[dict[str, Any]], meta: dict[str, str], extra: dict[str, Tensor]) -> list[Path]:
        """One run folder per member, as a separate run of its seed leaves it."""
        import tomli_w

        from resnet.config import to_dict
        from resnet.engine.rundir import write_results
        from resnet.engine.runlog import json_row
        from resnet.models.grouped import member_state
        from resnet.models.registry import create_model

        group_run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
        folders = []
        for index, seed in enumerate(self.seeds):
            folder = member_folder(out, seed)
            folder.mkdir(parents=True, exist_ok=True)
            member_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, seeds=()))
            (folder / "config.toml").write_text(tomli_w.dumps(to_dict(member_cfg)))
            options = dict(getattr(model.net, "options", {}))
            net = create_model(cfg.model.name, **options)
            net.load_state_dict(member_state(model, index))
            net.pretrained_cfg = self.trained_cfg  # how the member's images were normalized and resized
            rows = [self.member_row(r, seed) for r in history]
            (folder / "metrics.jsonl").write_text("".join(json.dumps(json_row(r)) + "\n" for r in rows))
            record = {**group_run, "group": str(out), "seeds": self.seeds, "member": seed}
            (folder / "run.json").write_text(json.dumps(record, indent=1))
            member_final = {k: v for k, v in self.member_row(final, seed).items() if not k.endswith("_loss")}
            write_results(folder, net, member_final, rows, meta, extra, label=cfg.model.name)
            folders.append(folder)
        return folders

