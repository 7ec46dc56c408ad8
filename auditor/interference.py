"""Interference between classes: gradient conflict, first-order and finite-step interference, pair score R.

See docs/concepts.md, "Interference". Matrices are indexed by class id ``[K, K]``; rows of
classes without a direction (or whose ego loss does not fall) are NaN.

Conditioning: ``I`` and ``I1`` divide by the loss the ego class sheds, so the row of a
class whose loss at θ* is already tiny is inflated by about ``L(θ*) / L_c(θ*)``; such rows
are marked (:data:`ILL_CONDITIONED_FRACTION`) and never ranked or gated. The pair score
``R`` has no such ratio: it divides by the mean loss of the whole model only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cct import CrossClassTestResult
from .gradients import ClassGradients, Directions
from .serialization import array_from_json, json_array

__all__ = [
    "InterferenceResult",
    "gram",
    "gradient_conflict",
    "first_order_interference",
    "finite_step_interference",
    "loss_changes",
    "mean_loss",
    "pair_score",
    "ill_conditioned",
    "superseded_pair_score",
    "ranked_pairs",
    "interference",
]

FALL_FRACTION = 0.01  # α_s: the ego loss has fallen by at least 1% ...
FALL_FRACTION_HALVING = 0.001  # ... or, halving the smallest step, by 0.1%
MAX_HALVINGS = 10
NO_FALL = "the ego loss does not fall"
#: A row of I and I1 is marked ill-conditioned when its ego loss L_c(θ*) is below this
#: fraction of the mean loss L(θ*): its entries are then inflated about tenfold or more.
ILL_CONDITIONED_FRACTION = 0.1
#: Parameters per float64 block of :func:`gram` (ten classes: 5 MB a block).
GRAM_CHUNK = 1 << 16


def gram(flat: np.ndarray, chunk: int = GRAM_CHUNK) -> np.ndarray:
    """``flat @ flat.T`` in float64, converting ``chunk`` columns at a time: a float64 copy of
    every gradient at once (880 MB for ten classes of ResNet-18) and its page faults took
    seconds; blocks of a few MB stay in cache."""
    out = np.zeros((flat.shape[0], flat.shape[0]))
    for start in range(0, flat.shape[1], chunk):
        block = flat[:, start:start + chunk].astype(np.float64)
        out += block @ block.T
    return out


def gradient_conflict(gradients: ClassGradients, n_classes: int) -> np.ndarray:
    """``C[c, c'] = -cos(g_c, g_c')`` over the raw gradients; NaN where undefined."""
    out = np.full((n_classes, n_classes), np.nan)
    products = gram(gradients.flat)
    norms = np.sqrt(np.diag(products))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = products / np.outer(norms, norms)
    cos[~np.isfinite(cos)] = np.nan
    idx = np.asarray(gradients.classes, dtype=np.int64)
    out[np.ix_(idx, idx)] = -np.clip(cos, -1.0, 1.0)
    return out


def first_order_interference(gradients: ClassGradients, directions: Directions, n_classes: int) -> np.ndarray:
    """``I1[c, c'] = (∇L_c'·d_c) / (-∇L_c·d_c)``, the α → 0 limit of ``I``.

    One direction at a time, so a stream of directions is never held whole.
    """
    out = np.full((n_classes, n_classes), np.nan)
    if not directions.classes:
        return out
    g = gradients.flat  # [n_present, P], float32: converted block by block (see gram)
    present = list(gradients.classes)
    for c in directions.classes:
        d = directions.vector(c)
        slopes = np.zeros(len(present))  # slopes[j] = g_{present j} · d_c, in float64
        for start in range(0, g.shape[1], GRAM_CHUNK):
            block = slice(start, start + GRAM_CHUNK)
            slopes += g[:, block].astype(np.float64) @ d[block].astype(np.float64)
        own = slopes[present.index(c)]
        if own < 0:
            out[c, present] = slopes / -own
    return out


def _alpha_s(curve: np.ndarray, steps: np.ndarray, zero: int) -> int | None:
    """Grid index of the smallest α > 0 where the ego loss fell by >= 1% of L_c(θ*)."""
    base = curve[zero]
    for a in range(zero + 1, len(steps)):
        if steps[a] > 0 and base - curve[a] >= FALL_FRACTION * abs(base):
            return a
    return None


def finite_step_interference(cct: CrossClassTestResult,
                             evaluate: Callable[[int, float], np.ndarray] | None = None
                             ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """``I[c, c']`` from the CCT at step α_s (docs/concepts.md, "Interference").

    Parameters
    ----------
    cct : CrossClassTestResult
    evaluate : callable, optional
        ``evaluate(i, alpha) -> loss [K]`` at ``θ* + alpha · d_{ego_classes[i]}``, used to
        halve the smallest positive step when no grid step makes the ego loss fall by 1%.
        Without it those classes get NaN.

    Returns
    -------
    I : ndarray of shape (K, K)
    alpha_s : ndarray of shape (K,)
        The step used per ego class (NaN where none).
    reasons : dict of int to str
        Why a row is NaN.
    """
    k = cct.n_classes
    out = np.full((k, k), np.nan)
    alpha_s = np.full(k, np.nan)
    reasons: dict[int, str] = {}
    base = cct.base_loss()
    for i, c in enumerate(cct.ego_classes):
        steps = cct.steps(i)
        curve = cct.loss[i, c]
        a = _alpha_s(curve, steps, cct.zero_index)
        losses = None
        if a is not None:
            losses, step = cct.loss[i, :, a], steps[a]
        elif evaluate is not None:
            positive = steps[steps > 0]
            step = float(positive.min()) if len(positive) else 0.0
            for _ in range(MAX_HALVINGS):
                step /= 2
                trial = evaluate(i, step)
                if base[c] - trial[c] >= FALL_FRACTION_HALVING * abs(base[c]):
                    losses = trial
                    break
        if losses is None:
            reasons[c] = NO_FALL
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            out[c] = (losses - base) / (base[c] - losses[c])
        alpha_s[c] = step
    return out, alpha_s, reasons


def superseded_pair_score(finite: np.ndarray) -> np.ndarray:
    """``S[a, b] = max(I[a, b], I[b, a])``, the pair score R replaced; NaN on the diagonal.

    Ill-conditioned (it inherits I's ``1/L_c``) and ranked pairs of well-learned classes
    first; kept so the validation study can compare it with R.
    """
    s: np.ndarray = np.fmax(finite, finite.T)  # fmax ignores a NaN partner
    np.fill_diagonal(s, np.nan)
    return s


def mean_loss(cct: CrossClassTestResult) -> float:
    """``L(θ*) = Σ_c π_c L_c(θ*)``, the sample-weighted mean loss of the audit data."""
    base = cct.base_loss()
    counts = np.asarray(cct.counts, dtype=np.float64)
    present = (counts > 0) & np.isfinite(base)
    return float((counts[present] * base[present]).sum() / counts[present].sum()) if present.any() else np.nan


def loss_changes(cct: CrossClassTestResult) -> tuple[np.ndarray, np.ndarray]:
    """``ΔL[a, b] = L_b(θ* + α₁ d_a) − L_b(θ*)`` from the CCT, with α₁ per ego class.

    α₁ is the smallest positive step of the grid actually taken along ``d_a`` (so it is
    scaled by the class's step scale under ``normalization="none"``). Rows of classes
    without a CCT row, or whose grid has no positive step, are NaN.

    Returns
    -------
    delta : ndarray of shape (K, K)
    alpha_1 : ndarray of shape (K,)
        NaN where the row is undefined.
    """
    k = cct.n_classes
    delta = np.full((k, k), np.nan)
    alpha_1 = np.full(k, np.nan)
    base = cct.base_loss()
    for i, c in enumerate(cct.ego_classes):
        steps = cct.steps(i)
        positive = np.flatnonzero(steps > 0)
        if not len(positive):
            continue
        a = int(positive[np.argmin(steps[positive])])
        delta[c] = cct.loss[i, :, a] - base
        alpha_1[c] = steps[a]
    return delta, alpha_1


def pair_score(delta: np.ndarray, loss: float) -> tuple[np.ndarray, np.ndarray]:
    """The pair score ``R[a, b] = (ΔL_b|a + ΔL_a|b) / L(θ*)`` (docs/concepts.md, "Interference").

    Parameters
    ----------
    delta : ndarray of shape (K, K)
        :func:`loss_changes`: ``delta[a, b] = ΔL_b|a``; NaN rows for classes without a
        CCT row.
    loss : float
        ``L(θ*)``, :func:`mean_loss`.

    Returns
    -------
    R : ndarray of shape (K, K)
        Symmetric, NaN on the diagonal, for pairs with a class absent from the data, and
        everywhere when ``L(θ*)`` is not positive.
    one_sided : ndarray of shape (K, K), bool
        Pairs where only one class has a CCT row: R is then twice that class's term.
    """
    d = np.asarray(delta, dtype=np.float64)
    k = d.shape[0]
    has_row = np.asarray(np.isfinite(d).any(axis=1), dtype=bool)
    both = has_row[:, None] & has_row[None, :]
    one_sided = has_row[:, None] ^ has_row[None, :]
    total = np.where(both, d + d.T, np.where(has_row[:, None], 2 * d, 2 * d.T))
    r = total / loss if np.isfinite(loss) and loss > 0 else np.full((k, k), np.nan)
    np.fill_diagonal(r, np.nan)
    one_sided &= np.isfinite(r)
    return r, one_sided


def ill_conditioned(base_loss: np.ndarray, loss: float, fraction: float = ILL_CONDITIONED_FRACTION) -> np.ndarray:
    """Classes whose I and I1 rows are ill-conditioned: ``L_c(θ*) < fraction · L(θ*)``."""
    base = np.asarray(base_loss, dtype=np.float64)
    if not np.isfinite(loss) or loss <= 0:
        return np.zeros(len(base), dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(base) & (base < fraction * loss)


def ranked_pairs(matrix: np.ndarray, top: int = 10) -> list[tuple[int, int, float]]:
    """Unordered pairs ``(a, b, value)`` with a < b, largest finite values first."""
    k = matrix.shape[0]
    a, b = np.triu_indices(k, 1)
    values = np.maximum(np.nan_to_num(matrix[a, b], nan=-np.inf), np.nan_to_num(matrix[b, a], nan=-np.inf))
    order = np.argsort(-values, kind="stable")
    out: list[tuple[int, int, float]] = []
    for j in order:
        if not np.isfinite(values[j]) or len(out) >= top:
            break
        out.append((int(a[j]), int(b[j]), float(values[j])))
    return out


@dataclass(frozen=True, eq=False)
class InterferenceResult:
    """Interference matrices and the pair score of one audit (docs/concepts.md, "Interference").

    Attributes
    ----------
    conflict : ndarray of shape (K, K)
        Gradient conflict ``C``.
    first_order : ndarray of shape (K, K)
        ``I1`` along the directions used.
    finite : ndarray of shape (K, K)
        ``I`` at step ``alpha_s``.
    alpha_s : ndarray of shape (K,)
    pair_score : ndarray of shape (K, K)
        ``R``, symmetric, NaN on the diagonal.
    one_sided : ndarray of shape (K, K), bool
        Pairs whose R has only one class's term (the other has no CCT row), doubled.
    alpha_1 : ndarray of shape (K,)
        The step of each ego class's term of R; NaN for classes without a CCT row.
    mean_loss : float
        ``L(θ*)``, R's denominator.
    ill_conditioned : ndarray of shape (K,), bool
        Rows of I and I1 whose ego loss is below ``ILL_CONDITIONED_FRACTION · L(θ*)``.
    reasons : dict of int to str
        Ego classes left out of ``I``, with the reason.
    """

    conflict: np.ndarray
    first_order: np.ndarray
    finite: np.ndarray
    alpha_s: np.ndarray
    pair_score: np.ndarray
    one_sided: np.ndarray
    alpha_1: np.ndarray
    mean_loss: float
    ill_conditioned: np.ndarray
    reasons: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for a in (self.conflict, self.first_order, self.finite, self.alpha_s, self.pair_score, self.one_sided,
                  self.alpha_1, self.ill_conditioned):
            a.flags.writeable = False

    def top_pairs(self, top: int = 10) -> list[tuple[int, int, float]]:
        """The pairs with the largest R."""
        return ranked_pairs(self.pair_score, top)

    def to_dict(self) -> dict[str, Any]:
        a, b = np.nonzero(np.triu(self.one_sided, 1))
        return {"conflict": json_array(self.conflict), "first_order": json_array(self.first_order),
                "finite": json_array(self.finite), "alpha_s": json_array(self.alpha_s),
                "pair_score": json_array(self.pair_score), "one_sided": [[int(x), int(y)] for x, y in zip(a, b)],
                "alpha_1": json_array(self.alpha_1),
                "mean_loss": None if not np.isfinite(self.mean_loss) else float(self.mean_loss),
                "ill_conditioned": [int(c) for c in np.flatnonzero(self.ill_conditioned)],
                "ill_conditioned_fraction": ILL_CONDITIONED_FRACTION,
                "reasons": {str(k): v for k, v in self.reasons.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterferenceResult:
        """Read :meth:`to_dict` (results.json schema 2)."""
        r = array_from_json(d["pair_score"])
        k = r.shape[0]
        one_sided = np.zeros((k, k), dtype=bool)
        for a, b in d["one_sided"]:
            one_sided[a, b] = one_sided[b, a] = True
        ill = np.zeros(k, dtype=bool)
        ill[[int(c) for c in d["ill_conditioned"]]] = True
        return cls(conflict=array_from_json(d["conflict"]), first_order=array_from_json(d["first_order"]),
                   finite=array_from_json(d["finite"]), alpha_s=array_from_json(d["alpha_s"]), pair_score=r,
                   one_sided=one_sided, alpha_1=array_from_json(d["alpha_1"]),
                   mean_loss=np.nan if d["mean_loss"] is None else float(d["mean_loss"]), ill_conditioned=ill,
                   reasons={int(k): v for k, v in d.get("reasons", {}).items()})


def interference(gradients: ClassGradients, directions: Directions, cct: CrossClassTestResult,
                 evaluate: Callable[[int, float], np.ndarray] | None = None) -> InterferenceResult:
    """All interference matrices and the pair score R of docs/concepts.md, "Interference"."""
    k = cct.n_classes
    finite, alpha_s, reasons = finite_step_interference(cct, evaluate)
    loss = mean_loss(cct)
    delta, alpha_1 = loss_changes(cct)
    r, one_sided = pair_score(delta, loss)
    return InterferenceResult(conflict=gradient_conflict(gradients, k),
                              first_order=first_order_interference(gradients, directions, k), finite=finite,
                              alpha_s=alpha_s, pair_score=r, one_sided=one_sided, alpha_1=alpha_1, mean_loss=loss,
                              ill_conditioned=ill_conditioned(cct.base_loss(), loss), reasons=reasons)
