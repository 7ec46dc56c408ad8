"""Label dancing: how probe predictions switch between classes during training.

See CONCEPTS.md, "Label dancing". Predictions come from a training-time log written by
:class:`LabelDancingRecorder` (any framework: it takes numpy arrays or anything with
``__array__``, ``.numpy()`` or ``.detach()``) or from a series of exported checkpoints
(:func:`predict_checkpoints`). Both become the same ``[T, n]`` prediction matrix, so both
give the same :class:`DanceAnalysis`.

Log format (append-only JSON lines, flushed per record): a header line
``{"format": "auditor-label-dancing", "version": 1, "labels": [...], "n_classes": K,
"class_names": [...] | null, "every": n, "created": ..., "meta": {...}}`` followed by one
line per record ``{"step": int, "epoch": int | null, "pred": [int, ...]}``. A crash can
leave at most a partial last line, which the reader skips with a warning.
"""

from __future__ import annotations

import glob as globmod
import json
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .errors import DataError, OptionError, ResultsError

__all__ = [
    "LabelDancingRecorder",
    "probe_set",
    "read_log",
    "CheckpointSeries",
    "predict_checkpoints",
    "DanceAnalysis",
    "dance_analysis",
    "spearman",
    "TruncatedLogWarning",
    "DOMINANCE_THRESHOLD",
]

FORMAT = "auditor-label-dancing"
VERSION = 1
DOMINANCE_THRESHOLD = 0.01  # τ: a dominant note must hold more than 1% of the class


class TruncatedLogWarning(UserWarning):
    """The log's last record was cut short (a crash mid-write); it was skipped."""


def _to_numpy(values: Any) -> np.ndarray:
    """numpy, torch, jax, tf... without importing any framework."""
    if hasattr(values, "detach"):  # torch: leave the autograd graph and the device
        values = values.detach()
        if hasattr(values, "cpu"):
            values = values.cpu()
    if hasattr(values, "numpy") and not isinstance(values, np.ndarray):
        values = values.numpy()
    return np.asarray(values)


def probe_set(labels: Any, max_per_class: int = 100, seed: int = 0) -> np.ndarray:
    """Indices of a stratified probe set: at most ``max_per_class`` per class, sorted, seeded."""
    y = _to_numpy(labels).astype(np.int64)
    if max_per_class < 1:
        raise OptionError(f"max_per_class must be >= 1, got {max_per_class}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


class LabelDancingRecorder:
    """Append probe predictions to a crash-safe log during training.

    Parameters
    ----------
    path : path-like
        The log file (JSON lines). An existing file is an error unless ``append=True``
        and its header matches.
    labels : array-like of shape (n,)
        True labels of the probe samples, in the order predictions will come.
    class_names : sequence of str, optional
    n_classes : int, optional
        K (default: from class_names, else max label + 1, raised by wider logits).
    every : int, default=1
        The recording schedule, stored in the header (steps or epochs between records).
    meta : dict, optional
        Anything JSON-serialisable to keep with the log (run name, framework...).
    append : bool, default=False
        Continue an existing log (e.g. after resuming training).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
    >>> with LabelDancingRecorder(path, labels=[0, 1, 1]) as rec:
    ...     rec.record(1, np.array([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]))
    ...     rec.record(2, [0, 1, 1])
    >>> read_log(path)[1].tolist()
    [[0, 1, 0], [0, 1, 1]]
    """

    def __init__(self, path: str | os.PathLike[str], labels: Any, class_names: Sequence[str] | None = None, *,
                 n_classes: int | None = None, every: int = 1, meta: Mapping[str, Any] | None = None,
                 append: bool = False) -> None:
        self.path = Path(path)
        self.labels = _to_numpy(labels).astype(np.int64).reshape(-1)
        if len(self.labels) == 0:
            raise DataError("the probe set is empty; give the labels of at least one probe sample")
        if np.any(self.labels < 0):
            raise DataError("probe labels must be class ids >= 0")
        k = n_classes or (len(class_names) if class_names is not None else int(self.labels.max()) + 1)
        if self.labels.max() >= k:
            raise DataError(f"probe label {int(self.labels.max())} is outside 0..{k - 1}")
        self.n_classes = int(k)
        self.class_names = list(class_names) if class_names is not None else None
        self.n_records = 0
        header = {"format": FORMAT, "version": VERSION, "labels": self.labels.tolist(), "n_classes": self.n_classes,
                  "class_names": self.class_names, "every": int(every),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "meta": dict(meta or {})}
        if self.path.exists() and self.path.stat().st_size > 0:
            if not append:
                raise OptionError(f"label-dancing log '{self.path}' exists; remove it, choose another path, or pass "
                                  "append=True to continue it")
            old = _read_header(self.path)
            if old["labels"] != header["labels"]:
                raise DataError(f"'{self.path}' was recorded with other probe labels; start a new log")
            self.n_records = len(read_log(self.path)[0])
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
            self._write(header)

    def _write(self, obj: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._fh.flush()  # one record at a time: a crash loses at most the line being written

    def record(self, step: int, logits_or_predictions: Any, epoch: int | None = None) -> np.ndarray:
        """Record the probe predictions at ``step``: logits/probabilities ``[n, K]`` or labels ``[n]``.

        Returns the predicted labels (argmax, ties to the lowest index).
        """
        values = _to_numpy(logits_or_predictions)
        if values.ndim == 2:
            pred = np.argmax(values, axis=1)
        elif values.ndim == 1:
            if values.dtype.kind == "f" and not np.all(values == np.round(values)):
                raise DataError("1-D predictions must be class ids; pass [n, K] logits to take the argmax")
            pred = values.astype(np.int64)
        else:
            raise DataError(f"expected logits [n, K] or predictions [n], got shape {values.shape}")
        if len(pred) != len(self.labels):
            raise DataError(f"got {len(pred)} predictions for a probe set of {len(self.labels)} samples")
        self._write({"step": int(step), "epoch": None if epoch is None else int(epoch),
                     "pred": pred.astype(np.int64).tolist()})
        self.n_records += 1
        return pred

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> LabelDancingRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _read_header(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        line = fh.readline()
    try:
        header = json.loads(line)
    except json.JSONDecodeError as err:
        raise ResultsError(f"'{path}' is not a label-dancing log (unreadable header: {err}); write logs with "
                           "auditor.LabelDancingRecorder") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ResultsError(f"'{path}' is not a label-dancing log (no '{FORMAT}' header); write logs with "
                           "auditor.LabelDancingRecorder")
    if int(header.get("version", 0)) > VERSION:
        raise ResultsError(f"'{path}' is a version {header['version']} log; this auditor reads version {VERSION}")
    return header


def read_log(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """``(steps [T], predictions [T, n], epochs [T] (-1: none), header)`` from a log.

    A truncated last line (a crash mid-write) is skipped with a :class:`TruncatedLogWarning`;
    a corrupt line elsewhere is an error.
    """
    p = Path(path)
    if not p.is_file():
        raise ResultsError(f"label-dancing log '{p}' does not exist; check the path")
    header = _read_header(p)
    n = len(header["labels"])
    steps, epochs, preds = [], [], []
    with open(p, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    body = lines[1:]
    last = max((i for i, line in enumerate(body) if line.strip()), default=-1)
    for i, line in enumerate(body):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            pred = rec["pred"]
            if len(pred) != n:
                raise ValueError(f"{len(pred)} predictions for {n} probe samples")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if i == last:
                warnings.warn(f"'{p}': the last record is incomplete (the run stopped mid-write); skipped it",
                              TruncatedLogWarning, stacklevel=2)
                break
            raise ResultsError(f"'{p}' line {i + 2} is corrupt ({err}); the log cannot be read past it") from err
        steps.append(int(rec["step"]))
        epochs.append(-1 if rec.get("epoch") is None else int(rec["epoch"]))
        preds.append(pred)
    predictions = np.asarray(preds, dtype=np.int64).reshape(len(preds), n)
    return np.asarray(steps, dtype=np.int64), predictions, np.asarray(epochs, dtype=np.int64), header


def _natural_key(path: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path)]


@dataclass(frozen=True, eq=False)
class CheckpointSeries:
    """Probe predictions of a series of exported checkpoints.

    Attributes
    ----------
    paths : tuple of str
        In natural order (epoch_2 before epoch_10).
    steps : ndarray of shape (T,)
        The last number in each file name, or 0..T-1 when a name has none.
    predictions : ndarray of shape (T, n)
    labels : ndarray of shape (n,)
    n_classes : int
    class_names : tuple of str or None
    """

    paths: tuple[str, ...]
    steps: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    n_classes: int
    class_names: tuple[str, ...] | None = None


def predict_checkpoints(paths_or_glob: str | Sequence[str | os.PathLike[str]], data: Any, *, batch_size: int = 256,
                        provider: str = "auto", progress: bool | None = None) -> CheckpointSeries:
    """Predict the probe ``data`` with every checkpoint (ONNX Runtime), in natural order."""
    from .data import check_dataset
    from .model import load_model
    from .progress import Progress
    from .runtime import predict_logits

    if isinstance(paths_or_glob, (str, os.PathLike)):
        paths = sorted(globmod.glob(str(paths_or_glob)), key=_natural_key)
        if not paths:
            raise DataError(f"no checkpoint matches '{paths_or_glob}'; quote the glob, e.g. \"ckpts/epoch_*.onnx\"")
    else:
        paths = [str(p) for p in paths_or_glob]
    if len(paths) < 2:
        raise DataError(f"found {len(paths)} checkpoint; label dancing needs at least 2")
    preds, k = [], None
    with Progress(len(paths), "checkpoints", enabled=progress) as bar:
        for path in paths:
            model = load_model(path)
            if k is not None and model.n_classes != k:
                raise DataError(f"'{path}' has {model.n_classes} classes, the earlier checkpoints {k}")
            k = model.n_classes
            checked = check_dataset(data, input_shape=model.input_shape, input_dtype=model.input_dtype, n_classes=k)
            preds.append(np.argmax(predict_logits(model, checked.x, batch_size=batch_size, provider=provider), axis=1))
            bar.advance()
    numbers = [re.findall(r"\d+", Path(p).stem) for p in paths]
    steps = [int(n[-1]) for n in numbers] if all(numbers) and len({int(n[-1]) for n in numbers}) == len(paths) \
        else list(range(len(paths)))
    return CheckpointSeries(paths=tuple(paths), steps=np.asarray(steps, dtype=np.int64),
                            predictions=np.stack(preds).astype(np.int64), labels=np.asarray(data.y, dtype=np.int64),
                            n_classes=int(k or 0), class_names=data.class_names)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_v = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else float("nan")


def _nan_list(a: np.ndarray) -> Any:
    obj = np.asarray(a, dtype=object)
    if np.asarray(a).dtype.kind == "f":
        obj[np.isnan(np.asarray(a, dtype=np.float64))] = None
    return obj.tolist()


def _nan_array(v: Any) -> np.ndarray:
    a = np.asarray(v, dtype=object)
    return np.where(a == None, np.nan, a).astype(np.float64)  # noqa: E711


@dataclass(frozen=True, eq=False)
class DanceAnalysis:
    """Label dancing of a probe set (CONCEPTS.md, "Label dancing").

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
        ``F_c[t, k]``: share of class-c probe samples predicted k at record t.
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
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for a in (self.steps, self.predictions, self.labels, self.flips, self.dance_rate, self.dance_curve,
                  self.pair_flips, self.notes, self.dominant, self.dominance, self.forgetting, self.never_forgotten):
            a.flags.writeable = False

    def dancing_pairs(self, top: int = 10) -> list[tuple[int, int, int]]:
        """Unordered pairs ``(a, b, M[a,b] + M[b,a])``, most flips first (ties: lower pair first)."""
        m = self.pair_flips + self.pair_flips.T
        a, b = np.triu_indices(self.n_classes, 1)
        values = m[a, b]
        order = np.lexsort((b, a, -values))
        return [(int(a[j]), int(b[j]), int(values[j])) for j in order[:top] if values[j] > 0]

    def agreement(self, pair_score: np.ndarray | None = None, pair_confusion: np.ndarray | None = None,
                  top_k: int = 10) -> dict[str, Any]:
        """Spearman correlation and top-k overlap of dancing pairs (M + Mᵀ) with S and with P.

        Over the unordered pairs where the other matrix is defined (finite). Top-k overlap:
        ``|top_k(dance) ∩ top_k(other)| / k``.
        """
        dance = (self.pair_flips + self.pair_flips.T).astype(np.float64)
        a, b = np.triu_indices(self.n_classes, 1)
        out: dict[str, Any] = {"top_k": int(top_k)}
        for name, other in (("interference", pair_score), ("confusion", pair_confusion)):
            if other is None:
                continue
            o = np.asarray(other, dtype=np.float64)
            o = np.fmax(o, o.T)
            values, d = o[a, b], dance[a, b]
            ok = np.isfinite(values)
            k = min(top_k, int(ok.sum()))
            top_d = {(int(a[j]), int(b[j])) for j in np.lexsort((b, a, -d))[:k]} if k else set()
            idx = np.flatnonzero(ok)
            top_o = {(int(a[j]), int(b[j])) for j in idx[np.lexsort((b[idx], a[idx], -values[idx]))][:k]}
            out[name] = {"spearman": spearman(d[ok], values[ok]), "top_k_overlap": len(top_d & top_o) / k if k
                         else float("nan"), "n_pairs": int(ok.sum())}
        return out

    _ARRAYS = ("steps", "predictions", "labels", "flips", "dance_rate", "dance_curve", "pair_flips", "notes",
               "dominant", "dominance", "forgetting", "never_forgotten")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {n: _nan_list(getattr(self, n)) for n in self._ARRAYS}
        d.update(n_classes=self.n_classes, class_names=self.class_names, window=list(self.window),
                 threshold=self.threshold, source=self.source, dancing_pairs=[list(p) for p in self.dancing_pairs()])
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DanceAnalysis:
        ints = {"steps", "predictions", "labels", "flips", "pair_flips", "dominant", "dominance", "forgetting",
                "never_forgotten"}
        arrays = {n: (np.asarray(d[n], dtype=np.int64) if n in ints else _nan_array(d[n])) for n in cls._ARRAYS}
        arrays["notes"] = arrays["notes"].reshape(d["n_classes"], len(d["steps"]), d["n_classes"])
        arrays["dance_curve"] = arrays["dance_curve"].reshape(d["n_classes"], max(len(d["steps"]) - 1, 0))
        extra = {k: v for k, v in d.items() if k == "agreement"}
        return cls(n_classes=int(d["n_classes"]), class_names=d.get("class_names"), window=tuple(d["window"]),
                   threshold=float(d["threshold"]), source=d.get("source", ""), extra=extra, **arrays)


def _analyse(steps: np.ndarray, predictions: np.ndarray, labels: np.ndarray, n_classes: int,
             class_names: Sequence[str] | None, window: tuple[int, int] | None, threshold: float,
             source: str) -> DanceAnalysis:
    t_count, n = predictions.shape
    if t_count < 2:
        raise ResultsError(f"the predictions hold {t_count} record; label dancing needs at least 2")
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


def dance_analysis(source: Any, window: tuple[int, int] | None = None, *,
                   threshold: float = DOMINANCE_THRESHOLD) -> DanceAnalysis:
    """Analyse label dancing from a log path, a :class:`CheckpointSeries`, or ``(predictions, labels)``.

    Parameters
    ----------
    source : path-like, CheckpointSeries, or tuple of (predictions [T, n], labels [n])
    window : (int, int), optional
        First and last transition (1-based, inclusive) for the dance rate. Default: the
        last half of the records, ``max(1, ⌊T/2⌋) .. T-1``.
    threshold : float, default=0.01
        τ of the dominant note.

    Returns
    -------
    DanceAnalysis
    """
    if isinstance(source, (str, os.PathLike)):
        steps, preds, _, header = read_log(source)
        return _analyse(steps, preds, np.asarray(header["labels"], np.int64), int(header["n_classes"]),
                        header.get("class_names"), window, threshold, str(source))
    if isinstance(source, CheckpointSeries):
        return _analyse(source.steps, source.predictions, source.labels, source.n_classes, source.class_names,
                        window, threshold, f"{len(source.paths)} checkpoints")
    if isinstance(source, tuple) and len(source) == 2:
        preds = np.asarray(source[0], dtype=np.int64)
        labels = np.asarray(source[1], dtype=np.int64)
        if preds.ndim != 2 or preds.shape[1] != len(labels):
            raise DataError(f"predictions must be [T, n] with n = {len(labels)} labels, got {preds.shape}")
        return _analyse(np.arange(len(preds)), preds, labels, int(max(preds.max(), labels.max()) + 1), None, window,
                        threshold, "arrays")
    raise OptionError("dance_analysis takes a log path, a CheckpointSeries, or (predictions, labels)")
