"""Interference matrices against plain-loop re-implementations of CONCEPTS.md, "Interference"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.cct import CrossClassTestResult
from auditor.gradients import ClassGradients, EgoDirections
from auditor.interference import (
    NO_FALL,
    finite_step_interference,
    first_order_interference,
    gradient_conflict,
    pair_score,
    ranked_pairs,
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


def test_first_order_interference_matches_plain_loop() -> None:
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


def _cct(loss: np.ndarray, alphas: np.ndarray, ego: tuple[int, ...]) -> CrossClassTestResult:
    n, k, a = loss.shape
    return CrossClassTestResult(alphas=alphas, step_scale=np.ones(n), ego_classes=ego, loss=loss,
                                accuracy=np.zeros_like(loss), flow=None, flow_top_classes=None, flow_top_share=None,
                                counts=np.ones(k, dtype=np.int64), zero_index=int(np.flatnonzero(alphas == 0)[0]),
                                normalization="filter")


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


def test_pair_score_takes_the_max_of_defined_entries() -> None:
    i = np.array([[-1.0, 0.5, np.nan], [0.2, -1.0, np.nan], [0.7, np.nan, -1.0]])
    s = pair_score(i)
    assert s[0, 1] == s[1, 0] == 0.5
    assert s[0, 2] == s[2, 0] == 0.7  # I[0,2] undefined: I[2,0] alone
    assert np.isnan(s[1, 2]) and np.isnan(np.diag(s)).all()
    assert ranked_pairs(s, 5) == [(0, 2, 0.7), (0, 1, 0.5)]
