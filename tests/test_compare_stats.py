"""Paired statistics of a comparison against scipy, exact sums, hand-written Holm and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from auditor.comparison.stats import (
    holm,
    mcnemar_exact,
    normal_quantile,
    paired_difference_interval,
    wilson_interval,
)


def exact_two_sided(b: int, c: int) -> float:
    """2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), as an exact fraction of integers."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (0, 7), (15, 1), (3, 3), (5, 9), (23, 0), (400, 520),
                                      (1000, 1100), (2500, 2400)])
def test_mcnemar_matches_scipy_and_the_exact_sum(b: int, c: int) -> None:
    p = mcnemar_exact(b, c)
    assert p == pytest.approx(exact_two_sided(b, c), rel=1e-10, abs=1e-300)
    if b + c:
        assert p == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-300)
    assert mcnemar_exact(c, b) == p  # symmetric in the two models


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="discordant counts"):
        mcnemar_exact(-1, 3)


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's adjusted p-values written as the textbook loops (NaN: not a test)."""
    tests = [(v, i) for i, v in enumerate(p) if not math.isnan(v)]
    tests.sort()
    m = len(tests)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(tests):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


def test_holm_matches_the_textbook_procedure() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        p = list(rng.uniform(0, 0.2, size=12) ** 2)
        p[trial % 12] = math.nan
        got = holm(p)
        want = holm_by_hand(p)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
        # the sequential rule at 0.05: reject p_(1..r) while p_(i) <= 0.05 / (m - i + 1)
        finite = sorted(v for v in p if not math.isnan(v))
        m, rejected = len(finite), 0
        while rejected < m and finite[rejected] <= 0.05 / (m - rejected):
            rejected += 1
        assert int(np.sum(got <= 0.05)) == rejected


def test_holm_worked_example() -> None:
    # Holm (1979) style example: four tests; adjusted = max-accumulated (4, 3, 2, 1) x sorted p
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([math.nan, math.nan])).all()


def test_wilson_interval_formula() -> None:
    z = normal_quantile(0.95)
    assert z == pytest.approx(1.959963984540054)
    # Wilson (1927) from its quadratic: p solves (x/n - p)^2 = z^2 p (1 - p) / n
    x, n = 7, 20
    low, high = wilson_interval(x, n)
    for p in (low, high):
        assert (x / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_paired_interval_matches_the_published_example() -> None:
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8: the paired
    # table of Cavo et al. (2012) [[59, 6], [16, 80]]; Newcombe's square-and-add interval for p1+ - p+1 is
    # -0.0621 (95% CI -0.1186 to -0.0046).
    low, high = paired_difference_interval(59, 6, 16, 80)
    assert round(low, 4) == -0.1186 and round(high, 4) == -0.0046


def newcombe_reference(a: int, b: int, c: int, d: int, z: float) -> tuple[float, float]:
    """Newcombe (1998), method 10, written from the paper's formulas (phi with its three cases)."""
    n = a + b + c + d

    def wilson(x: int) -> tuple[float, float]:
        p = x / n
        roots = np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p])  # (p - P)^2 = z^2 P (1 - P) / n
        return float(min(roots.real)), float(max(roots.real))

    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b), wilson(a + c)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    ad_bc = a * d - b * c
    if denom == 0:
        phi = 0.0
    elif ad_bc > n / 2:
        phi = (ad_bc - n / 2) / math.sqrt(denom)
    elif ad_bc < 0:
        phi = ad_bc / math.sqrt(denom)
    else:
        phi = 0.0
    dl, du = p1 - l1, u1 - p1
    el, eu = p2 - l2, u2 - p2
    return (p1 - p2 - math.sqrt(dl**2 - 2 * phi * dl * eu + eu**2),
            p1 - p2 + math.sqrt(el**2 - 2 * phi * el * du + du**2))


def test_paired_interval_matches_a_reference_on_random_tables() -> None:
    rng = np.random.default_rng(0)
    z = normal_quantile(0.95)
    for _ in range(200):
        a, b, c, d = (int(v) for v in rng.integers(0, 40, size=4))
        if a + b + c + d == 0:
            continue
        got = paired_difference_interval(a, b, c, d)
        want = newcombe_reference(a, b, c, d, z)
        np.testing.assert_allclose(got, want, atol=1e-7)
        assert got[0] <= (b - c) / (a + b + c + d) <= got[1]
        swapped = paired_difference_interval(a, c, b, d)  # the other difference: the interval mirrors
        np.testing.assert_allclose(swapped, (-got[1], -got[0]), atol=1e-12)


def test_paired_interval_edge_cases() -> None:
    low, high = paired_difference_interval(50, 0, 0, 0)  # identical, all right: no evidence either way
    assert low < 0 < high
    assert all(math.isnan(v) for v in paired_difference_interval(0, 0, 0, 0))
    low, high = paired_difference_interval(0, 30, 0, 0)  # first all right, second all wrong
    assert high == pytest.approx(1.0) and 0.8 < low < 1.0
    wider = paired_difference_interval(59, 6, 16, 80, confidence=0.99)
    narrow = paired_difference_interval(59, 6, 16, 80, confidence=0.95)
    assert wider[0] < narrow[0] and wider[1] > narrow[1]
