"""Where the errors are: confusion, pair confusion and the error share of the top pairs.

See CONCEPTS.md, "Where the errors are".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ErrorShare", "pair_confusion", "error_share", "SHARE_FRACTIONS"]

SHARE_FRACTIONS = (0.01, 0.03, 0.05, 0.10)


def pair_confusion(confusion: np.ndarray) -> np.ndarray:
    """``P[a, b] = C[a, b] + C[b, a]`` (zero diagonal)."""
    p = confusion + confusion.T
    np.fill_diagonal(p, 0)
    return p


@dataclass(frozen=True, eq=False)
class ErrorShare:
    """How much of all errors the most confused pairs carry.

    Attributes
    ----------
    confusion : ndarray of shape (K, K), int64
        Rows true, columns predicted, at θ*.
    pairs : list of (int, int, int)
        Unordered pairs ``(a, b, P[a, b])`` with ``P > 0``, most confused first (ties:
        lower pair first).
    cumulative_share : ndarray of shape (n_pairs,)
        Share of all errors carried by the top 1, 2, ... pairs (the Pareto curve).
    share : dict of float to float
        Share carried by the top 1, 3, 5 and 10% of all ``K(K-1)/2`` pairs, each rounded up
        to at least one pair; NaN when there are no errors.
    n_errors : int
    """

    confusion: np.ndarray
    pairs: list[tuple[int, int, int]]
    cumulative_share: np.ndarray
    share: Mapping[float, float]
    n_errors: int

    def __post_init__(self) -> None:
        self.confusion.flags.writeable = False
        self.cumulative_share.flags.writeable = False

    def to_dict(self) -> dict[str, Any]:
        return {"confusion": self.confusion.tolist(), "pairs": [list(p) for p in self.pairs],
                "cumulative_share": self.cumulative_share.tolist(),
                "share": {str(k): (None if math.isnan(v) else v) for k, v in self.share.items()},
                "n_errors": self.n_errors}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorShare:
        return cls(confusion=np.asarray(d["confusion"], dtype=np.int64),
                   pairs=[(int(a), int(b), int(n)) for a, b, n in d["pairs"]],
                   cumulative_share=np.asarray(d["cumulative_share"], dtype=np.float64),
                   share={float(k): (math.nan if v is None else float(v)) for k, v in d["share"].items()},
                   n_errors=int(d["n_errors"]))


def error_share(confusion: np.ndarray, fractions: Sequence[float] = SHARE_FRACTIONS) -> ErrorShare:
    """Pair confusion sorted, and the error share of the top fractions of pairs."""
    confusion = np.asarray(confusion, dtype=np.int64)
    k = confusion.shape[0]
    p = pair_confusion(confusion)
    a, b = np.triu_indices(k, 1)
    values = p[a, b]
    order = np.lexsort((b, a, -values))  # by P descending, then (a, b)
    n_errors = int(confusion.sum() - np.trace(confusion))
    pairs = [(int(a[j]), int(b[j]), int(values[j])) for j in order if values[j] > 0]
    cumulative = np.cumsum([n for _, _, n in pairs], dtype=np.float64) / n_errors if n_errors else np.zeros(0)
    n_pairs = len(a)
    share = {}
    for f in fractions:
        top = max(1, math.ceil(f * n_pairs))
        share[float(f)] = (float(cumulative[min(top, len(cumulative)) - 1]) if len(cumulative) else 0.0) \
            if n_errors else math.nan
    return ErrorShare(confusion=confusion, pairs=pairs, cumulative_share=cumulative, share=share, n_errors=n_errors)
