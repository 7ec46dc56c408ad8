"""Labelled audit data: load once, check against the model once, then trust.

See CONCEPTS.md, "Setting". :func:`load_data` reads ``.npz``, image folders and CSV;
:func:`check_dataset` checks a :class:`Dataset` against the model's input and converts it
in one pass. Analyses receive checked data and do not check again.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["Dataset", "load_data", "check_dataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` with integer labels ``y`` (and optional class names).

    Attributes
    ----------
    x : ndarray of shape (N, ...)
        Float samples, read-only.
    y : ndarray of shape (N,), int64
        Labels 0..K-1, read-only.
    class_names : tuple of str or None
    source : str
        Where the data came from (a path, or "array").

    Examples
    --------
    >>> import numpy as np
    >>> d = Dataset(np.zeros((4, 2), np.float32), [0, 1, 1, 0], class_names=("a", "b"))
    >>> len(d), d.class_counts(2).tolist()
    (4, [2, 2])
    """

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...] | None = None
    source: str = "array"

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        if x.dtype.kind not in "fiub":
            raise DataError(f"{self.source}: x has dtype {x.dtype}; expected numbers (float features or images)")
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        y = np.asarray(self.y)
        if y.ndim != 1:
            raise DataError(f"{self.source}: y has shape {y.shape}; expected one label per sample, shape (N,)")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise DataError(f"{self.source}: y holds non-integer values; labels must be class ids 0..K-1")
            y = y.astype(np.int64)
        elif y.dtype.kind in "iub":
            y = y.astype(np.int64)
        else:
            raise DataError(f"{self.source}: y has dtype {y.dtype}; labels must be integers 0..K-1 "
                            "(load string labels with load_data, which maps class names)")
        if x.ndim < 2:
            raise DataError(f"{self.source}: x has shape {x.shape}; expected (N, features...) with a sample axis first")
        if len(x) != len(y):
            raise DataError(f"{self.source}: x has {len(x)} samples but y has {len(y)} labels; they must match")
        if len(y) == 0:
            raise DataError(f"{self.source}: the data set is empty")
        # Views, so marking them read-only never touches the caller's arrays.
        x = np.ascontiguousarray(x).view()
        x.flags.writeable = False
        y = np.ascontiguousarray(y).view()
        y.flags.writeable = False
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self, n_classes: int) -> np.ndarray:
        """Samples per class, ``[K]`` int64."""
        return np.bincount(self.y[(self.y >= 0) & (self.y < n_classes)], minlength=n_classes).astype(np.int64)

    def subset(self, indices: Any) -> Dataset:
        idx = np.asarray(indices)
        return Dataset(self.x[idx], self.y[idx], self.class_names, self.source)

    def stratified(self, max_per_class: int, seed: int = 0) -> Dataset:
        """At most ``max_per_class`` samples of each class, chosen at random (seeded), original order kept."""
        rng = np.random.default_rng(seed)
        keep = []
        for c in np.unique(self.y):
            idx = np.flatnonzero(self.y == c)
            keep.append(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False))
        return self.subset(np.sort(np.concatenate(keep)))

    def fingerprint(self) -> str:
        """sha256 of the samples (shape, dtype, bytes) and labels, for reproducibility."""
        h = hashlib.sha256()
        h.update(str((self.x.shape, str(self.x.dtype))).encode())
        h.update(self.x.tobytes())
        h.update(self.y.tobytes())
        return h.hexdigest()


def _labels(raw: np.ndarray, class_names: Sequence[str] | None, source: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Integer labels from ints or class-name strings."""
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64), tuple(class_names) if class_names is not None else None
    if raw.dtype.kind == "f":
        return raw, tuple(class_names) if class_names is not None else None
    values = [str(v) for v in raw.tolist()]
    if all(v.lstrip("-").isdigit() for v in values):
        return np.array([int(v) for v in values], dtype=np.int64), tuple(class_names) if class_names else None
    names = list(class_names) if class_names is not None else sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(f"{source}: labels {unknown[:5]} are not among the class names {names[:10]}; give the full "
                        "class list or fix the labels")
    return np.array([index[v] for v in values], dtype=np.int64), tuple(names)


def load_data(path: str | os.PathLike[str], *, label_column: str = "label", image_size: tuple[int, int] | None = None,
              layout: str = "NCHW", scale: float = 1 / 255, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, grayscale: bool = False,
              class_names: Sequence[str] | None = None) -> Dataset:
    """Read labelled data from an ``.npz`` file, an image folder or a ``.csv`` file.

    Parameters
    ----------
    path : path-like
        ``.npz`` with ``x``, ``y`` and optional ``class_names`` (read without pickle); a
        directory with one subfolder of images per class; or a ``.csv`` with a header row.
    label_column : str, default="label"
        CSV: the column holding the labels (ids or class names); every other column is a
        numeric feature.
    image_size : (int, int), optional
        Images: resize to (height, width). Needed when the images differ in size.
    layout : {"NCHW", "NHWC"}, default="NCHW"
    scale : float, default=1/255
        Images: pixel values are multiplied by this, then normalised by mean/std.
    mean, std : sequence of float, optional
        Per-channel normalisation of images.
    grayscale : bool, default=False
        Images: read as one channel.
    class_names : sequence of str, optional
        Class names in label order (overrides the file's).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        Missing file, unknown format, missing keys or columns, unreadable images.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file '{p}' does not exist; check the path")
    if p.is_dir():
        return _load_images(p, image_size=image_size, layout=layout, scale=scale, mean=mean, std=std,
                            grayscale=grayscale, class_names=class_names)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p, class_names)
    if suffix == ".csv":
        return _load_csv(p, label_column, class_names)
    raise DataError(f"'{p}': unsupported data format '{suffix or p.name}'; give an .npz file (x, y), a .csv file "
                    "or a folder of images with one subfolder per class")


def _load_npz(p: Path, class_names: Sequence[str] | None) -> Dataset:
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"x", "y"} <= keys:
                raise DataError(f"'{p}' has arrays {sorted(keys)}; expected 'x' (samples) and 'y' (labels), "
                                "optionally 'class_names'")
            x, raw_y = f["x"], f["y"]
            names = class_names
            if names is None and "class_names" in keys:
                names = [str(n) for n in f["class_names"].tolist()]
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(f"'{p}' holds Python objects (pickled arrays); the auditor reads plain arrays only. "
                            "Save x as a float array and y as an int or string array") from err
        raise DataError(f"'{p}' is not a readable .npz file ({err})") from err
    except (OSError, EOFError) as err:
        raise DataError(f"'{p}' is not a readable .npz file ({err})") from err
    y, names_t = _labels(raw_y, names, str(p))
    return Dataset(x, y, names_t, str(p))


def _load_csv(p: Path, label_column: str, class_names: Sequence[str] | None) -> Dataset:
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"'{p}' is empty; expected a header row and one row per sample") from None
        if label_column not in header:
            raise DataError(f"'{p}' has no column '{label_column}' (columns: {', '.join(header[:20])}); "
                            "name the label column with --label-column")
        li = header.index(label_column)
        rows, labels = [], []
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"'{p}' line {n} has {len(row)} fields; the header has {len(header)}")
            labels.append(row[li].strip())
            try:
                rows.append([float(v) for i, v in enumerate(row) if i != li])
            except ValueError as err:
                raise DataError(f"'{p}' line {n}: a feature is not a number ({err}); every column but "
                                f"'{label_column}' must be numeric") from err
    if not rows:
        raise DataError(f"'{p}' has a header but no samples")
    y, names = _labels(np.array(labels), class_names, str(p))
    return Dataset(np.array(rows, dtype=np.float32), y, names, str(p))


def _load_images(root: Path, *, image_size: tuple[int, int] | None, layout: str, scale: float,
                 mean: Sequence[float] | None, std: Sequence[float] | None, grayscale: bool,
                 class_names: Sequence[str] | None) -> Dataset:
    from PIL import Image

    if layout not in ("NCHW", "NHWC"):
        raise DataError(f"unknown image layout {layout!r}; choose NCHW or NHWC")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not folders:
        raise DataError(f"'{root}' has no class subfolders; an image folder needs one subfolder of images per class")
    names = list(class_names) if class_names is not None else folders
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise DataError(f"'{root}': subfolders {unknown} are not among the class names")
    images, labels = [], []
    for name in folders:
        files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"'{root / name}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); remove the "
                            "empty class folder or add its images")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if grayscale else "RGB")
                    if image_size is not None:
                        im = im.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32)
            except OSError as err:
                raise DataError(f"cannot read image '{f}' ({err})") from err
            images.append(arr if arr.ndim == 3 else arr[:, :, None])
            labels.append(names.index(name))
    sizes = {a.shape for a in images}
    if len(sizes) > 1:
        raise DataError(f"'{root}': images have different sizes ({sorted(sizes)[:3]}...); pass --image-size HxW "
                        "to resize them")
    x = np.stack(images) * np.float32(scale)  # NHWC
    c = x.shape[-1]
    for label, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in (1, c):
            raise DataError(f"--{label} has {len(values)} values; the images have {c} channels")
    if mean is not None:
        x = x - np.asarray(mean, dtype=np.float32)
    if std is not None:
        x = x / np.asarray(std, dtype=np.float32)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return Dataset(np.ascontiguousarray(x, dtype=np.float32), np.array(labels), tuple(names), str(root))


def check_dataset(data: Dataset, *, input_shape: Sequence[int | None], input_dtype: Any, n_classes: int,
                  class_names: Sequence[str] | None = None, name: str = "data") -> Dataset:
    """Check ``data`` against the model's input and classes; cast to the input dtype once.

    Raises
    ------
    DataError
        Sample shape, label range, class names or non-finite values do not fit.
    """
    x = data.x
    expected = tuple(input_shape[1:])
    sample = tuple(x.shape[1:])
    if len(sample) != len(expected) or any(e is not None and e != s for e, s in zip(expected, sample)):
        want = tuple("?" if e is None else e for e in expected)
        hint = "reshape the data to the model's input"
        if len(sample) == 3 and len(expected) == 3 and (sample[2], sample[0], sample[1]) == tuple(
                s if e is None else e for s, e in zip((sample[2], sample[0], sample[1]), expected)):
            hint = "the data look NHWC and the model NCHW: load images with --layout NCHW or transpose x"
        elif len(sample) == 3 and len(expected) == 3 and (sample[1], sample[2], sample[0]) == tuple(
                s if e is None else e for s, e in zip((sample[1], sample[2], sample[0]), expected)):
            hint = "the data look NCHW and the model NHWC: load images with --layout NHWC or transpose x"
        raise DataError(f"{name} x has sample shape {sample}, model input expects {want} (batch axis excluded); "
                        f"{hint}")
    y = data.y
    bad = (y < 0) | (y >= n_classes)
    if np.any(bad):
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} has {int(bad.sum())} labels outside 0..{n_classes - 1} (first: {int(y[first])} at "
                        f"sample {first}); the model has {n_classes} classes")
    names = class_names if class_names is not None else data.class_names
    if names is not None and len(names) != n_classes:
        raise DataError(f"{name} names {len(names)} classes but the model has {n_classes}; give one name per class")
    finite = np.isfinite(x.reshape(len(x), -1))
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DataError(f"{name} x holds {int((~finite).sum())} non-finite values (NaN or inf), first in sample "
                        f"{int(rows[0])}; clean or drop those samples")
    dtype = np.dtype(input_dtype)
    if x.dtype != dtype:
        data = Dataset(x.astype(dtype), y, data.class_names, data.source)
    if names is not None and data.class_names is None:
        data = Dataset(data.x, y, tuple(names), data.source)
    return data
