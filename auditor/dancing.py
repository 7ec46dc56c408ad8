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
from .io import array_from_json, json_array

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
        try:
            values = values.numpy()
        except TypeError:  # torch bfloat16 has no numpy dtype
            values = values.float().numpy()
    return np.asarray(values)


def probe_set(labels: Any, max_per_class: int = 100, seed: int = 0) -> np.ndarray:
    """Indices of a stratified probe set: at most ``max_per_class`` samples of each class.

    Parameters
    ----------
    labels : array-like of shape (N,)
    max_per_class : int, default=100
    seed : int, default=0

    Returns
    -------
    ndarray of shape (n,), int64
        Sorted indices into ``labels``; a class with at most ``max_per_class`` samples is
        taken whole.

    Notes
    -----
    See CONCEPTS.md, "Label dancing" (P). Deterministic: the same labels and seed give the
    same indices (numpy's ``default_rng(seed)``, classes in increasing order), the same
    choice as :meth:`auditor.data.Dataset.stratified`.

    Examples
    --------
    >>> probe_set([0, 0, 0, 1, 1, 2], max_per_class=2).tolist()
    [1, 2, 3, 4, 5]
    """
    y = _to_numpy(labels).astype(np.int64).reshape(-1)
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
        Continue an existing log (e.g. after resuming training). A partial last line left by
        a crash is cut off first.
    fsync : bool, default=False
        Also ``os.fsync`` after every record (survives a power loss, not only a crash of the
        training process; costs about a millisecond per record on most disks).

    Attributes
    ----------
    n_records : int
        Records in the log so far.

    Raises
    ------
    DataError
        Empty or negative probe labels; later, predictions that do not fit the probe set.
    OptionError
        ``every < 1``, or the file exists and ``append`` is false.

    Notes
    -----
    See CONCEPTS.md, "Label dancing". The recorder keeps only the probe labels in memory;
    every record goes straight to the file (one JSON line, flushed). ``record`` writes
    whenever it is called: ``every`` only documents the schedule in the header, and
    :meth:`due` is a convenience for loops that want to skip the forward pass. When
    ``n_classes`` and ``class_names`` are both omitted, K is ``max label + 1`` in the
    header and the analysis raises it to the largest class predicted.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
    >>> with LabelDancingRecorder(path, labels=[0, 1, 1]) as rec:
    ...     _ = rec.record(1, np.array([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]))
    ...     _ = rec.record(2, [0, 1, 1])
    >>> read_log(path)[1].tolist()
    [[0, 1, 0], [0, 1, 1]]
    """

    def __init__(self, path: str | os.PathLike[str], labels: Any, class_names: Sequence[str] | None = None, *,
                 n_classes: int | None = None, every: int = 1, meta: Mapping[str, Any] | None = None,
                 append: bool = False, fsync: bool = False) -> None:
        self.path = Path(path)
        if int(every) < 1:
            raise OptionError(f"every must be >= 1 (steps or epochs between records), got {every}")
        if n_classes is not None and class_names is not None and len(class_names) != n_classes:
            raise DataError(f"{len(class_names)} class names for n_classes={n_classes}; give one name per class")
        self.labels = _to_numpy(labels).astype(np.int64).reshape(-1)
        if len(self.labels) == 0:
            raise DataError("the probe set is empty; give the labels of at least one probe sample")
        if np.any(self.labels < 0):
            raise DataError("probe labels must be class ids >= 0")
        k = n_classes or (len(class_names) if class_names is not None else int(self.labels.max()) + 1)
        if self.labels.max() >= k:
            raise DataError(f"probe label {int(self.labels.max())} is outside 0..{k - 1}")
        self.n_classes = int(k)
        # Only a K the caller gave bounds the predictions; an inferred one may grow (see Notes).
        self._k_known = n_classes is not None or class_names is not None
        self.class_names = list(class_names) if class_names is not None else None
        self.every = int(every)
        self.fsync = bool(fsync)
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncatedLogWarning)
                self.n_records = len(read_log(self.path)[0])
            _drop_partial_line(self.path)  # a crash mid-record: appending after it would corrupt the next line
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
            self._write(header)

    def _write(self, obj: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._fh.flush()  # one record at a time: a crash loses at most the line being written
        if self.fsync:
            os.fsync(self._fh.fileno())

    def record(self, step: int, logits_or_predictions: Any, epoch: int | None = None) -> np.ndarray:
        """Record the probe predictions at ``step``: logits/probabilities ``[n, K]`` or labels ``[n]``.

        Returns the predicted labels (argmax, ties to the lowest index).
        """
        if self._fh.closed:
            raise OptionError(f"the recorder of '{self.path}' is closed; open a new one with append=True to go on")
        values = _to_numpy(logits_or_predictions)
        if values.ndim > 2 and all(d == 1 for d in values.shape[2:]):
            values = values.reshape(values.shape[:2])  # [n, K, 1, 1] logits
        if values.ndim == 2:
            if values.shape[1] < 2:
                raise DataError(f"got logits of shape {values.shape}; a single sigmoid output is ambiguous, pass "
                                "[n, 2] logits or the predicted class ids [n]")
            if self._k_known and values.shape[1] != self.n_classes:
                raise DataError(f"got logits for {values.shape[1]} classes, the log has n_classes={self.n_classes}; "
                                "pass logits [n, K] of the same model")
            pred = np.argmax(values, axis=1)
        elif values.ndim == 1:
            if values.dtype.kind not in "iuf" or (values.dtype.kind == "f"
                                                   and not np.all(values == np.round(values))):
                raise DataError("1-D predictions must be class ids; pass [n, K] logits to take the argmax")
            pred = values.astype(np.int64)
            if len(pred) and (pred.min() < 0 or (self._k_known and pred.max() >= self.n_classes)):
                raise DataError(f"predictions range {int(pred.min())}..{int(pred.max())}, outside the classes "
                                f"0..{self.n_classes - 1}; pass class ids")
        else:
            raise DataError(f"expected logits [n, K] or predictions [n], got shape {values.shape}")
        if len(pred) != len(self.labels):
            raise DataError(f"got {len(pred)} predictions for a probe set of {len(self.labels)} samples")
        self._write({"step": int(step), "epoch": None if epoch is None else int(epoch),
                     "pred": pred.astype(np.int64).tolist()})
        self.n_records += 1
        return pred

    def due(self, step: int) -> bool:
        """Whether ``step`` is on the schedule (``step % every == 0``)."""
        return int(step) % self.every == 0

    def close(self) -> None:
        """Flush and close the log (also on leaving a ``with`` block)."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> LabelDancingRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _drop_partial_line(path: Path) -> None:
    """Cut a log back to its last complete line (what a crash mid-write leaves after it)."""
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


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
    try:
        version = int(header.get("version", 0))
        labels = [int(v) for v in header["labels"]]
        k = int(header["n_classes"])
    except (KeyError, TypeError, ValueError) as err:
        raise ResultsError(f"'{path}' has a corrupt header ({type(err).__name__}: {err}); record the run again") \
            from err
    if version > VERSION:
        raise ResultsError(f"'{path}' is a version {version} log; this auditor reads version {VERSION}: upgrade it")
    if not labels or min(labels) < 0:
        raise ResultsError(f"'{path}' has a corrupt header (probe labels empty or negative); record the run again")
    header["n_classes"] = k
    return header


def read_log(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a log written by :class:`LabelDancingRecorder`.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    steps : ndarray of shape (T,), int64
    predictions : ndarray of shape (T, n), int64
        ``predictions[t, i]``: the class predicted for probe sample i at record t.
    epochs : ndarray of shape (T,), int64
        -1 where a record has no epoch.
    header : dict
        The header line (probe ``labels``, ``n_classes``, ``class_names``, ``every``,
        ``created``, ``version``, ``meta``).

    Raises
    ------
    ResultsError
        No such file, a corrupt header, or a corrupt record before the last one.

    Warns
    -----
    TruncatedLogWarning
        The last record is incomplete (the run stopped mid-write); it is skipped.
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
            if not all(type(v) is int and v >= 0 for v in pred):
                raise ValueError("predictions must be class ids >= 0")
            step = int(rec["step"])
            epoch = -1 if rec.get("epoch") is None else int(rec["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if i == last:
                warnings.warn(f"'{p}': the last record is incomplete (the run stopped mid-write); skipped it",
                              TruncatedLogWarning, stacklevel=2)
                break
            raise ResultsError(f"'{p}' line {i + 2} is corrupt ({err}); the log cannot be read past it") from err
        steps.append(step)
        epochs.append(epoch)
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

    def __post_init__(self) -> None:
        for name in ("steps", "predictions", "labels"):
            _freeze(self, name, np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "steps": self.steps.tolist(), "predictions": self.predictions.tolist(),
                "labels": self.labels.tolist(), "n_classes": self.n_classes,
                "class_names": None if self.class_names is None else list(self.class_names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointSeries:
        names = d.get("class_names")
        preds = np.asarray(d["predictions"], dtype=np.int64).reshape(len(d["steps"]), len(d["labels"]))
        return cls(paths=tuple(d["paths"]), steps=np.asarray(d["steps"], dtype=np.int64), predictions=preds,
                   labels=np.asarray(d["labels"], dtype=np.int64), n_classes=int(d["n_classes"]),
                   class_names=None if names is None else tuple(names))


def _freeze(obj: Any, name: str, dtype: Any = None) -> None:
    """Replace a field of a frozen dataclass by a read-only view (the caller's array stays writable)."""
    a = np.asarray(getattr(obj, name), dtype=dtype).view()
    a.flags.writeable = False
    object.__setattr__(obj, name, a)


def predict_checkpoints(paths_or_glob: str | Sequence[str | os.PathLike[str]], data: Any, *, batch_size: int = 256,
                        provider: str = "auto", progress: bool | None = None) -> CheckpointSeries:
    """Predict the probe ``data`` with every exported checkpoint (ONNX Runtime).

    Parameters
    ----------
    paths_or_glob : str, path-like, or sequence of path-like
        A glob (``"ckpts/epoch_*.onnx"``) or a directory (its ``*.onnx``), taken in natural
        order (epoch_2 before epoch_10); or an explicit list, taken in the order given.
    data : Dataset or tuple of (x, y)
        The probe set (e.g. ``dataset.subset(probe_set(dataset.y))``).
    batch_size : int, default=256
    provider : str, default="auto"
        ONNX Runtime provider, as in :func:`auditor.runtime.predict_logits`.
    progress : bool or None, default=None
        Draw a progress bar (None: when stderr is a terminal).

    Returns
    -------
    CheckpointSeries

    Raises
    ------
    DataError
        Fewer than 2 checkpoints, checkpoints with different K, or data that do not fit.

    Notes
    -----
    See CONCEPTS.md, "Label dancing": the checkpoints' predictions play the role of the
    log's records. ``steps`` are the last number in each file name when every name has
    one and they are all different, else ``0..T-1``.
    """
    from .data import Dataset, check_dataset
    from .model import load_model
    from .progress import Progress
    from .runtime import predict_logits

    if isinstance(data, tuple) and len(data) == 2:
        data = Dataset(data[0], data[1])
    if isinstance(paths_or_glob, (str, os.PathLike)) and Path(paths_or_glob).is_dir():
        paths_or_glob = os.path.join(globmod.escape(str(paths_or_glob)), "*.onnx")
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
            checked = check_dataset(data, model)
            preds.append(np.argmax(predict_logits(model, checked, batch_size=batch_size, provider=provider), axis=1))
            bar.advance()
    numbers = [re.findall(r"\d+", Path(p).stem) for p in paths]
    steps = [int(n[-1]) for n in numbers] if all(numbers) and len({int(n[-1]) for n in numbers}) == len(paths) \
        else list(range(len(paths)))
    return CheckpointSeries(paths=tuple(paths), steps=np.asarray(steps, dtype=np.int64),
                            predictions=np.stack(preds).astype(np.int64), labels=np.asarray(data.y, dtype=np.int64),
                            n_classes=int(k or 0), class_names=data.class_names)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else float("nan")


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

    Notes
    -----
    See CONCEPTS.md, "Label dancing". Choices it leaves open: the dominant note breaks ties
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
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self._ARRAYS:
            _freeze(self, name)

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

        Parameters
        ----------
        pair_score : ndarray of shape (K, K), optional
            S of an audit (NaN where undefined); symmetrised with ``fmax(S, Sᵀ)``.
        pair_confusion : ndarray of shape (K, K), optional
            P of an audit.
        top_k : int, default=10

        Returns
        -------
        dict
            ``{"top_k": k, "interference": {...}, "confusion": {...}}`` (a key per matrix
            given), each ``{"spearman", "top_k_overlap", "n_pairs"}``.

        Raises
        ------
        DataError
            A matrix that is not ``[K, K]``.

        Notes
        -----
        See CONCEPTS.md, "Label dancing". Both are taken over the unordered pairs ``a < b``
        where the other matrix is finite. Spearman uses average ranks for ties and is NaN
        with fewer than 2 pairs or a constant ranking. Top-k overlap is
        ``|top_k(dance) ∩ top_k(other)| / k`` with ``k = min(top_k, n_pairs)``; ties in a
        ranking go to the lower pair ``(a, b)``.
        """
        dance = (self.pair_flips + self.pair_flips.T).astype(np.float64)
        a, b = np.triu_indices(self.n_classes, 1)
        out: dict[str, Any] = {"top_k": int(top_k)}
        for name, other in (("interference", pair_score), ("confusion", pair_confusion)):
            if other is None:
                continue
            o = np.asarray(other, dtype=np.float64)
            if o.shape != (self.n_classes, self.n_classes):
                raise DataError(f"the {name} pair matrix has shape {o.shape}, the dancing analysis has "
                                f"K={self.n_classes}; compare a log and an audit of the same classifier")
            o = np.fmax(o, o.T)
            values, d = o[a, b], dance[a, b]
            ok = np.isfinite(values)
            k = min(top_k, int(ok.sum()))
            idx = np.flatnonzero(ok)  # both rankings over the same (defined) pairs
            top_d = {(int(a[j]), int(b[j])) for j in idx[np.lexsort((b[idx], a[idx], -d[idx]))][:k]}
            top_o = {(int(a[j]), int(b[j])) for j in idx[np.lexsort((b[idx], a[idx], -values[idx]))][:k]}
            out[name] = {"spearman": spearman(d[ok], values[ok]), "top_k_overlap": len(top_d & top_o) / k if k
                         else float("nan"), "n_pairs": int(ok.sum())}
        return out

    _ARRAYS = ("steps", "predictions", "labels", "flips", "dance_rate", "dance_curve", "pair_flips", "notes",
               "dominant", "dominance", "forgetting", "never_forgotten")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {n: json_array(getattr(self, n)) for n in self._ARRAYS}
        d.update(n_classes=self.n_classes, class_names=self.class_names, window=list(self.window),
                 threshold=self.threshold, source=self.source, dancing_pairs=[list(p) for p in self.dancing_pairs()])
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DanceAnalysis:
        ints = {"steps", "predictions", "labels", "flips", "pair_flips", "dominant", "dominance", "forgetting",
                "never_forgotten"}
        arrays = {n: (np.asarray(d[n], dtype=np.int64) if n in ints else array_from_json(d[n])) for n in cls._ARRAYS}
        arrays["notes"] = arrays["notes"].reshape(d["n_classes"], len(d["steps"]), d["n_classes"])
        arrays["dance_curve"] = arrays["dance_curve"].reshape(d["n_classes"], max(len(d["steps"]) - 1, 0))
        extra = {k: v for k, v in d.items() if k == "agreement"}
        return cls(n_classes=int(d["n_classes"]), class_names=d.get("class_names"), window=tuple(d["window"]),
                   threshold=float(d["threshold"]), source=d.get("source", ""), extra=extra, **arrays)


def _analyse(steps: np.ndarray, predictions: np.ndarray, labels: np.ndarray, n_classes: int,
             class_names: Sequence[str] | None, window: tuple[int, int] | None, threshold: float,
             source: str, what: str) -> DanceAnalysis:
    """The one computation behind every source (see CONCEPTS.md, "Label dancing")."""
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
    See CONCEPTS.md, "Label dancing". K is the largest of the source's K, ``n_classes``,
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
