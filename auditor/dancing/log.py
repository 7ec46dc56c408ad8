"""The training-time log of label dancing: the recorder that writes it and the reader.

Log format (append-only JSON lines, flushed per record): a header line
``{"format": "auditor-label-dancing", "version": 1, "labels": [...], "n_classes": K,
"class_names": [...] | null, "every": n, "created": ..., "meta": {...}}`` followed by one
line per record ``{"step": int, "epoch": int | null, "pred": [int, ...]}``. A crash can
leave at most a partial last line, which the reader skips with a warning.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from auditor.data.dataset import stratified_indices
from auditor.errors import DataError, OptionError, ResultsError

__all__ = ["LabelDancingRecorder", "probe_set", "read_log", "to_numpy", "TruncatedLogWarning", "FORMAT", "VERSION"]


FORMAT = "auditor-label-dancing"
VERSION = 1


class TruncatedLogWarning(UserWarning):
    """The log's last record was cut short (a crash mid-write); it was skipped."""


def to_numpy(values: Any) -> np.ndarray:
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
    See docs/concepts.md, "Label dancing" (P). Deterministic: the same labels and seed give the
    same indices (numpy's ``default_rng(seed)``, classes in increasing order), the same
    choice as :meth:`auditor.data.Dataset.stratified`.

    Examples
    --------
    >>> probe_set([0, 0, 0, 1, 1, 2], max_per_class=2).tolist()
    [1, 2, 3, 4, 5]
    """
    y = to_numpy(labels).astype(np.int64).reshape(-1)
    return stratified_indices(y, max_per_class, seed)


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
    See docs/concepts.md, "Label dancing". The recorder keeps only the probe labels in memory;
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
        self.labels = to_numpy(labels).astype(np.int64).reshape(-1)
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
            old = _read_header(self.path, _read_lines(self.path)[0])
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
        values = to_numpy(logits_or_predictions)
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
        return np.asarray(pred)

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


def _read_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"'{path}' is not a readable label-dancing log ({err}); write logs with "
                           "auditor.LabelDancingRecorder") from err
    if not any(line.strip() for line in lines):
        raise ResultsError(f"label-dancing log '{path}' is empty; record a run with auditor.LabelDancingRecorder")
    return lines


def _read_header(path: Path, line: str) -> dict[str, Any]:
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
    lines = _read_lines(p)
    header = _read_header(p, lines[0])
    n = len(header["labels"])
    steps, epochs, preds = [], [], []
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
