"""Label dancing from a series of exported checkpoints instead of a training-time log."""

from __future__ import annotations

import glob as globmod
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.errors import DataError

if TYPE_CHECKING:
    pass

__all__ = ["CheckpointSeries", "predict_checkpoints", "freeze_array"]


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
            freeze_array(self, name, np.int64)

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


def freeze_array(obj: Any, name: str, dtype: Any = None) -> None:
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
    See docs/concepts.md, "Label dancing": the checkpoints' predictions play the role of the
    log's records. ``steps`` are the last number in each file name when every name has
    one and they are all different, else ``0..T-1``.
    """
    from auditor.data import Dataset, check_dataset
    from auditor.inference import predict_logits
    from auditor.model import load_model
    from auditor.progress import Progress

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
