"""The claims' statistic and verdicts, checked against hand-computed numbers."""

import math

import pytest

from resnet.analysis.report import Section
from resnet.experiments.claims import HELD, NOT_HELD, NOT_SHOWN, attach, difference, no_worse, ordering
from resnet.experiments.common import SCALES


def test_difference_is_welch_on_independent_seeds():
    d = difference([1.0, 2.0, 3.0], [4.0, 6.0])
    assert d.diff == pytest.approx(5.0 - 2.0)
    # sample variances 1 and 2: sqrt(1/3 + 2/2)
    assert d.se == pytest.approx(math.sqrt(1 / 3 + 1.0))
    assert (d.n_a, d.n_b) == (3, 2)


def test_one_seed_has_no_standard_error():
    assert difference([1.0], [2.0, 3.0]).se is None
    with pytest.raises(ValueError):
        difference([], [1.0])


@pytest.mark.parametrize(("b", "verdict"), [
    ([10.0, 10.5, 11.0], HELD),  # +8.5 with se ~0.29: beyond 2 se
    ([2.2, 2.6, 1.9], NOT_SHOWN),  # +0.23, within the noise
    ([0.0, 0.2, 0.1], NOT_HELD),  # the opposite ordering, beyond 2 se
])
def test_ordering_verdicts(b, verdict):
    claim = ordering("Fig. 1", "deep trains worse", [2.0, 2.5, 1.5], b, "shallow", "deep", b_larger=True, unit="%")
    assert claim.verdict == verdict
    assert "shallow 2.00% vs" in claim.evidence or "vs shallow 2.00%" in claim.evidence
    assert "standard error" in claim.evidence


def test_ordering_smaller_direction():
    claim = ordering("Fig. 7", "deeper responses are smaller", [1.0, 1.1, 0.9], [0.5, 0.55, 0.45], "a", "b",
                     b_larger=False)
    assert claim.verdict == HELD
    assert "-0.500" in claim.evidence


def test_no_worse_holds_unless_worse_beyond_noise():
    a = [5.0, 5.5, 4.5]
    assert no_worse("Table 6", "s", a, [4.0, 4.2, 3.8], "20", "56").verdict == HELD
    assert no_worse("Table 6", "s", a, [5.3, 5.8, 4.9], "20", "56").verdict == HELD  # higher, within noise
    worse = no_worse("Table 6", "s", a, [9.0, 9.5, 8.5], "20", "56")
    assert worse.verdict == NOT_HELD
    assert "Worse by more than 2 standard errors" in worse.evidence


def test_one_seed_is_never_held_but_says_which_way_it_went():
    claim = ordering("Fig. 1", "s", [1.0], [9.0], "a", "b", b_larger=True)
    assert claim.verdict == NOT_SHOWN
    assert "went the claimed way" in claim.evidence
    assert no_worse("Table 6", "s", [1.0], [9.0], "a", "b").verdict == NOT_SHOWN


def test_claim_line_leads_with_its_verdict():
    line = ordering("Fig. 1", "deep trains worse", [1.0, 1.2], [5.0, 5.2], "a", "b", b_larger=True).line()
    assert line.startswith("**HELD** (Fig. 1): deep trains worse.")


def test_attach_puts_verdicts_in_the_headline_except_at_smoke_scale():
    claims = [ordering("Fig. 1", "s", [1.0, 1.2], [5.0, 5.2], "a", "b", b_larger=True)]
    sec = Section("t")
    attach(sec, SCALES["digits"], claims)
    assert sec.headline == [claims[0].line()] and claims[0].line() in sec.blocks
    smoke = Section("t")
    attach(smoke, SCALES["smoke"], claims)
    assert smoke.headline == []
    assert "not tested at this scale" in smoke.blocks[0]
