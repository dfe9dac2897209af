"""Exact parameter counts (torchvision's for resnet18..152; Table 6 and Identity Mappings round the CIFAR ones) and
multiply-adds at 224x224 (paper Table 1; measured v1 / v1.5 pinned)."""

import pytest
import torch
from torch import nn

import resnet
from resnet.analysis.complexity import count_macs, count_parameters, stage_table
from resnet.analysis.summary import format_summary, format_zoo

PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
}
# Multiply-adds at 224x224: (v1 measured, v1.5 measured); Table 1 gives 1.8, 3.6, 3.8, 7.6, 11.3 (x 1e9).
MACS = {
    "resnet18": (1.814e9, 1.814e9),
    "resnet34": (3.664e9, 3.664e9),
    "resnet50": (3.858e9, 4.089e9),
    "resnet101": (7.570e9, 7.801e9),
    "resnet152": (11.282e9, 11.514e9),
}


def meta(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return resnet.create_model(name, **options)


@pytest.mark.parametrize(("name", "expected"), PARAMS.items(), ids=[f"{n}_has_{p}" for n, p in PARAMS.items()])
def test_parameter_count_matches_reference(name, expected):
    assert count_parameters(meta(name)) == expected


# Identity Mappings (Table 2/3) rounds these to 1.7M, 1.7M and 10.2M; no conv has a bias, the bare 1x1 projection
# of its released code included (resnet-1k-layers' ConvInit removes every conv bias).
PREACT_PARAMS = {"preact_resnet110": 1_727_962, "preact_resnet164": 1_703_258, "preact_resnet1001": 10_327_706}


@pytest.mark.parametrize(("name", "expected"), PREACT_PARAMS.items())
def test_preact_parameter_counts_have_no_conv_biases(name, expected):
    model = meta(name)
    assert count_parameters(model) == expected
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_resnet56_has_853018_parameters():
    assert count_parameters(resnet.create_model("resnet56")) == 853_018


@pytest.mark.parametrize("name", ["resnet50", "resnet152"])
def test_imagenet_parameter_count_is_the_same_for_v1_and_v15(name):
    assert count_parameters(meta(name, stride_in_1x1=False)) == PARAMS[name]


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152, 20, 56, 110])
def test_option_a_adds_no_parameters_over_the_plain_net(depth):
    assert count_parameters(meta(f"resnet{depth}", shortcut="A")) == count_parameters(meta(f"plain{depth}"))


def test_option_c_adds_projections_on_every_unit():
    a, b, c = (count_parameters(meta("resnet34", shortcut=s)) for s in "ABC")
    assert a < b < c
    # B: three projections (conv+BN) where dims change, 128/256/512 outputs (Table 3 footnote).
    assert b - a == sum(i * o + 2 * o for i, o in ((64, 128), (128, 256), (256, 512)))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "v1", "v15"), [(n, *m) for n, m in MACS.items()])
def test_multiply_adds_at_224_within_half_percent_of_reference(name, v1, v15):
    assert count_macs(meta(name, stride_in_1x1=True), 224) == pytest.approx(v1, rel=5e-3)
    assert count_macs(meta(name, stride_in_1x1=False), 224) == pytest.approx(v15, rel=5e-3)


def test_multiply_adds_within_paper_table1_rounding():
    for name, paper in [("resnet18", 1.8e9), ("resnet34", 3.6e9), ("resnet50", 3.8e9), ("resnet152", 11.3e9)]:
        assert count_macs(meta(name), 224) == pytest.approx(paper, rel=0.03)


def test_count_macs_on_a_real_model_equals_meta_and_keeps_training_mode():
    model = resnet.create_model("resnet20")
    model.train()
    before = model.bn1.running_mean.clone()
    assert count_macs(model, 32) == count_macs(meta("resnet20"), 32) == 40_551_040
    assert model.training and torch.equal(model.bn1.running_mean, before)


@pytest.mark.parametrize(("name", "size"), [("resnet50", 224), ("resnet56", 32), ("preact_resnet164", 32)])
def test_stage_table_rows_sum_to_totals(name, size):
    model = meta(name)
    rows = stage_table(model, size)
    assert sum(r.params for r in rows) == count_parameters(model)
    assert sum(r.macs for r in rows) == count_macs(model, size)


def test_stage_table_uses_table1_names_and_output_sizes():
    rows = stage_table(meta("resnet50"), 224)
    assert [(r.name, r.output_size, r.blocks) for r in rows] == [
        ("conv1", (112, 112), 1),
        ("conv2_x", (56, 56), 3),
        ("conv3_x", (28, 28), 4),
        ("conv4_x", (14, 14), 6),
        ("conv5_x", (7, 7), 3),
        ("fc", (1, 1), 1),
    ]
    cifar = stage_table(meta("resnet56"), 32)
    assert [(r.name, r.output_size) for r in cifar][1:4] == [("conv2_x", (32, 32)), ("conv3_x", (16, 16)),
                                                              ("conv4_x", (8, 8))]


def test_format_summary_shows_table1_rows_and_the_paper_figure():
    text = format_summary("resnet50")
    for needle in ("conv1", "conv5_x", "112x112", "7x7", "[1x1, 64; 3x3, 64; 1x1, 256] x3", "25,557,032",
                   "3.858e9", "paper: 3.8e9"):
        assert needle in text
    assert "4.089e9" in format_summary("resnet50", stride_in_1x1=False)
    assert "paper: 0.85M" in format_summary("resnet56")


def test_format_summary_honours_input_size():
    assert "at 64x64" in format_summary("resnet18", input_size=64)


@pytest.mark.slow
def test_format_zoo_lists_every_registered_model():
    lines = format_zoo().splitlines()
    assert len(lines) == 1 + len(resnet.list_models())
    assert any(line.startswith("resnet1202") and "19,421,274" in line for line in lines)
