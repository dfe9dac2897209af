"""The training loss of a classification run: the paper's softmax cross-entropy, or the modern recipes' label
smoothing, MixUp / CutMix and binary cross-entropy.

Why one object: the three interact (a mixed batch has soft targets, which smoothing and BCE then read), and the
paper's path must stay the exact call it always was (``F.cross_entropy(logits, y)``), so everything else is taken
only when a field asks for it. The batch mixing is torchvision's (``transforms.v2.MixUp`` / ``CutMix``, one of the
two per batch when both are on, as torchvision's references/classification/train.py picks). Its draws come from
torch's global generator, which every checkpoint saves and a resume restores, so a resumed run mixes exactly as an
uninterrupted one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from resnet.config import DataCfg, TrainCfg


class TrainingLoss:
    """``loss, wrong = criterion(model, x, y)``: the scalar float32 loss and the wrong-prediction count (scored
    against the batch's own labels, before any mixing)."""

    def __init__(self, train: TrainCfg, data: DataCfg, num_classes: int) -> None:
        self.smoothing, self.bce, self.num_classes = train.label_smoothing, train.loss == "bce", num_classes
        self.mix = _mixer(data.mixup_alpha, data.cutmix_alpha, num_classes)

    @property
    def paper(self) -> bool:
        """Whether this is the paper's loss (softmax cross-entropy on the labels as they are)."""
        return self.mix is None and not self.smoothing and not self.bce

    @property
    def random(self) -> bool:
        """Whether the loss draws random numbers (a captured CUDA graph would replay one draw forever)."""
        return self.mix is not None

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.paper:
            logits = model(x)
            return F.cross_entropy(logits.float(), y), (logits.argmax(1) != y).sum().reshape(1)
        target = F.one_hot(y, self.num_classes).float()
        if self.mix is not None:
            x, target = self.mix(x, y)
        logits = model(x).float()
        wrong = (logits.argmax(1) != y).sum().reshape(1)
        if self.bce:  # timm's BinaryCrossEntropy: smoothed one-hot targets, each class its own sigmoid
            target = target * (1 - self.smoothing) + self.smoothing / self.num_classes
            return F.binary_cross_entropy_with_logits(logits, target), wrong
        return F.cross_entropy(logits, target.to(logits.dtype), label_smoothing=self.smoothing), wrong


def _mixer(mixup: float, cutmix: float, num_classes: int) -> nn.Module | None:
    from torchvision.transforms import v2

    chosen = ([v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup else []) + \
        ([v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix else [])
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


__all__ = ["TrainingLoss"]
