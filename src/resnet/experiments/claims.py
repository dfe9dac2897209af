"""The paper's qualitative claims, each tested on a study's seeds and stated with the statistic behind it.

A claim compares two groups of numbers (final errors, response stds), one value per seed. The statistic is the
difference of their means with its standard error, ``se = sqrt(s_a^2 / n_a + s_b^2 / n_b)`` (Welch: the groups
are independent nets, so pairing seed k of one net with seed k of another would mean nothing). The verdicts:

* an ordering claim ("plain-56 trains worse than plain-20") **held** when the difference is in the claimed
  direction by more than ``2 se``; **did not hold** when it is in the opposite direction by more than ``2 se``;
  otherwise it is **not shown** (the difference is within the noise of the seeds);
* a no-worse claim ("ResNet-56 ends at or below ResNet-20") **held** unless the difference is against it by more
  than ``2 se`` (then **did not hold**).

With one seed per net there is no spread: the claim is **not shown** whatever the direction, and the sentence says
which way the single runs went. Two standard errors is a loose test at 3 seeds (a t-test would ask for 4.3 at
2 degrees of freedom); the numbers are printed so a reader can apply a stricter one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from resnet.analysis.report import Section
from resnet.experiments.common import Scale

HELD, NOT_HELD, NOT_SHOWN = "held", "did not hold", "not shown"
Z = 2.0
"""Standard errors a difference must exceed to count as a finding."""


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a) over independent seeds, with its standard error (None with fewer than 2 seeds a side)."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    se: float | None

    @property
    def diff(self) -> float:
        return self.mean_b - self.mean_a


def difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """The difference of means of two groups of per-seed values and its Welch standard error."""
    if not a or not b:
        raise ValueError("a claim needs at least one value on each side")
    se = None
    if len(a) > 1 and len(b) > 1:
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return Difference(statistics.fmean(a), statistics.fmean(b), len(a), len(b), se)


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims as measured here."""

    source: str
    """Where the paper makes it (``Fig. 1, Fig. 6 left``)."""
    statement: str
    verdict: str
    """:data:`HELD`, :data:`NOT_HELD` or :data:`NOT_SHOWN`."""
    evidence: str
    """The statistic behind the verdict, in words and numbers."""

    def line(self) -> str:
        """The report's sentence: ``HELD - Fig. 1: ... (evidence)``."""
        return f"**{self.verdict.upper()}** ({self.source}): {self.statement}. {self.evidence}"


def _evidence(d: Difference, label_a: str, label_b: str, unit: str) -> str:
    fmt = "{:.2f}" if unit else "{:.3f}"
    spread = f", standard error {fmt.format(d.se)}{unit}" if d.se is not None else ""
    seeds = f"{d.n_b} vs {d.n_a} seed{'s' if max(d.n_a, d.n_b) > 1 else ''}"
    return (f"{label_b} {fmt.format(d.mean_b)}{unit} vs {label_a} {fmt.format(d.mean_a)}{unit}: difference "
            f"{d.diff:+.{2 if unit else 3}f}{unit}{spread} ({seeds}).")


def ordering(source: str, statement: str, a: Sequence[float], b: Sequence[float], label_a: str, label_b: str,
             b_larger: bool, unit: str = "") -> Claim:
    """The claim that b's values are larger (``b_larger``) or smaller than a's."""
    d = difference(a, b)
    sign = 1.0 if b_larger else -1.0
    text = _evidence(d, label_a, label_b, unit)
    if d.se is None:
        went = "the claimed" if sign * d.diff > 0 else "the opposite"
        return Claim(source, statement, NOT_SHOWN, f"{text} One seed on a side: no spread to judge it by; the single "
                                                   f"runs went {went} way.")
    if sign * d.diff > Z * d.se:
        return Claim(source, statement, HELD, text)
    if -sign * d.diff > Z * d.se:
        return Claim(source, statement, NOT_HELD, text + " The opposite ordering, beyond the seeds' noise.")
    return Claim(source, statement, NOT_SHOWN, text + f" Within {Z:g} standard errors: the seeds' noise.")


def no_worse(source: str, statement: str, a: Sequence[float], b: Sequence[float], label_a: str, label_b: str,
             unit: str = "") -> Claim:
    """The claim that b's values are not larger than a's (an error that does not grow with depth)."""
    d = difference(a, b)
    text = _evidence(d, label_a, label_b, unit)
    if d.se is None:
        went = "at or below" if d.diff <= 0 else "above"
        return Claim(source, statement, NOT_SHOWN, f"{text} One seed on a side: no spread to judge it by; the single "
                                                   f"run ended {went}.")
    if d.diff > Z * d.se:
        return Claim(source, statement, NOT_HELD, text + f" Worse by more than {Z:g} standard errors.")
    how = "lower" if d.diff < 0 else "equal" if d.diff == 0 else "higher, but within the seeds' noise"
    return Claim(source, statement, HELD, f"{text} ({how}).")


def attach(section: Section, scale: Scale, claims: Sequence[Claim]) -> None:
    """Put a study's claims in its section and in the report's first lines; at a scale where nothing has converged
    (smoke) say that they are not tested instead of printing verdicts that would be noise."""
    if not claims:
        return
    if not scale.claims:
        section.blocks.append("The paper's claims are not tested at this scale (the nets have barely started to "
                              "learn); `--scale digits` tests them on the embedded digits in minutes.")
        return
    lines = [c.line() for c in claims]
    section.blocks.extend(lines)
    section.headline.extend(lines)
