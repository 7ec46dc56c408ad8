"""Pair confusion and error share against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.confusion import error_share, pair_confusion


def test_pair_confusion_and_error_share_by_hand() -> None:
    c = np.array([[10, 3, 0, 1],
                  [1, 8, 0, 0],
                  [0, 0, 9, 2],
                  [0, 0, 2, 7]])
    p = pair_confusion(c)
    assert p[0, 1] == p[1, 0] == 4 and p[2, 3] == 4 and p[0, 3] == 1 and p[0, 0] == 0
    share = error_share(c)
    assert share.n_errors == 9
    assert share.pairs == [(0, 1, 4), (2, 3, 4), (0, 3, 1)]  # ties: lower pair first
    np.testing.assert_allclose(share.cumulative_share, [4 / 9, 8 / 9, 1.0])
    # 6 pairs: 1%, 3%, 5% and 10% of them round up to one pair
    assert share.share == {0.01: pytest.approx(4 / 9), 0.03: pytest.approx(4 / 9), 0.05: pytest.approx(4 / 9),
                           0.1: pytest.approx(4 / 9)}


def test_error_share_rounds_up_per_fraction_and_is_nan_without_errors() -> None:
    k = 20  # 190 pairs: 1% -> 2 pairs, 3% -> 6, 5% -> 10, 10% -> 19
    c = np.eye(k, dtype=np.int64) * 10
    rng = np.random.default_rng(0)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    for n, (a, b) in enumerate(rng.permutation(pairs)[:30]):
        c[a, b] = 30 - n
    share = error_share(c)
    values = sorted((30 - n for n in range(30)), reverse=True)
    total = sum(values)
    for f, top in [(0.01, 2), (0.03, 6), (0.05, 10), (0.1, 19)]:
        assert share.share[f] == pytest.approx(sum(values[:top]) / total)
    assert math.isnan(error_share(np.eye(3, dtype=np.int64)).share[0.01])
    assert error_share(np.eye(3, dtype=np.int64)).to_dict()["share"]["0.01"] is None
