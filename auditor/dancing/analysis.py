"""The label-dancing analysis: flips, dance rates, dancing pairs, notes, dominance, forgetting.

See docs/concepts.md, "Label dancing". Every source (a log, a checkpoint series, arrays)
becomes the same ``[T, n]`` prediction matrix and goes through :func:`dance_analysis`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from auditor.errors import DataError, OptionError, ResultsError
from auditor.serialization import array_from_json, json_array
from auditor.stats import spearman

from .checkpoints import CheckpointSeries, freeze_array
from .log import read_log

__all__ = ["DanceAnalysis", "DanceAgreement", "PairAgreement", "dance_analysis", "DOMINANCE_THRESHOLD"]

DOMINANCE_THRESHOLD = 0.01  # τ: a dominant note must hold more than 1% of the class


@dataclass(frozen=True)
class PairAgreement:
    """How far the ranking of dancing pairs agrees with another ranking of pairs.

    Attributes
    ----------
    spearman : float
        Spearman correlation over the unordered pairs where the other matrix is defined
        (NaN with fewer than 2 pairs or a constant ranking).
    top_k_overlap : float
        ``|top_k(dancing) ∩ top_k(other)| / k`` (NaN when no pair is defined).
    n_pairs : int
        Pairs compared.
    """

    spearman: float
    top_k_overlap: float
    n_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return {"spearman": self.spearman, "top_k_overlap": self.top_k_overlap, "n_pairs": self.n_pairs}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairAgreement:
        return cls(_float(d["spearman"]), _float(d["top_k_overlap"]), int(d["n_pairs"]))


@dataclass(frozen=True)
class DanceAgreement:
    """Dancing pairs (M + Mᵀ) compared with an audit's interference and confusion pairs.

    Attributes
    ----------
    top_k : int
    interference : PairAgreement or None
        Against the audit's pair score.
    confusion : PairAgreement or None
        Against the audit's pair confusion P.
    """

    top_k: int
    interference: PairAgreement | None
    confusion: PairAgreement | None

    def to_dict(self) -> dict[str, Any]:
        return {"top_k": self.top_k,
                "interference": None if self.interference is None else self.interference.to_dict(),
                "confusion": None if self.confusion is None else self.confusion.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DanceAgreement:
        def part(key: str) -> PairAgreement | None:
            return None if d.get(key) is None else PairAgreement.from_dict(d[key])

        return cls(int(d["top_k"]), part("interference"), part("confusion"))


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


@dataclass(frozen=True, eq=False)
class DanceAnalysis:
    """Label dancing of a probe set (docs/concepts.md, "Label dancing").

    Attributes
    ----------
    steps : ndarray of shape (T,)
    predictions : ndarray of shape (T, n)
    labels : ndarray of shape (n,)
    n_classes : int
    class_names : list of str or None
    window : tuple of int
        First and last transition (1-based, inclusive) of the dance-rate window.
    flips : ndarray of shape (n,)
        Flips per sample over the whole run.
    dance_rate : ndarray of shape (K,)
        Over the window; NaN for a class with no probe samples.
    dance_curve : ndarray of shape (K, T-1)
        Flip fraction of each class at each transition.
    pair_flips : ndarray of shape (K, K)
        M: flips from predicted a to predicted b over the run.
    notes : ndarray of shape (K, T, K)
        ``F_c[t, k]``: share of class-c probe samples predicted k at record t; NaN for a class
        with no probe samples.
    dominant : ndarray of shape (K, T)
        The dominant note (-1: none above τ).
    dominance : ndarray of shape (K, K)
        G: records at which k is c's dominant note.
    forgetting : ndarray of shape (n,)
        Correct -> wrong transitions per sample.
    never_forgotten : ndarray of shape (K,)
        Class-c samples correct at some record and never forgotten.
    threshold : float
        τ.
    source : str
        Where the predictions came from (a log path, "N checkpoints", "arrays").
    agreement : DanceAgreement or None
        The comparison with an audit's pairs, when one was made (:meth:`with_agreement`).

    Notes
    -----
    See docs/concepts.md, "Label dancing". Choices it leaves open: the dominant note breaks ties
    toward the lowest class; a class with no probe samples has NaN dance rate, curve and
    notes, no dominant note and 0 never-forgotten samples; :meth:`dancing_pairs` leaves out
    pairs that never flipped; top-k sets in :meth:`agreement` break ties toward the lower
    pair ``(a, b)``.
    """

    steps: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    n_classes: int
    class_names: list[str] | None
    window: tuple[int, int]
    flips: np.ndarray
    dance_rate: np.ndarray
    dance_curve: np.ndarray
    pair_flips: np.ndarray
    notes: np.ndarray
    dominant: np.ndarray
    dominance: np.ndarray
    forgetting: np.ndarray
    never_forgotten: np.ndarray
    threshold: float = DOMINANCE_THRESHOLD
    source: str = ""
    agreement: DanceAgreement | None = None

    def __post_init__(self) -> None:
        for name in self._ARRAYS:
            freeze_array(self, name)

    def dancing_pairs(self, top: int = 10) -> list[tuple[int, int, int]]:
        """Unordered pairs ``(a, b, M[a,b] + M[b,a])``, most flips first (ties: lower pair first)."""
        m = self.pair_flips + self.pair_flips.T
        a, b = np.triu_indices(self.n_classes, 1)
        values = m[a, b]
        order = np.lexsort((b, a, -values))
        return [(int(a[j]), int(b[j]), int(values[j])) for j in order[:top] if values[j] > 0]

    def compare_pairs(self, pair_score: np.ndarray | None = None, pair_confusion: np.ndarray | None = None,
                      top_k: int = 10) -> DanceAgreement:
        """Spearman correlation and top-k overlap of dancing pairs (M + Mᵀ) with a pair score and with P.

        Parameters
        ----------
        pair_score : ndarray of shape (K, K), optional
            The audit's pair score R (NaN where undefined); symmetrised with ``fmax(R, Rᵀ)``, which
            leaves a symmetric score unchanged.
        pair_confusion : ndarray of shape (K, K), optional
            P of an audit.
        top_k : int, default=10

        Returns
        -------
        DanceAgreement

        Raises
        ------
        DataError
            A matrix that is not ``[K, K]``.

        Notes
        -----
        See docs/concepts.md, "Label dancing". Both are taken over the unordered pairs ``a < b``
        where the other matrix is finite. Spearman uses average ranks for ties and is NaN
        with fewer than 2 pairs or a constant ranking. Top-k overlap is
        ``|top_k(dance) ∩ top_k(other)| / k`` with ``k = min(top_k, n_pairs)``; ties in a
        ranking go to the lower pair ``(a, b)``.
        """
        return DanceAgreement(int(top_k), self._compare(pair_score, "interference", top_k),
                              self._compare(pair_confusion, "confusion", top_k))

    def _compare(self, other: np.ndarray | None, name: str, top_k: int) -> PairAgreement | None:
        if other is None:
            return None
        o = np.asarray(other, dtype=np.float64)
        if o.shape != (self.n_classes, self.n_classes):
            raise DataError(f"the {name} pair matrix has shape {o.shape}, the dancing analysis has "
                            f"K={self.n_classes}; compare a log and an audit of the same classifier")
        dance = (self.pair_flips + self.pair_flips.T).astype(np.float64)
        a, b = np.triu_indices(self.n_classes, 1)
        o = np.fmax(o, o.T)
        values, d = o[a, b], dance[a, b]
        ok = np.isfinite(values)
        k = min(top_k, int(ok.sum()))
        idx = np.flatnonzero(ok)  # both rankings over the same (defined) pairs
        top_d = {(int(a[j]), int(b[j])) for j in idx[np.lexsort((b[idx], a[idx], -d[idx]))][:k]}
        top_o = {(int(a[j]), int(b[j])) for j in idx[np.lexsort((b[idx], a[idx], -values[idx]))][:k]}
        return PairAgreement(spearman(d[ok], values[ok]), len(top_d & top_o) / k if k else float("nan"),
                             int(ok.sum()))

    def with_agreement(self, pair_score: np.ndarray | None, pair_confusion: np.ndarray | None,
                       top_k: int = 10) -> DanceAnalysis:
        """This analysis with :attr:`agreement` set by :meth:`compare_pairs`."""
        return replace(self, agreement=self.compare_pairs(pair_score, pair_confusion, top_k))

    _ARRAYS = ("steps", "predictions", "labels", "flips", "dance_rate", "dance_curve", "pair_flips", "notes",
               "dominant", "dominance", "forgetting", "never_forgotten")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {n: json_array(getattr(self, n)) for n in self._ARRAYS}
        d.update(n_classes=self.n_classes, class_names=self.class_names, window=list(self.window),
                 threshold=self.threshold, source=self.source, dancing_pairs=[list(p) for p in self.dancing_pairs()],
                 agreement=None if self.agreement is None else self.agreement.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DanceAnalysis:
        ints = {"steps", "predictions", "labels", "flips", "pair_flips", "dominant", "dominance", "forgetting",
                "never_forgotten"}
        arrays = {n: (np.asarray(d[n], dtype=np.int64) if n in ints else array_from_json(d[n])) for n in cls._ARRAYS}
        arrays["notes"] = arrays["notes"].reshape(d["n_classes"], len(d["steps"]), d["n_classes"])
        arrays["dance_curve"] = arrays["dance_curve"].reshape(d["n_classes"], max(len(d["steps"]) - 1, 0))
        agreement = None if d.get("agreement") is None else DanceAgreement.from_dict(d["agreement"])
        return cls(n_classes=int(d["n_classes"]), class_names=d.get("class_names"), window=tuple(d["window"]),
                   threshold=float(d["threshold"]), source=d.get("source", ""), agreement=agreement, **arrays)


def _analyse(steps: np.ndarray, predictions: np.ndarray, labels: np.ndarray, n_classes: int,
             class_names: Sequence[str] | None, window: tuple[int, int] | None, threshold: float,
             source: str, what: str) -> DanceAnalysis:
    """The one computation behind every source (see docs/concepts.md, "Label dancing")."""
    t_count, n = predictions.shape
    if t_count < 2:
        raise ResultsError(f"{what} holds {t_count} record{'s' * (t_count != 1)}; label dancing needs at least 2")
    k = int(max(n_classes, predictions.max() + 1, labels.max() + 1))
    if window is None:
        window = (max(1, t_count // 2), t_count - 1)
    first, last = int(window[0]), int(window[1])
    if not 1 <= first <= last <= t_count - 1:
        raise OptionError(f"window {window} must satisfy 1 <= first <= last <= T-1 = {t_count - 1}")
    flipped = predictions[1:] != predictions[:-1]  # [T-1, n]; row t-1 is transition t
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.stack([np.bincount(labels, weights=row.astype(np.float64), minlength=k) for row in flipped])
        dance_curve = (per_class / counts).T  # [K, T-1]
        in_window = per_class[first - 1:last].sum(axis=0)
        dance_rate = in_window / (counts * (last - first + 1))
    dance_rate[counts == 0] = np.nan
    dance_curve[counts == 0] = np.nan
    pair_flips = np.zeros((k, k), dtype=np.int64)
    src, dst = predictions[:-1][flipped], predictions[1:][flipped]
    np.add.at(pair_flips, (src, dst), 1)
    notes = np.zeros((k, t_count, k))
    for c in range(k):
        members = predictions[:, labels == c]
        if members.shape[1]:
            for t in range(t_count):
                notes[c, t] = np.bincount(members[t], minlength=k) / members.shape[1]
    off = notes.copy()
    off[np.arange(k), :, np.arange(k)] = -1.0  # exclude the class itself
    best = np.argmax(off, axis=2)  # ties: the lowest index
    dominant = np.where(np.take_along_axis(off, best[..., None], axis=2)[..., 0] > threshold, best, -1)
    notes[counts == 0] = np.nan  # after the dominant note, which such a class does not have
    dominance = np.zeros((k, k), dtype=np.int64)
    for c in range(k):
        valid = dominant[c][dominant[c] >= 0]
        np.add.at(dominance[c], valid, 1)
    correct = predictions == labels[None, :]
    forgetting = np.sum(correct[:-1] & ~correct[1:], axis=0).astype(np.int64)
    learned = correct.any(axis=0)
    never = np.bincount(labels[learned & (forgetting == 0)], minlength=k).astype(np.int64)
    return DanceAnalysis(steps=np.asarray(steps, np.int64), predictions=predictions, labels=labels, n_classes=k,
                         class_names=list(class_names) if class_names is not None else None, window=(first, last),
                         flips=flipped.sum(axis=0).astype(np.int64), dance_rate=dance_rate, dance_curve=dance_curve,
                         pair_flips=pair_flips, notes=notes, dominant=dominant.astype(np.int64), dominance=dominance,
                         forgetting=forgetting, never_forgotten=never, threshold=threshold, source=source)


def dance_analysis(source: Any, window: tuple[int, int] | None = None, *, threshold: float = DOMINANCE_THRESHOLD,
                   n_classes: int | None = None) -> DanceAnalysis:
    """Analyse label dancing from a log path, a :class:`CheckpointSeries`, or ``(predictions, labels)``.

    Every source becomes the same ``[T, n]`` prediction matrix and goes through one
    computation, so a log and a checkpoint series with the same predictions give the same
    analysis.

    Parameters
    ----------
    source : path-like, CheckpointSeries, or tuple of (predictions [T, n], labels [n])
    window : (int, int), optional
        First and last transition (1-based, inclusive) for the dance rate. Default: the
        last half of the records, ``max(1, ⌊T/2⌋) .. T-1``.
    threshold : float, default=0.01
        τ of the dominant note (a note dominates when its share strictly exceeds τ).
    n_classes : int, optional
        K, when it is larger than the source says (e.g. to match an audit whose last
        classes are neither probed nor predicted).

    Returns
    -------
    DanceAnalysis

    Raises
    ------
    ResultsError
        An unreadable log, or fewer than 2 records.
    DataError
        Arrays of the wrong shape or with negative class ids.
    OptionError
        A window outside ``1..T-1``.

    Notes
    -----
    See docs/concepts.md, "Label dancing". K is the largest of the source's K, ``n_classes``,
    and the largest class id predicted or labelled plus one.

    Examples
    --------
    >>> import numpy as np
    >>> a = dance_analysis((np.array([[0, 1], [1, 1], [0, 1]]), np.array([0, 1])))
    >>> a.flips.tolist(), a.dance_rate.tolist(), a.dancing_pairs()
    ([2, 0], [1.0, 0.0], [(0, 1, 2)])
    """
    k = 0 if n_classes is None else int(n_classes)
    if isinstance(source, (str, os.PathLike)):
        steps, preds, _, header = read_log(source)
        return _analyse(steps, preds, np.asarray(header["labels"], np.int64), max(k, int(header["n_classes"])),
                        header.get("class_names"), window, threshold, str(source), f"the log '{source}'")
    if isinstance(source, CheckpointSeries):
        return _analyse(source.steps, source.predictions, source.labels, max(k, source.n_classes),
                        source.class_names, window, threshold, f"{len(source.paths)} checkpoints",
                        "the checkpoint series")
    if isinstance(source, tuple) and len(source) == 2:
        preds, labels = np.asarray(source[0]), np.asarray(source[1])
        if preds.ndim != 2 or labels.ndim != 1 or preds.shape[1] != len(labels) or len(labels) == 0:
            raise DataError(f"expected predictions [T, n] and labels [n] with n > 0, got shapes {preds.shape} and "
                            f"{labels.shape}")
        if preds.dtype.kind not in "iu" or labels.dtype.kind not in "iu":
            raise DataError(f"predictions ({preds.dtype}) and labels ({labels.dtype}) must be integer class ids; "
                            "take the argmax of logits first")
        preds, labels = preds.astype(np.int64), labels.astype(np.int64)
        if (preds.size and preds.min() < 0) or labels.min() < 0:
            raise DataError("predictions and labels must be class ids >= 0")
        return _analyse(np.arange(len(preds)), preds, labels, k, None, window, threshold, "arrays",
                        "the predictions")
    raise OptionError(f"dance_analysis takes a log path, a CheckpointSeries, or (predictions, labels), not "
                      f"{type(source).__name__}")
