"""Agreement measures (precision@k, AUC, Spearman) and the soft pair confusion Q on hand-made cases,
against scikit-learn and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.agreement import ScoreAgreement, pair_values, score_agreement
from auditor.confusion import error_share, soft_pair_confusion
from auditor.stats import auc, precision_at_k, spearman


def test_precision_at_k_by_hand() -> None:
    target = np.array([9.0, 7, 5, 0, 0, 3])
    # the 2 most confused: items 0 and 1; the score's top 2: items 0 and 5
    assert precision_at_k(np.array([6.0, 1, 2, 0, 0, 5]), target, 2) == 0.5
    assert precision_at_k(np.array([6.0, 5, 2, 0, 0, 1]), target, 2) == 1.0
    assert precision_at_k(np.array([0.0, 0, 0, 5, 6, 0]), target, 2) == 0.0
    # k beyond the items with an error: only the 4 error items can be found, all are in the top 5
    assert precision_at_k(np.array([6.0, 5, 4, 0, 1, 3]), target, 5) == 1.0


def test_precision_at_k_ties() -> None:
    # ties in the target at the k-th place: both tied items count as hits
    target = np.array([4.0, 2, 2, 0])
    assert precision_at_k(np.array([9.0, 0, 8, 1]), target, 2) == 1.0
    # ties in the score across the k-th place: 3 items tied for the 1 place left, one of them
    # wanted -> expected hits 1 (item 0) + 1/3 (item 1 gets the place with chance 1/3), over k = 2
    score = np.array([5.0, 1, 1, 1])
    target = np.array([3.0, 2, 0, 0])
    assert precision_at_k(score, target, 2) == pytest.approx((1 + 1 / 3) / 2)
    # brute force: the mean over every order of the tied items
    hits = []
    for first in (1, 2, 3):
        top = {0, first}
        hits.append(len(top & {0, 1}) / 2)
    assert precision_at_k(score, target, 2) == pytest.approx(np.mean(hits))
    assert math.isnan(precision_at_k(score, np.zeros(4), 2))


def test_auc_and_spearman_match_sklearn_and_scipy() -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 60))
        score = np.round(rng.standard_normal(n), 1 if trial % 2 else 6)  # half the trials with many ties
        target = rng.poisson(1.0, n).astype(np.float64)
        labels = target > 0
        if labels.all() or not labels.any():
            assert math.isnan(auc(score, labels))
            continue
        assert auc(score, labels) == pytest.approx(roc_auc_score(labels, score), abs=1e-12)
        assert spearman(score, target) == pytest.approx(spearmanr(score, target).statistic, abs=1e-12)
    assert math.isnan(auc(np.array([1.0, 2.0]), np.array([True, True])))
    assert auc(np.array([1.0, 2.0, 3.0]), np.array([False, True, True])) == 1.0
    assert auc(np.array([1.0, 1.0]), np.array([False, True])) == 0.5


def test_score_agreement_on_a_hand_made_pair_matrix() -> None:
    # K = 4: six pairs; R defined everywhere except the pair (2, 3)
    r = np.full((4, 4), np.nan)
    p = np.zeros((4, 4))
    for (a, b), rv, pv in [((0, 1), 3.0, 10), ((0, 2), 2.0, 0), ((0, 3), 1.0, 4), ((1, 2), 0.5, 6),
                           ((1, 3), 0.1, 0), ((2, 3), np.nan, 50)]:
        r[a, b] = r[b, a] = rv
        p[a, b] = p[b, a] = pv
    g = score_agreement(r, p)
    assert g.n_pairs == 5 and g.n_error_pairs == 3  # (2, 3) left out: R undefined there
    assert g.k == 5 and g.k_fraction == 1
    # k = 5 of 5 pairs: every error pair is in R's top 5
    assert g.precision_at_k == 1.0
    # top 10% = 1 pair: the most confused defined pair (0, 1) is R's first
    assert g.precision_at_fraction == 1.0
    rr, pp = np.array([3.0, 2, 1, 0.5, 0.1]), np.array([10.0, 0, 4, 6, 0])
    assert g.spearman == pytest.approx(spearman(rr, pp))
    # positives (R): 3, 1, 0.5; negatives: 2, 0.1 -> pairs won: 3>2, 3>.1, 1>.1, .5>.1 = 4 of 6
    assert g.auc == pytest.approx(4 / 6)
    assert ScoreAgreement.from_dict(g.to_dict()) == g
    np.testing.assert_array_equal(pair_values(p), [10, 0, 4, 6, 0, 50])


def test_verdict_words() -> None:
    def make(prec: float, a: float) -> ScoreAgreement:
        return ScoreAgreement(5, prec, 0.1, 5, prec, 0.5, a, 45, 10)

    assert make(0.8, 0.9).verdict() == "much"
    assert make(0.8, 0.6).verdict() == "part"
    assert make(0.2, 0.6).verdict() == "little"
    assert make(0.2, 0.8).verdict() == "part"
    assert make(math.nan, math.nan).verdict() == "undefined"


def test_soft_pair_confusion_and_ties_by_r() -> None:
    # two samples of class 0 with p = (.7, .2, .1) and (.5, .5, 0); one of class 2 with p = (.3, .3, .4)
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [0.3, 0.3, 0.4]])
    y = np.array([0, 0, 2])
    sums = np.zeros((3, 3))
    for p, c in zip(probs, y):
        sums[c] += p
    q = soft_pair_confusion(sums)
    assert q[0, 1] == q[1, 0] == pytest.approx(0.2 + 0.5)  # class 0's mass on 1; class 1 has no samples
    assert q[0, 2] == pytest.approx(0.1 + 0.0 + 0.3)
    assert q[1, 2] == pytest.approx(0.3)
    assert np.all(np.diag(q) == 0)
    # P ties broken by R, larger first; then the lower pair
    confusion = np.array([[5, 1, 1], [0, 5, 1], [0, 0, 5]])
    r = np.array([[np.nan, 0.1, 0.9], [0.1, np.nan, 0.5], [0.9, 0.5, np.nan]])
    share = error_share(confusion, tiebreak=r, soft_confusion=sums)
    assert [(a, b) for a, b, _ in share.pairs] == [(0, 2), (1, 2), (0, 1)]
    assert [(a, b) for a, b, _ in error_share(confusion).pairs] == [(0, 1), (0, 2), (1, 2)]
    np.testing.assert_allclose(share.soft_pairs(), q)
