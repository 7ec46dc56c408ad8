"""The :class:`Dataset`: labelled samples as named arrays, converted once and read-only."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from auditor.errors import DataError, OptionError

__all__ = ["Dataset", "stratified_indices"]


@dataclass(frozen=True, init=False)
class Dataset:
    """Labelled samples: one array per model input, integer labels, optional class names.

    Most models take one input, and most data sets hold one array ``x``; a text model
    takes several (token ids, attention mask, token type ids), and its data hold one
    array per input, named after the input (or as Hugging Face tokenizers name them).
    Arrays are converted on construction and marked read-only (views, so the caller's own
    arrays stay writeable).

    Parameters
    ----------
    x : ndarray of shape (N, ...), or mapping of str to ndarray
        The samples: one array (stored under the name ``"x"``, matched to the model's one
        data input), or arrays by input name, each with the sample axis first.
    y : array-like of shape (N,)
        Integer labels.
    class_names : sequence of str, optional
        Names in label order (``class_names[c]`` names label ``c``).
    source : str, default="array"
        Where the data came from (a path).
    texts : sequence of str, optional
        The raw text of each sample (text data), shown in reports.
    notes : sequence of str, optional
        What loading or checking did to the data (e.g. an attention mask filled with ones).

    Attributes
    ----------
    features : mapping of str to ndarray
        The arrays by name, C-contiguous, read-only. Numeric dtypes are kept;
        :func:`check_dataset` casts each to its model input's dtype.
    y : ndarray of shape (N,), int64
        Labels, read-only; class ids 0..K-1 once checked by :func:`check_dataset`.
    class_names : tuple of str or None
    source : str
    texts : tuple of str or None
    notes : tuple of str
    checked_for : str
        The :attr:`auditor.model.Model.signature` this data set was checked against
        (``""`` until :func:`check_dataset` returns it); analyses do not check again.

    Raises
    ------
    DataError
        An array is not numeric or has no sample axis, ``y`` is not one integer label per
        sample, the lengths differ, or there are no samples.

    Examples
    --------
    >>> import numpy as np
    >>> d = Dataset(np.zeros((4, 2), np.float32), [0, 1, 1, 0], class_names=("a", "b"))
    >>> len(d), d.class_counts(2).tolist(), d.y.dtype
    (4, [2, 2], dtype('int64'))
    >>> d.stratified(1).class_counts(2).tolist()
    [1, 1]
    >>> text = Dataset({"input_ids": np.ones((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64)}, [0, 1])
    >>> sorted(text.features), text.sample_shapes()["input_ids"]
    (['attention_mask', 'input_ids'], (5,))
    """

    UNNAMED: ClassVar[str] = "x"

    features: Mapping[str, np.ndarray]
    y: np.ndarray
    class_names: tuple[str, ...] | None
    source: str
    texts: tuple[str, ...] | None
    notes: tuple[str, ...]
    checked_for: str

    def __init__(self, x: ArrayLike | Mapping[str, ArrayLike], y: ArrayLike,
                 class_names: Sequence[str] | None = None, source: str = "array",
                 texts: Sequence[str] | None = None, notes: Sequence[str] = (), *, checked_for: str = "") -> None:
        source = str(source)
        where = "data" if source == "array" else f"'{source}'"
        arrays = dict(x) if isinstance(x, Mapping) else {self.UNNAMED: x}
        if not arrays:
            raise DataError(f"{where} holds no sample arrays; give x (or one array per model input) and y")
        labels = _check_labels(np.asarray(y), where)
        features = {}
        for name, value in arrays.items():
            label = "x" if len(arrays) == 1 and name == self.UNNAMED else f"array '{name}'"
            a = _check_samples(np.asarray(value), f"{where}: {label}")
            if len(a) != len(labels):
                raise DataError(f"{where}: {label} has {len(a)} samples but y has {len(labels)} labels; give one "
                                "label per sample")
            features[str(name)] = _read_only(a)
        if len(labels) == 0:
            raise DataError(f"{where}: the data set has no samples; give at least one labelled sample")
        if texts is not None and len(texts) != len(labels):
            raise DataError(f"{where}: {len(texts)} texts for {len(labels)} samples; give one text per sample")
        object.__setattr__(self, "features", MappingProxyType(features))
        object.__setattr__(self, "y", _read_only(labels))
        object.__setattr__(self, "class_names", None if class_names is None else tuple(str(n) for n in class_names))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "texts", None if texts is None else tuple(str(t) for t in texts))
        object.__setattr__(self, "notes", tuple(notes))
        object.__setattr__(self, "checked_for", checked_for)

    def __len__(self) -> int:
        return len(self.y)

    def __reduce__(self) -> tuple[Any, ...]:
        # features is a read-only mapping proxy, which pickle cannot copy: rebuild from a dict
        # (a distributed audit ships the data set to its workers).
        return (_restore, (dict(self.features), self.y, self.class_names, self.source, self.texts, self.notes,
                           self.checked_for))

    @property
    def x(self) -> np.ndarray:
        """The samples, when the data hold a single array (most image and tabular data)."""
        if len(self.features) != 1:
            raise DataError(f"the data hold {len(self.features)} arrays ({', '.join(self.features)}), not one x; "
                            "use .features")
        return next(iter(self.features.values()))

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each array's shape without the sample axis."""
        return {n: tuple(int(d) for d in a.shape[1:]) for n, a in self.features.items()}

    def class_counts(self, n_classes: int) -> np.ndarray:
        """Samples per class.

        Parameters
        ----------
        n_classes : int
            K, the number of classes of the model.

        Returns
        -------
        ndarray of shape (K,), int64
            ``counts[c] = |D_c|``; labels outside 0..K-1 are not counted.
        """
        inside = self.y[(self.y >= 0) & (self.y < n_classes)]
        return np.bincount(inside, minlength=n_classes).astype(np.int64)

    def take(self, indices: ArrayLike) -> dict[str, np.ndarray]:
        """The arrays of the samples at ``indices``, by name (fresh arrays)."""
        idx = np.asarray(indices)
        return {n: a[idx] for n, a in self.features.items()}

    def subset(self, indices: ArrayLike) -> Dataset:
        """The samples at ``indices`` (integer indices or a boolean mask), keeping names and source.

        Parameters
        ----------
        indices : array-like of int or bool

        Returns
        -------
        Dataset
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        texts = None if self.texts is None else [self.texts[int(i)] for i in idx]
        return Dataset(self.take(idx), self.y[idx], self.class_names, self.source, texts, self.notes,
                       checked_for=self.checked_for)

    def stratified(self, max_per_class: int, seed: int = 0) -> Dataset:
        """At most ``max_per_class`` samples of each class, in their original order.

        Parameters
        ----------
        max_per_class : int
            Classes with more samples are subsampled at random without replacement.
        seed : int, default=0
            Seed of the subsampling; the same seed gives the same samples.

        Returns
        -------
        Dataset
            ``self`` when no class has more than ``max_per_class`` samples.

        Raises
        ------
        OptionError
            ``max_per_class`` is below 1.
        """
        idx = stratified_indices(self.y, max_per_class, seed)
        return self if len(idx) == len(self) else self.subset(idx)

    def fingerprint(self) -> str:
        """SHA-256 of the samples (names, shapes, dtypes, bytes) and labels, for reproducibility.

        Returns
        -------
        str
            64 hex digits; equal data give equal fingerprints, whatever the source.
        """
        h = hashlib.sha256()
        for name in sorted(self.features):
            a = self.features[name]
            key = (a.shape, a.dtype.str) if len(self.features) == 1 else (name, a.shape, a.dtype.str)
            h.update(repr(key).encode())
            h.update(a.tobytes())
        h.update(self.y.tobytes())
        return h.hexdigest()

    def describe(self, n_classes: int) -> dict[str, Any]:
        """Source, fingerprint, sample count, per-class counts and shapes, for results.json."""
        return {"source": self.source, "sha256": self.fingerprint(), "n_samples": len(self),
                "counts": self.class_counts(n_classes).tolist(),
                "sample_shape": list(self.x.shape[1:]) if len(self.features) == 1 else None,
                "arrays": {n: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)} for n, a in self.features.items()},
                "texts": self.texts is not None, "notes": list(self.notes)}


def stratified_indices(y: np.ndarray, max_per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_per_class`` samples of each label, drawn without replacement.

    Deterministic: labels are taken in increasing order from one ``default_rng(seed)``, so
    the same labels and seed give the same indices whatever the sample order.

    Raises
    ------
    OptionError
        ``max_per_class`` is below 1.
    """
    if max_per_class < 1:
        raise OptionError(f"max per class must be >= 1, got {max_per_class}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _restore(features: dict[str, np.ndarray], y: np.ndarray, class_names: tuple[str, ...] | None, source: str,
             texts: tuple[str, ...] | None, notes: tuple[str, ...], checked_for: str) -> Dataset:
    """Unpickle a :class:`Dataset` (see ``Dataset.__reduce__``)."""
    return Dataset(features, y, class_names, source, texts, notes, checked_for=checked_for)


def _read_only(a: np.ndarray) -> np.ndarray:
    view = np.ascontiguousarray(a).view()
    view.flags.writeable = False
    return view


def _check_samples(x: np.ndarray, label: str) -> np.ndarray:
    if x.dtype.kind not in "fiub":
        raise DataError(f"{label} has dtype {x.dtype}; expected numbers (float features or images, or integer "
                        "token ids)")
    if x.ndim < 2:
        raise DataError(f"{label} has shape {x.shape}; expected (N, features...) with the sample axis first "
                        "(reshape a single feature column to (N, 1))")
    return x


def _check_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{where}: y has shape {y.shape}; expected one label per sample, shape (N,)")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            raise DataError(f"{where}: y holds {int((~whole).sum())} non-integer labels (first: "
                            f"{float(y[first]):g} at sample {first}); labels must be class ids 0..K-1")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: y has dtype {y.dtype}; labels must be integers 0..K-1 (load string labels "
                        "with load_data, which maps class names to ids)")
    return y.astype(np.int64)
