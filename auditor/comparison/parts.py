"""The parts of a comparison: per class, overall, agreement, flipped samples, interference.

Each part is a frozen dataclass with read-only arrays and a ``to_dict``/``from_dict`` pair;
:class:`~auditor.comparison.CompareResult` holds them all. The JSON
layout is documented in ``docs/compare-schema.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from auditor.examples import image_from_json, image_to_json
from auditor.serialization import array_from_json, json_array

__all__ = ["ClassComparison", "OverallComparison", "Agreement", "FlipExample", "FlipGroup", "InterferenceChange"]


def _freeze(obj: object) -> None:
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False


@dataclass(frozen=True, eq=False)
class ClassComparison:
    """Per-class accuracy and loss of both models and the paired test of each change.

    All arrays have shape (K,); entries of classes with no samples are NaN (counts 0,
    flags False).

    Attributes
    ----------
    count : ndarray of int64
        Samples of each class, ``|D_c|``.
    accuracy_baseline, accuracy_candidate : ndarray
        ``A_c`` of each model (argmax ties go to the lowest index).
    accuracy_change : ndarray
        ``accuracy_candidate - accuracy_baseline`` (negative: the candidate is worse).
    interval_low, interval_high : ndarray
        The ``confidence`` interval of ``accuracy_change`` for paired proportions (the same
        samples; Newcombe's method 10).
    loss_baseline, loss_candidate, loss_change : ndarray
        ``L_c``: mean cross-entropy of the class's samples, and the change.
    only_baseline : ndarray of int64
        McNemar's ``b``: samples the baseline gets right and the candidate wrong.
    only_candidate : ndarray of int64
        McNemar's ``c``: samples the candidate gets right and the baseline wrong.
    p_value : ndarray
        Exact two-sided McNemar p-value (binomial test of ``b`` in ``b + c`` at 1/2).
    p_holm : ndarray
        ``p_value`` adjusted by Holm's method across the classes with samples.
    regressed, improved : ndarray of bool
        ``p_holm < alpha`` and the accuracy fell (rose).
    alpha, confidence : float
        The level of the tests and of the intervals.
    """

    count: np.ndarray
    accuracy_baseline: np.ndarray
    accuracy_candidate: np.ndarray
    accuracy_change: np.ndarray
    interval_low: np.ndarray
    interval_high: np.ndarray
    loss_baseline: np.ndarray
    loss_candidate: np.ndarray
    loss_change: np.ndarray
    only_baseline: np.ndarray
    only_candidate: np.ndarray
    p_value: np.ndarray
    p_holm: np.ndarray
    regressed: np.ndarray
    improved: np.ndarray
    alpha: float
    confidence: float

    def __post_init__(self) -> None:
        _freeze(self)

    @property
    def significant(self) -> np.ndarray:
        """Classes whose change is significant after the Holm correction (either way)."""
        return np.asarray(self.regressed | self.improved, dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = json_array(v) if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassComparison:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            v = d[f.name]
            if f.name in ("alpha", "confidence"):
                kwargs[f.name] = float(v)
            elif f.name in ("count", "only_baseline", "only_candidate"):
                kwargs[f.name] = np.asarray(v, dtype=np.int64)
            elif f.name in ("regressed", "improved"):
                kwargs[f.name] = np.asarray(v, dtype=bool)
            else:
                kwargs[f.name] = array_from_json(v)
        return cls(**kwargs)


@dataclass(frozen=True)
class OverallComparison:
    """The same numbers as :class:`ClassComparison` over all samples (no multiple-test correction).

    Attributes
    ----------
    n_samples : int
    accuracy_baseline, accuracy_candidate, accuracy_change : float
    interval_low, interval_high : float
    loss_baseline, loss_candidate : float
        Mean cross-entropy over all samples (``L = Σ_c π_c L_c``).
    only_baseline, only_candidate : int
    p_value : float
    """

    n_samples: int
    accuracy_baseline: float
    accuracy_candidate: float
    accuracy_change: float
    interval_low: float
    interval_high: float
    loss_baseline: float
    loss_candidate: float
    only_baseline: int
    only_candidate: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OverallComparison:
        def number(key: str) -> float:
            return float("nan") if d[key] is None else float(d[key])

        return cls(n_samples=int(d["n_samples"]), accuracy_baseline=number("accuracy_baseline"),
                   accuracy_candidate=number("accuracy_candidate"), accuracy_change=number("accuracy_change"),
                   interval_low=number("interval_low"), interval_high=number("interval_high"),
                   loss_baseline=number("loss_baseline"), loss_candidate=number("loss_candidate"),
                   only_baseline=int(d["only_baseline"]), only_candidate=int(d["only_candidate"]),
                   p_value=number("p_value"))


@dataclass(frozen=True, eq=False)
class Agreement:
    """How closely the candidate's outputs follow the baseline's, per true class and overall.

    Attributes
    ----------
    top1 : ndarray of shape (K,)
        Share of the class's samples on which both models predict the same class.
    mean_abs_logit_difference : ndarray of shape (K,)
        Mean over the class's samples and the K logits of ``|z_candidate - z_baseline|``.
    max_abs_logit_difference : ndarray of shape (K,)
        The largest such difference.
    mean_kl : ndarray of shape (K,)
        Mean ``KL(softmax(z_baseline) || softmax(z_candidate))`` (nats).
    overall_top1, overall_mean_abs_logit_difference, overall_max_abs_logit_difference, overall_mean_kl : float
        The same over all samples.
    """

    top1: np.ndarray
    mean_abs_logit_difference: np.ndarray
    max_abs_logit_difference: np.ndarray
    mean_kl: np.ndarray
    overall_top1: float
    overall_mean_abs_logit_difference: float
    overall_max_abs_logit_difference: float
    overall_mean_kl: float

    def __post_init__(self) -> None:
        _freeze(self)

    def to_dict(self) -> dict[str, Any]:
        return {"per_class": {k: json_array(getattr(self, k)) for k in
                              ("top1", "mean_abs_logit_difference", "max_abs_logit_difference", "mean_kl")},
                "overall": {k: getattr(self, f"overall_{k}") for k in
                            ("top1", "mean_abs_logit_difference", "max_abs_logit_difference", "mean_kl")}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Agreement:
        pc, ov = d["per_class"], d["overall"]

        def number(key: str) -> float:
            return float("nan") if ov[key] is None else float(ov[key])

        return cls(top1=array_from_json(pc["top1"]),
                   mean_abs_logit_difference=array_from_json(pc["mean_abs_logit_difference"]),
                   max_abs_logit_difference=array_from_json(pc["max_abs_logit_difference"]),
                   mean_kl=array_from_json(pc["mean_kl"]), overall_top1=number("top1"),
                   overall_mean_abs_logit_difference=number("mean_abs_logit_difference"),
                   overall_max_abs_logit_difference=number("max_abs_logit_difference"),
                   overall_mean_kl=number("mean_kl"))


@dataclass(frozen=True, eq=False)
class FlipExample:
    """One sample the baseline got right and the candidate gets wrong.

    Attributes
    ----------
    index : int
        Position of the sample in the data.
    baseline_probability : float
        The baseline's softmax probability of the true class.
    candidate_probability : float
        The candidate's softmax probability of its (wrong) prediction.
    thumbnail : ndarray of uint8, shape (H, W) or (H, W, 3), or None
        Image data: the sample rescaled to 0..255 (per image, min to max) and shrunk to at
        most 64 pixels a side; None for data that are not images.
    text : str or None
        Text data: the sample's text.
    """

    index: int
    baseline_probability: float
    candidate_probability: float
    thumbnail: np.ndarray | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        _freeze(self)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "baseline_probability": self.baseline_probability,
                "candidate_probability": self.candidate_probability,
                "thumbnail": image_to_json(self.thumbnail), "text": self.text}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FlipExample:
        return cls(int(d["index"]), float(d["baseline_probability"]), float(d["candidate_probability"]),
                   image_from_json(d.get("thumbnail")), d.get("text"))


@dataclass(frozen=True, eq=False)
class FlipGroup:
    """The samples of class ``true`` that flipped from right to the wrong class ``predicted``.

    Attributes
    ----------
    true, predicted : int
        The true class (the baseline's prediction) and the candidate's new prediction.
    indices : ndarray of int64
        Every such sample, in data order.
    examples : tuple of FlipExample
        A few of them (the most confident wrong predictions first), for the report.
    """

    true: int
    predicted: int
    indices: np.ndarray
    examples: tuple[FlipExample, ...] = ()

    def __post_init__(self) -> None:
        _freeze(self)

    @property
    def count(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[str, Any]:
        return {"true": self.true, "predicted": self.predicted, "count": self.count,
                "indices": self.indices.tolist(), "examples": [e.to_dict() for e in self.examples]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FlipGroup:
        return cls(int(d["true"]), int(d["predicted"]), np.asarray(d["indices"], dtype=np.int64),
                   tuple(FlipExample.from_dict(e) for e in d["examples"]))


@dataclass(frozen=True, eq=False)
class InterferenceChange:
    """The pair score of both models (``--interference``) and the pairs whose score rose most.

    Attributes
    ----------
    baseline, candidate : ndarray of shape (K, K)
        ``InterferenceResult.pair_score`` of each model's audit (NaN where undefined).
    description : str
        Which pair score the audits computed (from the audit's schema version).
    """

    baseline: np.ndarray
    candidate: np.ndarray
    description: str

    def __post_init__(self) -> None:
        _freeze(self)

    @property
    def change(self) -> np.ndarray:
        return np.asarray(self.candidate - self.baseline, dtype=np.float64)

    def rose(self, top: int = 10) -> list[tuple[int, int, float, float, float]]:
        """Unordered pairs ``(a, b, baseline, candidate, change)`` with a < b, largest rise first (finite only)."""
        k = self.baseline.shape[0]
        a, b = np.triu_indices(k, 1)
        delta = self.change[a, b]
        ok = np.flatnonzero(np.isfinite(delta) & (delta > 0))
        order = ok[np.argsort(-delta[ok], kind="stable")][:top]
        return [(int(a[j]), int(b[j]), float(self.baseline[a[j], b[j]]), float(self.candidate[a[j], b[j]]),
                 float(delta[j])) for j in order]

    @property
    def max_increase(self) -> float:
        """The largest rise of the pair score over all pairs; NaN when no pair is defined in both."""
        delta = self.change[np.triu_indices(self.baseline.shape[0], 1)]
        finite = delta[np.isfinite(delta)]
        return float(finite.max()) if finite.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "baseline": json_array(self.baseline),
                "candidate": json_array(self.candidate), "rose": [list(r) for r in self.rose()]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterferenceChange:
        return cls(array_from_json(d["baseline"]), array_from_json(d["candidate"]), str(d["description"]))
