"""Small statistics shared by the analyses: ranks, rank correlation, precision@k and AUC.

Written out here (not taken from scipy or scikit-learn, which the core does not depend
on) and tested against scipy and scikit-learn in the test suite.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ranks", "spearman", "precision_at_k", "auc"]


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else float("nan")


def precision_at_k(score: np.ndarray, target: np.ndarray, k: int) -> float:
    """How many of the ``k`` items with the largest ``target`` are among the ``k`` largest ``score``.

    Parameters
    ----------
    score : ndarray of shape (n,)
        The ranking under test (larger first); finite.
    target : ndarray of shape (n,)
        What it should find (e.g. pair confusion); only items with ``target > 0`` count.
    k : int

    Returns
    -------
    float
        ``hits / min(k, |T|)``, in [0, 1]; NaN when no item has ``target > 0``.

    Notes
    -----
    ``T``, the items to find: those with ``target > 0`` and ``target`` at least the k-th
    largest target value, so an item tied with the k-th counts as a hit. ``hits``: the
    number of T's items among the score's top k, where ties in ``score`` across the
    k-th place are averaged over every order of the tied items (a tie group of ``m`` items
    filling ``r`` places contributes ``r/m`` of each tied item), so a score with many
    ties (e.g. a confusion count) gets its expected value under random tie-breaking
    rather than a value set by the item order.
    """
    score, target = np.asarray(score, np.float64), np.asarray(target, np.float64)
    n = len(score)
    k = min(int(k), n)
    positive = target > 0
    if k < 1 or not positive.any():
        return math.nan
    kth_target = np.sort(target)[::-1][k - 1]
    wanted = positive & (target >= kth_target)
    order = np.sort(score)[::-1]
    kth_score = order[k - 1]
    above = score > kth_score
    tied = score == kth_score
    slots = k - int(above.sum())
    hits = float(wanted[above].sum()) + slots * float(wanted[tied].sum()) / float(tied.sum())
    return hits / min(k, int(wanted.sum()))


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean labels ``positive``.

    The Mann-Whitney form with average ranks for ties (a tie between a positive and a
    negative counts one half); NaN when either class is empty.
    """
    score = np.asarray(score, np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = ranks(score)
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
