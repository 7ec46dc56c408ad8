"""The numbers of a comparison, from the labels and the two models' logits (plain numpy).

Every function here takes ``y`` (N,) and logits ``[N, K]`` of the baseline and the
candidate on the same samples, in the same order; predictions are the argmax (ties to the
lowest index) and losses the cross-entropy of the logits, in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auditor.examples import THUMBNAIL_SIDE, thumbnail

from .parts import Agreement, ClassComparison, FlipExample, FlipGroup, OverallComparison
from .stats import holm, mcnemar_exact, paired_difference_interval

__all__ = ["log_softmax", "per_sample_loss", "compare_classes", "compare_overall", "agreement", "flip_groups",
           "thumbnail", "THUMBNAIL_SIDE"]

#: Thumbnails of flipped samples are shrunk to at most this many pixels a side.


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log softmax(z)`` row by row, float64."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    return np.asarray(z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))), dtype=np.float64)


def per_sample_loss(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of each sample, ``-log softmax(z_i)[y_i]``, float64."""
    return np.asarray(-log_softmax(logits)[np.arange(len(y)), y], dtype=np.float64)


def _per_class_mean(y: np.ndarray, values: np.ndarray, count: np.ndarray, k: int) -> np.ndarray:
    sums = np.bincount(y, weights=np.asarray(values, dtype=np.float64), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, sums / np.maximum(count, 1), np.nan)


def _tables(y: np.ndarray, right_b: np.ndarray, right_c: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Per class: both right, only the baseline right, only the candidate right, neither."""
    return tuple(np.bincount(y[mask], minlength=k).astype(np.int64) for mask in
                 (right_b & right_c, right_b & ~right_c, ~right_b & right_c, ~right_b & ~right_c))


def compare_classes(y: np.ndarray, logits_baseline: np.ndarray, logits_candidate: np.ndarray, k: int, *,
                    alpha: float = 0.05, confidence: float = 0.95) -> ClassComparison:
    """Per-class accuracy and loss of both models, the paired interval and the McNemar test of each change.

    Parameters
    ----------
    y : ndarray of shape (N,)
        Class ids 0..K-1.
    logits_baseline, logits_candidate : ndarray of shape (N, K)
    k : int
    alpha : float, default=0.05
        Level of the Holm-corrected McNemar tests.
    confidence : float, default=0.95
        Level of the intervals.

    Returns
    -------
    ClassComparison
    """
    y = np.asarray(y, dtype=np.int64)
    pred_b, pred_c = np.argmax(logits_baseline, axis=1), np.argmax(logits_candidate, axis=1)
    right_b, right_c = pred_b == y, pred_c == y
    count = np.bincount(y, minlength=k).astype(np.int64)
    both, only_b, only_c, neither = _tables(y, right_b, right_c, k)
    present = count > 0
    acc_b = _per_class_mean(y, right_b, count, k)
    acc_c = _per_class_mean(y, right_c, count, k)
    loss_b = _per_class_mean(y, per_sample_loss(logits_baseline, y), count, k)
    loss_c = _per_class_mean(y, per_sample_loss(logits_candidate, y), count, k)
    low, high, p = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    for c in np.flatnonzero(present):
        # candidate - baseline: the candidate is the "first" proportion of the paired table
        low[c], high[c] = paired_difference_interval(both[c], only_c[c], only_b[c], neither[c], confidence)
        p[c] = mcnemar_exact(only_b[c], only_c[c])
    p_holm = holm(p)
    change = acc_c - acc_b
    significant = present & (np.nan_to_num(p_holm, nan=1.0) < alpha)
    return ClassComparison(
        count=count, accuracy_baseline=acc_b, accuracy_candidate=acc_c, accuracy_change=change,
        interval_low=low, interval_high=high, loss_baseline=loss_b, loss_candidate=loss_c,
        loss_change=loss_c - loss_b, only_baseline=only_b, only_candidate=only_c, p_value=p, p_holm=p_holm,
        regressed=significant & (np.nan_to_num(change) < 0), improved=significant & (np.nan_to_num(change) > 0),
        alpha=float(alpha), confidence=float(confidence))


def compare_overall(y: np.ndarray, logits_baseline: np.ndarray, logits_candidate: np.ndarray, *,
                    confidence: float = 0.95) -> OverallComparison:
    """The comparison over all samples: accuracies, losses, the paired interval and McNemar's p."""
    y = np.asarray(y, dtype=np.int64)
    right_b = np.argmax(logits_baseline, axis=1) == y
    right_c = np.argmax(logits_candidate, axis=1) == y
    both, only_b, only_c, neither = (int(v.sum()) for v in _tables(np.zeros_like(y), right_b, right_c, 1))
    low, high = paired_difference_interval(both, only_c, only_b, neither, confidence)
    n = len(y)
    return OverallComparison(
        n_samples=n, accuracy_baseline=float(right_b.mean()), accuracy_candidate=float(right_c.mean()),
        accuracy_change=float(right_c.mean() - right_b.mean()), interval_low=low, interval_high=high,
        loss_baseline=float(per_sample_loss(logits_baseline, y).mean()),
        loss_candidate=float(per_sample_loss(logits_candidate, y).mean()),
        only_baseline=only_b, only_candidate=only_c, p_value=mcnemar_exact(only_b, only_c))


def agreement(y: np.ndarray, logits_baseline: np.ndarray, logits_candidate: np.ndarray, k: int) -> Agreement:
    """Top-1 agreement, absolute logit differences and KL(baseline || candidate), per true class and overall."""
    y = np.asarray(y, dtype=np.int64)
    zb = np.asarray(logits_baseline, dtype=np.float64)
    zc = np.asarray(logits_candidate, dtype=np.float64)
    same = np.argmax(zb, axis=1) == np.argmax(zc, axis=1)
    diff = np.abs(zc - zb)
    mean_abs, max_abs = diff.mean(axis=1), diff.max(axis=1)
    lb, lc = log_softmax(zb), log_softmax(zc)
    kl = np.maximum((np.exp(lb) * (lb - lc)).sum(axis=1), 0.0)  # >= 0; rounding may dip below
    count = np.bincount(y, minlength=k)
    class_max = np.full(k, -np.inf)
    np.maximum.at(class_max, y, max_abs)
    class_max[count == 0] = np.nan
    return Agreement(
        top1=_per_class_mean(y, same, count, k), mean_abs_logit_difference=_per_class_mean(y, mean_abs, count, k),
        max_abs_logit_difference=class_max, mean_kl=_per_class_mean(y, kl, count, k),
        overall_top1=float(same.mean()), overall_mean_abs_logit_difference=float(mean_abs.mean()),
        overall_max_abs_logit_difference=float(max_abs.max()), overall_mean_kl=float(kl.mean()))


def flip_groups(y: np.ndarray, logits_baseline: np.ndarray, logits_candidate: np.ndarray, *,
                images: np.ndarray | None = None, layout: str = "other", texts: Sequence[str] | None = None,
                n_examples: int = 4, n_groups: int = 12) -> tuple[FlipGroup, ...]:
    """The samples that flipped from right to wrong, grouped by (true class, new prediction).

    Parameters
    ----------
    y, logits_baseline, logits_candidate
        See the module docstring.
    images : ndarray of shape (N, ...), optional
        The samples to draw thumbnails from (see :func:`thumbnail`).
    layout : str, default="other"
    texts : sequence of str, optional
        The samples' texts (text data).
    n_examples : int, default=4
        Examples per group: the candidate's most confident wrong predictions first.
    n_groups : int, default=12
        Groups that get examples (the largest).

    Returns
    -------
    tuple of FlipGroup
        Largest group first (ties: by true class, then prediction).
    """
    y = np.asarray(y, dtype=np.int64)
    pred_b, pred_c = np.argmax(logits_baseline, axis=1), np.argmax(logits_candidate, axis=1)
    flipped = np.flatnonzero((pred_b == y) & (pred_c != y))
    if not len(flipped):
        return ()
    prob_b, prob_c = np.exp(log_softmax(logits_baseline)), np.exp(log_softmax(logits_candidate))
    keys = sorted({(int(y[i]), int(pred_c[i])) for i in flipped})
    members = {key: flipped[(y[flipped] == key[0]) & (pred_c[flipped] == key[1])] for key in keys}
    keys.sort(key=lambda key: (-len(members[key]), key))
    groups = []
    for g, key in enumerate(keys):
        idx = members[key]
        examples: list[FlipExample] = []
        if g < n_groups:
            chosen = idx[np.argsort(-prob_c[idx, key[1]], kind="stable")][:n_examples]
            examples = [FlipExample(int(i), float(prob_b[i, key[0]]), float(prob_c[i, key[1]]),
                                    thumbnail(images[i], layout) if images is not None else None,
                                    texts[int(i)] if texts is not None else None) for i in chosen]
        groups.append(FlipGroup(key[0], key[1], idx.astype(np.int64), tuple(examples)))
    return tuple(groups)
