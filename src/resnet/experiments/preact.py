"""Pre-activation study (Identity Mappings, He et al., ECCV 2016): the original post-activation ResNet-110
(conv-BN-ReLU, ReLU after the addition) against full pre-activation units (BN-ReLU-conv, nothing after the
addition) at 110 layers (basic units) and 164 layers (bottlenecks). CIFAR-10 test error (Identity Mappings
Tables 2-3): 6.61% original ResNet-110 (the CVPR paper's mean over 5 runs; its best run, Table 6, is 6.43%),
6.37% pre-act 110, 5.46% pre-act 164.
"""

from __future__ import annotations

from resnet.analysis.report import Section
from resnet.experiments.common import Context, RunResult, RunSpec
from resnet.experiments.variants import Variant, plan_variants, ranking, variants_section
from resnet.paper import PREACT_ERROR, pretty

NAME = "preact"
TITLE = "Original vs pre-activation units (Identity Mappings)"
NETS = ("resnet110", "preact_resnet110", "preact_resnet164")
SMALL_NETS = ("resnet56", "preact_resnet56")
"""The same comparison at 56 layers, where a scale stops short of 110 (the digits scale)."""


def variants(ctx: Context) -> list[Variant]:
    """Original ResNet-110, pre-activation ResNet-110 and ResNet-164 (56-layer pair at the digits scale)."""
    nets = ctx.nets_or(NETS) or ctx.nets_or(SMALL_NETS)
    return [Variant(net, pretty(net), {"name": net}, PREACT_ERROR.get(net)) for net in nets]


def plan(ctx: Context) -> list[RunSpec]:
    """One run per net and seed."""
    return plan_variants(ctx, variants(ctx))


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Curves and final errors beside the Identity Mappings numbers."""
    sec = variants_section(ctx, TITLE, "preact", variants(ctx), specs, results,
                           "Final errors (%); paper = Identity Mappings Tables 2-3 (CIFAR-10; its original "
                           "ResNet-110, 6.61, is the CVPR paper's mean over 5 runs)")
    sec.blocks.append(ranking(sec))
    sec.blocks.append("On CIFAR-10 the paper's gain from pre-activation is small at 110 layers (6.61% -> 6.37%) "
                      "and grows "
                      "with depth; with the paper's recipe the 110+ nets start at lr 0.01 until training error "
                      "is below 80% (Sec. 4.2).")
    return sec
