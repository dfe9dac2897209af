"""timm's backbone interface for our nets: ``FeatureInfo``, feature indices and the ``features_only`` module.

Feature indices, as timm numbers a ResNet's: 0 is the stem's output (after its ReLU and before the max pool:
reduction 2 on the ImageNet stem, timm's ``act1``, our ``relu``), 1..S are layer1..layerS (Table 1's conv2_x..;
S = 4 on the ImageNet nets, 3 on the CIFAR nets, whose stages sit at reductions 1, 2, 4).

Loading weights into a ``features_only`` module: it keeps torchvision's module names (conv1, bn1, relu, maxpool,
layer1, ...), so a state dict of the full net (ours, or torchvision's for the same architecture) loads with a plain
strict ``load_state_dict(state)``: a load pre-hook first drops the keys of the modules the backbone leaves out
(``fc``, a pre-activation net's ``bn_final``, and the stages after the last selected one). Every other key must
be present and match, so a state dict for another architecture still fails loudly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from resnet.errors import ModelError
from resnet.models.grad_checkpoint import run_stage

STEM: tuple[str, ...] = ("conv1", "bn1", "relu", "maxpool")


class FeatureInfo:
    """Channels, reduction and module name of each feature index, as timm's ``FeatureInfo``.

    Without ``idx`` the accessors answer for the selected ``out_indices``; with an int or a list of ints, for
    those feature indices whatever is selected.
    """

    def __init__(self, info: Sequence[Mapping[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(d, index=i) for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        """The same features with another selection."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of the selected features (``idx`` None), of feature ``idx``, or of each index in ``idx``."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The info dicts (restricted to ``keys``) of the selected features, or of ``idx``."""
        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        return pick(idx) if isinstance(idx, int) else [pick(i) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Output channels."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Total stride from the input."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """The module whose output the feature is."""
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


def take_indices(count: int, indices: int | Sequence[int] | None, arch: str = "") -> tuple[list[int], int]:
    """timm's index convention: None = every feature, an int n = the last n, a sequence = those (negative ones
    count from the end). Returns (indices in ascending order without repeats, the largest)."""
    what = f"{arch}: " if arch else ""
    valid = f"valid: 0..{count - 1} (0 = stem, 1..{count - 1} = layer1..layer{count - 1}) or -{count}..-1"
    if indices is None:
        indices = count
    if isinstance(indices, bool) or not isinstance(indices, (int, Sequence)) or isinstance(indices, str):
        raise ModelError(f"{what}feature indices must be an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ModelError(f"{what}last-n feature count {indices} is out of range; valid: 1..{count}")
        taken = list(range(count - indices, count))
    else:
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count]
        if bad or not indices:
            raise ModelError(f"{what}feature indices {tuple(indices)} out of range; {valid}")
        taken = sorted({i % count for i in indices})
    return taken, taken[-1]


class ResNetFeatures(nn.Module):
    """The net up to its last selected stage; ``forward`` returns the selected features, shallowest first
    (timm's ``features_only`` module). Module names are torchvision's, so torchvision's ``BackboneWithFPN`` and
    ``IntermediateLayerGetter`` take it as they take the full net."""

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        names = tuple(model.stage_names)
        arch = getattr(model, "arch", "") or type(model).__name__
        default = tuple(range(1, len(names) + 1))  # every stage, not the stem
        taken, last = take_indices(len(names) + 1, default if out_indices is None else out_indices, arch)
        self.out_indices = tuple(taken)
        self.stage_names = names[:last]
        keep = (*STEM, *self.stage_names)
        for name in keep:
            self.add_module(name, getattr(model, name))
        self.left_out = tuple(name for name, _ in model.named_children() if name not in keep)
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.grad_checkpointing = bool(getattr(model, "grad_checkpointing", False))
        self.register_load_state_dict_pre_hook(self._drop_left_out)

    def _drop_left_out(self, _module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *_args: Any) -> None:
        dropped = tuple(f"{prefix}{name}." for name in self.left_out)
        for key in [k for k in state_dict if k.startswith(dropped)]:
            del state_dict[key]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each unit's activations in the backward pass instead of keeping them (see grad_checkpoint)."""
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x] if 0 in self.out_indices else []
        x = self.maxpool(x)
        for i, name in enumerate(self.stage_names, start=1):
            x = run_stage(getattr(self, name), x, self.grad_checkpointing and self.training)
            if i in self.out_indices:
                features.append(x)
        return features
