"""Where the errors are: confusion, pair confusion, soft pair confusion and the error share of the top pairs.

See docs/concepts.md, "Where the errors are" and "Interference" (the soft pair confusion Q).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ErrorShare", "pair_confusion", "soft_pair_confusion", "error_share", "SHARE_FRACTIONS"]

SHARE_FRACTIONS = (0.01, 0.03, 0.05, 0.10)


def pair_confusion(confusion: np.ndarray) -> np.ndarray:
    """``P[a, b] = C[a, b] + C[b, a]`` (zero diagonal)."""
    p: np.ndarray = confusion + confusion.T
    np.fill_diagonal(p, 0)
    return p


def soft_pair_confusion(soft_confusion: np.ndarray) -> np.ndarray:
    """``Q[a, b] = Σ_{i∈a} p_b(x_i) + Σ_{i∈b} p_a(x_i)`` from the class sums (zero diagonal).

    ``soft_confusion[c, k] = Σ_{i∈D_c} p_k(x_i)``, the softmax probabilities at θ* summed
    by true class (:attr:`auditor.runtime.StepStats.soft_confusion`).
    """
    q = np.asarray(soft_confusion, dtype=np.float64)
    q = q + q.T
    np.fill_diagonal(q, 0.0)
    return q


@dataclass(frozen=True, eq=False)
class ErrorShare:
    """How much of all errors the most confused pairs carry.

    Attributes
    ----------
    confusion : ndarray of shape (K, K), int64
        Rows true, columns predicted, at θ*.
    pairs : list of (int, int, int)
        Unordered pairs ``(a, b, P[a, b])`` with ``P > 0``, most confused first; ties by
        the tie-break score given to :func:`error_share` (the audit's pair score R, larger
        first), then the lower pair first.
    cumulative_share : ndarray of shape (n_pairs,)
        Share of all errors carried by the top 1, 2, ... pairs (the Pareto curve).
    share : dict of float to float
        Share carried by the top 1, 3, 5 and 10% of all ``K(K-1)/2`` pairs, each rounded up
        to at least one pair; NaN when there are no errors.
    n_errors : int
    soft_confusion : ndarray of shape (K, K), float64, or None
        Softmax probabilities at θ* summed by true class (rows true, columns the class
        whose probability is summed); :meth:`soft_pairs` gives Q. None when not measured
        (a results file of schema 1).
    """

    confusion: np.ndarray
    pairs: list[tuple[int, int, int]]
    cumulative_share: np.ndarray
    share: Mapping[float, float]
    n_errors: int
    soft_confusion: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.confusion.flags.writeable = False
        self.cumulative_share.flags.writeable = False
        if self.soft_confusion is not None:
            self.soft_confusion.flags.writeable = False

    def soft_pairs(self) -> np.ndarray | None:
        """The soft pair confusion Q ``[K, K]``; None when not measured."""
        return None if self.soft_confusion is None else soft_pair_confusion(self.soft_confusion)

    def to_dict(self) -> dict[str, Any]:
        return {"confusion": self.confusion.tolist(), "pairs": [list(p) for p in self.pairs],
                "cumulative_share": self.cumulative_share.tolist(),
                "share": {str(k): (None if math.isnan(v) else v) for k, v in self.share.items()},
                "n_errors": self.n_errors,
                "soft_confusion": None if self.soft_confusion is None else self.soft_confusion.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorShare:
        soft = d.get("soft_confusion")
        return cls(confusion=np.asarray(d["confusion"], dtype=np.int64),
                   pairs=[(int(a), int(b), int(n)) for a, b, n in d["pairs"]],
                   cumulative_share=np.asarray(d["cumulative_share"], dtype=np.float64),
                   share={float(k): (math.nan if v is None else float(v)) for k, v in d["share"].items()},
                   n_errors=int(d["n_errors"]),
                   soft_confusion=None if soft is None else np.asarray(soft, dtype=np.float64))


def error_share(confusion: np.ndarray, fractions: Sequence[float] = SHARE_FRACTIONS, *,
                tiebreak: np.ndarray | None = None, soft_confusion: np.ndarray | None = None) -> ErrorShare:
    """Pair confusion sorted, and the error share of the top fractions of pairs.

    Parameters
    ----------
    confusion : ndarray of shape (K, K)
    fractions : sequence of float, default=SHARE_FRACTIONS
    tiebreak : ndarray of shape (K, K), optional
        Orders pairs of equal P, larger first (the audit passes R; NaN last).
    soft_confusion : ndarray of shape (K, K), optional
        Kept in the result (:attr:`ErrorShare.soft_confusion`).
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    k = confusion.shape[0]
    p = pair_confusion(confusion)
    a, b = np.triu_indices(k, 1)
    values = p[a, b]
    tie = np.zeros(len(a)) if tiebreak is None else np.nan_to_num(np.asarray(tiebreak, np.float64)[a, b],
                                                                   nan=-np.inf)
    order = np.lexsort((b, a, -tie, -values))  # by P descending, then the tie-break descending, then (a, b)
    n_errors = int(confusion.sum() - np.trace(confusion))
    pairs = [(int(a[j]), int(b[j]), int(values[j])) for j in order if values[j] > 0]
    cumulative = np.cumsum([n for _, _, n in pairs], dtype=np.float64) / n_errors if n_errors else np.zeros(0)
    n_pairs = len(a)
    share = {}
    for f in fractions:
        top = max(1, math.ceil(f * n_pairs))
        share[float(f)] = (float(cumulative[min(top, len(cumulative)) - 1]) if len(cumulative) else 0.0) \
            if n_errors else math.nan
    return ErrorShare(confusion=confusion, pairs=pairs, cumulative_share=cumulative, share=share, n_errors=n_errors,
                      soft_confusion=None if soft_confusion is None else np.asarray(soft_confusion, np.float64))
