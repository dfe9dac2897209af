"""Normalization study (not in the paper): BN, the paper's choice (Sec. 3.4), against batch-independent
and batch-corrected alternatives on the same net and recipe.

GN (Wu & He 2018), LN (one group), IN, FRN+TLU (Singh & Krishnan 2020) and Batch Renorm (Ioffe 2017) replace
every BN of the net; nothing else changes. The net is the CIFAR ResNet-20 at smoke and digits scale and
ResNet-56 at short and paper scale (``--nets`` picks another).
"""

from __future__ import annotations

from resnet.analysis.report import Section
from resnet.experiments.common import SCALES, Context, RunResult, RunSpec
from resnet.experiments.variants import Variant, plan_variants, ranking, variants_section
from resnet.paper import paper_error, pretty

NAME = "norms"
TITLE = "Normalization layers: BN vs GN, LN, IN, FRN, BRN"
NORMS = {"bn": "BN", "gn": "GN", "ln": "LN", "in": "IN", "frn": "FRN+TLU", "brn": "BRN"}


def study_net(ctx: Context) -> str:
    """ResNet-20 at the CPU-sized scales (smoke, digits), ResNet-56 otherwise; --nets overrides."""
    if ctx.nets:
        return ctx.nets[0]
    return "resnet20" if SCALES[ctx.scale].cpu_sized else "resnet56"


def variants(ctx: Context) -> list[Variant]:
    """One arm per norm; BN, the paper's, first."""
    net = study_net(ctx)
    # "bn" is the default, so its run is the plain net's (shared with the other studies).
    return [Variant(net if k == "bn" else f"{net}-norm{k}", f"{pretty(net)} {label}", {"name": net, "norm": k},
                    paper_error(net) if k == "bn" else None) for k, label in NORMS.items()]


def plan(ctx: Context) -> list[RunSpec]:
    """One run per norm and seed."""
    return plan_variants(ctx, variants(ctx))


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Curves and final errors of every norm."""
    sec = variants_section(ctx, TITLE, "norms", variants(ctx), specs, results,
                           "Final errors (%); paper = Table 6 CIFAR-10 for BN (the paper tries no other norm)")
    sec.blocks.append(ranking(sec))
    sec.blocks.append("Same recipe for every norm (lr, weight decay and schedule tuned for BN by the paper); the "
                      "alternatives might do better with their own tuning. BN and BRN use running statistics at "
                      "test time, the others normalize each image by itself.")
    return sec
