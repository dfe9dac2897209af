"""Initialization study: the paper's He init (Sec. 3.4, "we initialize the weights as in [13]") against
Xavier/Glorot init, each with and without zero-initialized residual branches (Goyal et al. 2017: the last BN
of each branch starts at zero, so every unit starts as its identity shortcut).

The net is the CIFAR ResNet-20 at smoke and digits scale and ResNet-56 at short and paper scale (``--nets`` picks
another).
"""

from __future__ import annotations

from resnet.analysis.report import Section
from resnet.experiments.common import Context, RunResult, RunSpec
from resnet.experiments.norms import study_net
from resnet.experiments.variants import Variant, plan_variants, ranking, variants_section
from resnet.paper import paper_error, pretty

NAME = "init"
TITLE = "Initialization: He (kaiming_normal) vs Xavier, zero-init residual on/off"
ARMS = (("kaiming_normal", False), ("xavier_normal", False), ("kaiming_normal", True), ("xavier_normal", True))


def variants(ctx: Context) -> list[Variant]:
    """The 2 x 2 grid: He or Xavier, zero-init residual off or on."""
    net = study_net(ctx)
    out = []
    for init, zero in ARMS:
        # The paper's arm (He init, no zero-init) is the default config: its run is shared with other studies.
        suffix = ("" if init == "kaiming_normal" else "-xavier") + ("-zeroinit" if zero else "")
        label = f"{pretty(net)} {'He' if init == 'kaiming_normal' else 'Xavier'}{' + zero-init' if zero else ''}"
        paper = paper_error(net) if init == "kaiming_normal" and not zero else None
        out.append(Variant(net + suffix, label, {"name": net, "init": init, "zero_init_residual": zero}, paper))
    return out


def plan(ctx: Context) -> list[RunSpec]:
    """One run per arm and seed."""
    return plan_variants(ctx, variants(ctx))


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Curves and final errors of the four arms."""
    sec = variants_section(ctx, TITLE, "init", variants(ctx), specs, results,
                           "Final errors (%); paper = Table 6 CIFAR-10 for its own init (He, no zero-init)")
    sec.blocks.append(ranking(sec))
    sec.blocks.append("With BN after every conv the init matters less than without it (Sec. 3.4 relies on BN "
                      "and [13] together); zero-init mostly speeds up the first iterations of deep nets.")
    return sec
