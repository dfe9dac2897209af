"""Golden test for the CIFAR family: an independent ResNet written from Sec. 4.2 alone must give identical outputs.

Parameter counts cannot catch a misplaced ReLU or a wrong option-A shortcut (both are parameter-free); this can.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet import create_model


class _Unit(nn.Module):
    """Two 3x3 convs with BN; ReLU after the first BN and after the addition (Fig. 2, Eq. 1)."""

    def __init__(self, cin: int, cout: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.residual, self.stride, self.pad = residual, stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            # Option A (Sec. 4.1/4.2): identity, subsampled by the stride, new channels zero-padded.
            shortcut = x[:, :, :: self.stride, :: self.stride]
            out = out + F.pad(shortcut, (0, 0, 0, 0, 0, self.pad))
        return F.relu(out)


class _ReferenceCifarNet(nn.Module):
    """3x3 conv/16, 3 stages of n units at 16/32/64 filters (stride 2 at the first unit of stages 2, 3), GAP, fc."""

    def __init__(self, n: int, residual: bool, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, width in enumerate((16, 32, 64)):
            units = [_Unit(cin if j == 0 else width, width, 2 if (j == 0 and i > 0) else 1, residual) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
            cin = width
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "n", "residual"), [("resnet20", 3, True), ("resnet56", 9, True),
                                                     ("plain20", 3, False), ("plain56", 9, False)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cifar_net_matches_an_independent_reference_written_from_section_4_2(name, n, residual, mode):
    torch.manual_seed(0)
    ours = create_model(name)
    reference = _ReferenceCifarNet(n, residual)
    for module in ours.modules():  # non-trivial BN statistics, so eval mode is tested too
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    reference.load_state_dict(ours.state_dict(), strict=True)
    ours.train(mode == "train")
    reference.train(mode == "train")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5, rtol=1e-5)
