"""Interference matrices against plain-loop re-implementations of docs/concepts.md, "Interference"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.cct import CrossClassTestResult
from auditor.gradients import ClassGradients, EgoDirections
from auditor.interference import (
    ILL_CONDITIONED_FRACTION,
    NO_FALL,
    InterferenceResult,
    finite_step_interference,
    first_order_interference,
    gradient_conflict,
    gram,
    ill_conditioned,
    interference,
    loss_changes,
    mean_loss,
    pair_score,
    ranked_pairs,
    superseded_pair_score,
)


def _gradients(rng: np.random.Generator, classes: tuple[int, ...], p: int) -> ClassGradients:
    flat = rng.standard_normal((len(classes), p)).astype(np.float32)
    k = max(classes) + 1
    return ClassGradients(classes=classes, names=("w",), shapes=((p,),), flat=flat, losses=np.ones(k),
                          counts=np.ones(k, dtype=np.int64))


def test_gradient_conflict_is_minus_cosine_with_nan_for_absent_classes() -> None:
    g = _gradients(np.random.default_rng(0), (0, 1, 3), 7)
    c = gradient_conflict(g, 5)
    for i, a in enumerate(g.classes):
        for j, b in enumerate(g.classes):
            u, v = g.flat[i].astype(float), g.flat[j].astype(float)
            assert c[a, b] == pytest.approx(-(u @ v) / math.sqrt((u @ u) * (v @ v)), rel=1e-9)
    assert np.isnan(c[2]).all() and np.isnan(c[:, 4]).all()


@pytest.mark.parametrize("chunk", [1, 64, 1000, 1 << 16])
def test_gram_in_blocks_is_the_float64_product(chunk: int) -> None:
    flat = (np.random.default_rng(2).standard_normal((3, 1000)) * 1e3).astype(np.float32)
    wide = flat.astype(np.float64)
    np.testing.assert_allclose(gram(flat, chunk), wide @ wide.T, rtol=1e-12)


@pytest.mark.parametrize("chunk", [2, 1 << 16])
def test_first_order_interference_matches_plain_loop(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # the module, not the function auditor.interference; 2: five float64 blocks of 9 parameters
    monkeypatch.setattr(sys.modules["auditor.interference"], "GRAM_CHUNK", chunk)
    rng = np.random.default_rng(1)
    g = _gradients(rng, (0, 1, 2), 9)
    d = -g.flat[[0, 2]] * rng.uniform(0.5, 2.0, size=(2, 9)).astype(np.float32)  # descent-ish, not parallel to g
    dirs = EgoDirections(classes=(0, 2), names=("w",), shapes=((9,),), flat=d.astype(np.float32),
                         normalization="filter", include_1d=False, alpha_max=np.array([0.2, 0.2]))
    i1 = first_order_interference(g, dirs, 3)
    for i, c in enumerate(dirs.classes):
        for j, c2 in enumerate(g.classes):
            expected = (g.flat[j].astype(float) @ d[i]) / -(g.flat[c].astype(float) @ d[i])
            assert i1[c, c2] == pytest.approx(expected, rel=1e-9)
        assert i1[c, c] == pytest.approx(-1.0)
    assert np.isnan(i1[1]).all()


def _cct(loss: np.ndarray, alphas: np.ndarray, ego: tuple[int, ...], counts: np.ndarray | None = None,
         step_scale: np.ndarray | None = None) -> CrossClassTestResult:
    n, k, a = loss.shape
    return CrossClassTestResult(alphas=alphas, step_scale=np.ones(n) if step_scale is None else step_scale,
                                ego_classes=ego, loss=loss, accuracy=np.zeros_like(loss), flow=None,
                                flow_top_classes=None, flow_top_share=None,
                                counts=np.ones(k, dtype=np.int64) if counts is None else counts,
                                zero_index=int(np.flatnonzero(alphas == 0)[0]), normalization="filter")


def test_finite_step_interference_uses_the_first_step_with_one_percent_fall() -> None:
    alphas = np.array([-0.2, -0.1, 0.0, 0.1, 0.2])
    loss = np.zeros((1, 3, 5))
    loss[0, 0] = [1.2, 1.1, 1.0, 0.995, 0.9]  # falls 0.5% at 0.1 (too little), 10% at 0.2
    loss[0, 1] = [2.0, 2.0, 2.0, 2.5, 2.3]
    loss[0, 2] = [3.0, 3.0, 3.0, 3.0, 2.9]
    i, alpha_s, reasons = finite_step_interference(_cct(loss, alphas, (0,)))
    assert alpha_s[0] == 0.2 and not reasons
    assert i[0, 1] == pytest.approx((2.3 - 2.0) / (1.0 - 0.9))
    assert i[0, 2] == pytest.approx((2.9 - 3.0) / (1.0 - 0.9))
    assert i[0, 0] == pytest.approx(-1.0)


def test_finite_step_interference_halves_then_gives_nan_with_reason() -> None:
    alphas = np.array([-0.2, 0.0, 0.2])
    loss = np.zeros((2, 2, 3))
    loss[0, 0] = [1.0, 1.0, 1.05]  # class 0: rises on the grid
    loss[0, 1] = [1.0, 1.0, 1.0]
    loss[1, 1] = [1.0, 1.0, 1.2]  # class 1: rises, and never falls when halving
    loss[1, 0] = [1.0, 1.0, 1.0]
    calls = []

    def evaluate(i: int, alpha: float) -> np.ndarray:
        calls.append((i, alpha))
        if i == 0:  # falls by 0.2% at α = 0.05 (second halving)
            return np.array([1.0 - (0.002 if alpha <= 0.05 else 0.0), 1.3])
        return np.array([1.0, 1.0 + alpha])

    i, alpha_s, reasons = finite_step_interference(_cct(loss, alphas, (0, 1)), evaluate)
    assert calls[:2] == [(0, 0.1), (0, 0.05)]
    assert alpha_s[0] == pytest.approx(0.05)
    assert i[0, 1] == pytest.approx(0.3 / 0.002)
    assert reasons == {1: NO_FALL} and np.isnan(i[1]).all()
    assert sum(1 for c in calls if c[0] == 1) == 10  # up to 10 halvings


def test_superseded_pair_score_takes_the_max_of_defined_entries() -> None:
    i = np.array([[-1.0, 0.5, np.nan], [0.2, -1.0, np.nan], [0.7, np.nan, -1.0]])
    s = superseded_pair_score(i)
    assert s[0, 1] == s[1, 0] == 0.5
    assert s[0, 2] == s[2, 0] == 0.7  # I[0,2] undefined: I[2,0] alone
    assert np.isnan(s[1, 2]) and np.isnan(np.diag(s)).all()
    assert ranked_pairs(s, 5) == [(0, 2, 0.7), (0, 1, 0.5)]


def _random_cct(seed: int = 0) -> tuple[CrossClassTestResult, np.ndarray]:
    """K = 6: class 5 absent from the data, class 3 present but without a CCT row; uneven grid."""
    rng = np.random.default_rng(seed)
    k = 6
    alphas = np.array([-0.3, -0.1, 0.0, 0.05, 0.2, 0.4])  # α₁ = 0.05, not the grid spacing
    ego = (0, 1, 2, 4)
    counts = np.array([10, 30, 7, 12, 21, 0])
    base = rng.uniform(0.05, 2.0, k)
    base[5] = np.nan
    loss = np.repeat(base[None, :, None], len(ego), axis=0) + rng.normal(0, 0.3, (len(ego), k, len(alphas)))
    loss[:, :, 2] = base  # the α = 0 column is L_c(θ*)
    loss[:, 5] = np.nan
    return _cct(loss, alphas, ego, counts), base


def _r_by_loops(cct: CrossClassTestResult, base: np.ndarray) -> np.ndarray:
    """docs/concepts.md's R written out pair by pair, straight from the CCT losses."""
    k = len(base)
    present = [c for c in range(k) if cct.counts[c] > 0]
    l_mean = sum(cct.counts[c] * base[c] for c in present) / sum(cct.counts[c] for c in present)
    a1 = list(cct.alphas).index(0.05)

    def term(a: int, b: int) -> float | None:  # ΔL_b|a, None without a CCT row of a
        if a not in cct.ego_classes:
            return None
        return float(cct.loss[cct.ego_classes.index(a), b, a1] - base[b])

    r = np.full((k, k), np.nan)
    for a in range(k):
        for b in range(k):
            if a == b or cct.counts[a] == 0 or cct.counts[b] == 0:
                continue
            t_ab, t_ba = term(a, b), term(b, a)
            if t_ab is not None and t_ba is not None:
                r[a, b] = (t_ab + t_ba) / l_mean
            elif t_ab is not None or t_ba is not None:
                r[a, b] = 2 * (t_ab if t_ab is not None else t_ba) / l_mean  # type: ignore[operator]
    return r


def test_pair_score_r_equals_a_computation_from_the_cct_losses() -> None:
    cct, base = _random_cct()
    delta, alpha_1 = loss_changes(cct)
    loss = mean_loss(cct)
    r, one_sided = pair_score(delta, loss)
    np.testing.assert_allclose(r, _r_by_loops(cct, base), rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(r, r.T)  # symmetric (NaN where NaN)
    np.testing.assert_array_equal(np.isnan(r), np.isnan(r.T))
    np.testing.assert_array_equal(alpha_1, [0.05, 0.05, 0.05, np.nan, 0.05, np.nan])
    # one-sided: pairs of class 3 (no CCT row) with present classes that have one
    expected = np.zeros((6, 6), dtype=bool)
    for c in (0, 1, 2, 4):
        expected[3, c] = expected[c, 3] = True
    np.testing.assert_array_equal(one_sided, expected)
    assert np.isnan(r[5]).all() and np.isnan(np.diag(r)).all()


def test_alpha_1_follows_the_step_scale() -> None:
    cct, _ = _random_cct()
    scaled = _cct(np.asarray(cct.loss), np.asarray(cct.alphas), cct.ego_classes, np.asarray(cct.counts),
                  step_scale=np.array([2.0, 0.5, 1.0, 3.0]))
    _, alpha_1 = loss_changes(scaled)
    np.testing.assert_allclose(alpha_1, [0.1, 0.025, 0.05, np.nan, 0.15, np.nan])
    only_negative = _cct(np.asarray(cct.loss)[:, :, :3], np.asarray(cct.alphas)[:3], cct.ego_classes,
                         np.asarray(cct.counts))
    delta, alpha_1 = loss_changes(only_negative)
    assert np.isnan(alpha_1).all() and np.isnan(pair_score(delta, mean_loss(only_negative))[0]).all()


def test_r_does_not_blow_up_when_one_class_loss_goes_to_zero() -> None:
    """The 1/L_c problem: scale class 0's loss (its whole CCT row and column) towards zero.

    S = max(I[a, b], I[b, a]) grows like 1/L_0 (I's denominator is the loss class 0 sheds)
    and ends up ranking class 0's pairs first; R stays bounded and keeps its ranking of
    the other pairs.
    """
    rng = np.random.default_rng(3)
    k, alphas = 4, np.array([-0.2, -0.1, 0.0, 0.1, 0.2])
    base = np.array([0.6, 0.8, 1.0, 0.7])
    slope = rng.uniform(0.1, 1.0, (k, k))
    slope[np.arange(k), np.arange(k)] = -2.0  # each ego loss falls along its own direction
    slope[1, 2] = slope[2, 1] = 3.0  # classes 1 and 2 interfere most
    loss = base[None, :, None] * (1 + slope[:, :, None] * alphas[None, None, :])

    def scores(eps: float) -> tuple[np.ndarray, np.ndarray]:
        scaled = loss.copy()
        scaled[:, 0] *= eps  # L_0(θ) = eps · (what it was), along every direction
        cct = _cct(scaled, alphas, tuple(range(k)))
        i, _, _ = finite_step_interference(cct)
        delta, _ = loss_changes(cct)
        return superseded_pair_score(i), pair_score(delta, mean_loss(cct))[0]

    s1, r1 = scores(1.0)
    assert ranked_pairs(s1, 1)[0][:2] == (1, 2) and ranked_pairs(r1, 1)[0][:2] == (1, 2)
    for eps in (1e-2, 1e-4, 1e-6):
        s, r = scores(eps)
        assert np.nanmax(np.abs(s)) > 0.5 / eps  # S blows up like 1/L_0 ...
        assert ranked_pairs(s, 1)[0][0] == 0  # ... and ranks a pair of the well-learned class 0 first
        assert np.isfinite(r[~np.eye(k, dtype=bool)]).all()
        assert np.nanmax(np.abs(r)) < 2 * np.nanmax(np.abs(r1))  # R stays bounded
        assert ranked_pairs(r, 1)[0][:2] == (1, 2)  # and keeps the interfering pair first


def test_ill_conditioned_rows() -> None:
    base = np.array([0.001, 0.5, 0.04, np.nan, 1.0])
    loss = 0.5
    np.testing.assert_array_equal(ill_conditioned(base, loss), [True, False, True, False, False])
    assert ILL_CONDITIONED_FRACTION * loss == pytest.approx(0.05)
    assert not ill_conditioned(base, float("nan")).any()


def test_interference_result_round_trips_with_r() -> None:
    cct, _ = _random_cct(1)
    g = _gradients(np.random.default_rng(2), (0, 1, 2, 3, 4), 5)
    d = -g.flat[[0, 1, 2, 4]]
    dirs = EgoDirections(classes=(0, 1, 2, 4), names=("w",), shapes=((5,),), flat=d.astype(np.float32),
                         normalization="filter", include_1d=False, alpha_max=np.full(4, 0.4))
    res = interference(g, dirs, cct)
    back = InterferenceResult.from_dict(res.to_dict())
    for name in ("conflict", "first_order", "finite", "alpha_s", "pair_score", "alpha_1"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name), err_msg=name)
    np.testing.assert_array_equal(back.one_sided, res.one_sided)
    np.testing.assert_array_equal(back.ill_conditioned, res.ill_conditioned)
    assert back.mean_loss == res.mean_loss and back.one_sided[3, 0]
