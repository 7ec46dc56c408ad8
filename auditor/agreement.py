"""How far a pair score's ranking agrees with where the errors are.

See docs/concepts.md, "Interference" (the per-audit agreement). Every audit compares the
pair score R with the pair confusion P on the audit data, so a reader sees whether
interference explains this model's errors; the validation study
(``benchmarks/validate_pair_scores.py``) uses the same measures against test confusion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .stats import auc, precision_at_k, spearman

__all__ = ["ScoreAgreement", "score_agreement", "pair_values", "AGREEMENT_TOP_K", "AGREEMENT_FRACTION", "Verdict"]

Verdict = Literal["much", "part", "little", "undefined"]

#: precision@k at this k ...
AGREEMENT_TOP_K = 5
#: ... and at this fraction of all pairs (rounded up, at least one pair).
AGREEMENT_FRACTION = 0.10


def pair_values(matrix: np.ndarray) -> np.ndarray:
    """The entries ``matrix[a, b]`` of the unordered pairs ``a < b`` (row-major order)."""
    m = np.asarray(matrix, dtype=np.float64)
    a, b = np.triu_indices(m.shape[0], 1)
    return m[a, b]


@dataclass(frozen=True)
class ScoreAgreement:
    """Agreement of a pair score's ranking with a pair confusion (larger = more confused).

    Attributes
    ----------
    k : int
        ``min(AGREEMENT_TOP_K, n_pairs)``.
    precision_at_k : float
        :func:`auditor.stats.precision_at_k` of the score against the confusion at ``k``.
    fraction : float
        The fraction of pairs of the second precision (0.10).
    k_fraction : int
        ``ceil(fraction * n_pairs)``, at least 1.
    precision_at_fraction : float
        precision@k at ``k_fraction``.
    spearman : float
        Rank correlation of score and confusion over the pairs.
    auc : float
        AUC of the score for "the pair has at least one error" (0.5: chance).
    n_pairs : int
        Pairs where both are defined (only these are compared).
    n_error_pairs : int
        Of those, pairs with at least one error.

    Notes
    -----
    Every measure is NaN where undefined: no pair has an error (precision, AUC), every
    pair has one (AUC), or fewer than two pairs or a constant ranking (Spearman).
    """

    k: int
    precision_at_k: float
    fraction: float
    k_fraction: int
    precision_at_fraction: float
    spearman: float
    auc: float
    n_pairs: int
    n_error_pairs: int

    def verdict(self) -> Verdict:
        """How much of the confusion the score explains, in words.

        ``"much"``: precision@k >= 0.6 and AUC >= 0.75; ``"little"``: precision@k < 0.4
        and AUC < 0.65; ``"part"`` otherwise; ``"undefined"`` when no pair (or every
        pair) has an error. "part" spans the validation study's average for R against
        test errors (precision@5 0.53, AUC 0.67, docs/validation.md); under-trained
        models, whose errors interference does not explain, fall in "little".
        """
        if math.isnan(self.precision_at_k) or math.isnan(self.auc):
            return "undefined"
        if self.precision_at_k >= 0.6 and self.auc >= 0.75:
            return "much"
        if self.precision_at_k < 0.4 and self.auc < 0.65:
            return "little"
        return "part"

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {"k": self.k, "precision_at_k": num(self.precision_at_k), "fraction": self.fraction,
                "k_fraction": self.k_fraction, "precision_at_fraction": num(self.precision_at_fraction),
                "spearman": num(self.spearman), "auc": num(self.auc), "n_pairs": self.n_pairs,
                "n_error_pairs": self.n_error_pairs}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreAgreement:
        def num(v: Any) -> float:
            return math.nan if v is None else float(v)

        return cls(k=int(d["k"]), precision_at_k=num(d["precision_at_k"]), fraction=float(d["fraction"]),
                   k_fraction=int(d["k_fraction"]), precision_at_fraction=num(d["precision_at_fraction"]),
                   spearman=num(d["spearman"]), auc=num(d["auc"]), n_pairs=int(d["n_pairs"]),
                   n_error_pairs=int(d["n_error_pairs"]))


def score_agreement(score: np.ndarray, confusion: np.ndarray, *, top_k: int = AGREEMENT_TOP_K,
                    fraction: float = AGREEMENT_FRACTION) -> ScoreAgreement:
    """How far ``score`` ranks pairs as ``confusion`` does.

    Parameters
    ----------
    score : ndarray of shape (n_pairs,) or (K, K)
        A pair score (e.g. R); NaN where undefined. A matrix is read at its pairs ``a < b``.
    confusion : ndarray, the same shape
        What the score should find: a pair confusion (e.g. P on the audit data, or on
        test data); NaN where undefined.
    top_k : int, default=5
    fraction : float, default=0.10

    Returns
    -------
    ScoreAgreement
        Over the pairs where both are finite.
    """
    s, c = np.asarray(score, np.float64), np.asarray(confusion, np.float64)
    if s.shape != c.shape:
        raise ValueError(f"score {s.shape} and confusion {c.shape} must have the same shape")
    if s.ndim == 2:
        s, c = pair_values(s), pair_values(c)
    ok = np.isfinite(s) & np.isfinite(c)
    s, c = s[ok], c[ok]
    n = len(s)
    k = min(top_k, n)
    k_fraction = max(1, math.ceil(fraction * n))
    return ScoreAgreement(k=k, precision_at_k=precision_at_k(s, c, k) if k else math.nan, fraction=float(fraction),
                          k_fraction=k_fraction,
                          precision_at_fraction=precision_at_k(s, c, k_fraction) if n else math.nan,
                          spearman=spearman(s, c), auc=auc(s, c > 0), n_pairs=n, n_error_pairs=int((c > 0).sum()))
