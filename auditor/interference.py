"""Interference between classes: gradient conflict, first-order and finite-step interference.

See CONCEPTS.md, "Interference". Matrices are indexed by class id ``[K, K]``; rows of
classes without a direction (or whose ego loss does not fall) are NaN.
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
    "gradient_conflict",
    "first_order_interference",
    "finite_step_interference",
    "pair_score",
    "ranked_pairs",
    "interference",
]

FALL_FRACTION = 0.01  # α_s: the ego loss has fallen by at least 1% ...
FALL_FRACTION_HALVING = 0.001  # ... or, halving the smallest step, by 0.1%
MAX_HALVINGS = 10
NO_FALL = "the ego loss does not fall"


def gradient_conflict(gradients: ClassGradients, n_classes: int) -> np.ndarray:
    """``C[c, c'] = -cos(g_c, g_c')`` over the raw gradients; NaN where undefined."""
    out = np.full((n_classes, n_classes), np.nan)
    g = gradients.flat.astype(np.float64)
    norms = np.linalg.norm(g, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (g @ g.T) / np.outer(norms, norms)
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
    g = gradients.flat.astype(np.float64)  # [n_present, P]
    present = list(gradients.classes)
    for c in directions.classes:
        slopes = g @ directions.vector(c).astype(np.float64)  # slopes[j] = g_{present j} · d_c
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
    """``I[c, c']`` from the CCT at step α_s (CONCEPTS.md, "Interference").

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


def pair_score(finite: np.ndarray) -> np.ndarray:
    """``S[a, b] = max(I[a, b], I[b, a])`` over the defined entries; NaN on the diagonal."""
    s = np.fmax(finite, finite.T)  # fmax ignores a NaN partner
    np.fill_diagonal(s, np.nan)
    return s


def ranked_pairs(matrix: np.ndarray, top: int = 10) -> list[tuple[int, int, float]]:
    """Unordered pairs ``(a, b, value)`` with a < b, largest finite values first."""
    k = matrix.shape[0]
    a, b = np.triu_indices(k, 1)
    values = np.maximum(np.nan_to_num(matrix[a, b], nan=-np.inf), np.nan_to_num(matrix[b, a], nan=-np.inf))
    order = np.argsort(-values, kind="stable")
    out = []
    for j in order:
        if not np.isfinite(values[j]) or len(out) >= top:
            break
        out.append((int(a[j]), int(b[j]), float(values[j])))
    return out


@dataclass(frozen=True, eq=False)
class InterferenceResult:
    """Interference matrices of one audit (CONCEPTS.md, "Interference").

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
        ``S``, symmetric.
    reasons : dict of int to str
        Ego classes left out of ``I`` and ``S``, with the reason.
    """

    conflict: np.ndarray
    first_order: np.ndarray
    finite: np.ndarray
    alpha_s: np.ndarray
    pair_score: np.ndarray
    reasons: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for a in (self.conflict, self.first_order, self.finite, self.alpha_s, self.pair_score):
            a.flags.writeable = False

    def top_pairs(self, top: int = 10) -> list[tuple[int, int, float]]:
        return ranked_pairs(self.pair_score, top)

    def to_dict(self) -> dict[str, Any]:
        return {"conflict": json_array(self.conflict), "first_order": json_array(self.first_order),
                "finite": json_array(self.finite), "alpha_s": json_array(self.alpha_s),
                "pair_score": json_array(self.pair_score),
                "reasons": {str(k): v for k, v in self.reasons.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterferenceResult:
        return cls(conflict=array_from_json(d["conflict"]), first_order=array_from_json(d["first_order"]),
                   finite=array_from_json(d["finite"]), alpha_s=array_from_json(d["alpha_s"]),
                   pair_score=array_from_json(d["pair_score"]),
                   reasons={int(k): v for k, v in d.get("reasons", {}).items()})


def interference(gradients: ClassGradients, directions: Directions, cct: CrossClassTestResult,
                 evaluate: Callable[[int, float], np.ndarray] | None = None) -> InterferenceResult:
    """All interference matrices of CONCEPTS.md, "Interference"."""
    k = cct.n_classes
    finite, alpha_s, reasons = finite_step_interference(cct, evaluate)
    return InterferenceResult(conflict=gradient_conflict(gradients, k),
                              first_order=first_order_interference(gradients, directions, k),
                              finite=finite, alpha_s=alpha_s, pair_score=pair_score(finite), reasons=reasons)
