"""Labelled audit data: load once, check against the model once, then trust.

See CONCEPTS.md, "Setting". :func:`load_data` reads ``.npz``, image folders and CSV;
:func:`check_dataset` checks a :class:`Dataset` against the model's input and converts it
in one pass. Analyses receive checked data and do not check again.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from .errors import DataError, OptionError

if TYPE_CHECKING:
    from .model import Model, ModelInput

__all__ = ["Dataset", "load_data", "check_dataset", "IMAGE_SUFFIXES", "LAYOUTS"]

#: File suffixes read as images in an image folder; other files are skipped.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
#: Axis orders :func:`load_data` can give image data.
LAYOUTS = ("NCHW", "NHWC")

_FORMATS = (
    "an .npz file (arrays x, y), a .csv file with a header row, "
    "or a folder with one subfolder of images per class"
)


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
        if max_per_class < 1:
            raise OptionError(f"max per class must be >= 1, got {max_per_class}")
        labels, counts = np.unique(self.y, return_counts=True)
        if counts.max() <= max_per_class:
            return self
        rng = np.random.default_rng(seed)
        keep = []
        for c, n in zip(labels, counts, strict=True):  # labels ascending: draws do not depend on sample order
            idx = np.flatnonzero(self.y == c)
            keep.append(idx if n <= max_per_class else rng.choice(idx, max_per_class, replace=False))
        return self.subset(np.sort(np.concatenate(keep)))

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


# ----------------------------------------------------------------------------- loading


def load_data(
    path: str | os.PathLike[str],
    *,
    label_column: str = "label",
    image_size: tuple[int, int] | None = None,
    layout: str = "NCHW",
    scale: float = 1 / 255,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    grayscale: bool = False,
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """Read labelled data from an ``.npz`` file, an image folder or a ``.csv`` file.

    Parameters
    ----------
    path : path-like
        An ``.npz`` file with arrays ``x``, ``y`` and optionally ``class_names`` (read
        without pickle); a directory with one subfolder of images per class; or a ``.csv``
        file with a header row.
    label_column : str, default="label"
        CSV: the column holding the labels; every other column is a numeric feature.
    image_size : (int, int), optional
        Images: resize every image to (height, width), bilinear. Needed when the images
        differ in size.
    layout : {"NCHW", "NHWC"}, default="NCHW"
        Images: the axis order of ``x``.
    scale : float, default=1/255
        Images: pixel values (0..255) are multiplied by this before normalisation.
    mean, std : sequence of float, optional
        Images: per-channel normalisation ``(x * scale - mean) / std``; one value, or one
        per channel.
    grayscale : bool, default=False
        Images: read as one channel (Pillow mode ``L``) instead of RGB.
    class_names : sequence of str, optional
        Class names in label order. They fix the ids of string labels and of image
        subfolders, and override names stored in the file.

    Returns
    -------
    Dataset
        ``x`` float32, ``y`` int64. String labels and image subfolders are mapped to ids in
        the order of ``class_names``, or else of the sorted names found.

    Raises
    ------
    DataError
        Missing path, unknown format, missing keys or columns, pickled arrays, unreadable
        or differently sized images, an empty class folder, labels not among the names.
    OptionError
        A bad ``layout``, ``image_size``, ``mean`` or ``std``.
    """
    if layout not in LAYOUTS:
        raise OptionError(f"unknown image layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file '{p}' does not exist; check the path")
    names = None if class_names is None else [str(n) for n in class_names]
    if names is not None and len(set(names)) != len(names):
        raise OptionError(f"class names {names} repeat a name; give each class a distinct name")
    if p.is_dir():
        return _load_images(
            p,
            image_size=image_size,
            layout=layout,
            scale=scale,
            mean=mean,
            std=std,
            grayscale=grayscale,
            class_names=names,
        )
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p, names)
    if suffix == ".csv":
        return _load_csv(p, label_column, names)
    raise DataError(f"'{p}': unsupported data format '{suffix or p.name}'; give {_FORMATS}")


def _as_text(values: np.ndarray) -> list[str]:
    """Strings from a unicode or bytes array."""
    if values.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in values.tolist()]
    return [str(v) for v in values.tolist()]


def _labels(
    raw: np.ndarray, class_names: list[str] | None, source: str
) -> tuple[np.ndarray, list[str] | None]:
    """Labels as ids: integers pass through, class-name strings map to their index."""
    if raw.dtype.kind in "iubf":
        return raw, class_names  # Dataset rejects non-integer floats
    if raw.dtype.kind not in "US":
        raise DataError(
            f"{source}: labels have dtype {raw.dtype}; expected integer class ids or class-name strings"
        )
    values = [v.strip() for v in _as_text(raw)]
    if class_names is not None and set(values) <= set(class_names):
        index = {n: i for i, n in enumerate(class_names)}
        return np.array([index[v] for v in values], dtype=np.int64), class_names
    numbers = _integers(values)
    if numbers is not None:  # "3" or "3.0": ids written as text (CSV)
        return numbers, class_names
    names = class_names if class_names is not None else sorted(set(values))
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise DataError(
            f"{source}: labels {unknown[:5]} are not among the class names {names[:10]}; give the full "
            "class list or fix the labels"
        )
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _integers(values: list[str]) -> np.ndarray | None:
    """The values as int64 if every one is a whole number, else None."""
    out = []
    for v in values:
        try:
            f = float(v)
        except ValueError:
            return None
        if not math.isfinite(f) or f != round(f):
            return None
        out.append(int(f))
    return np.array(out, dtype=np.int64)


def _load_npz(p: Path, class_names: list[str] | None) -> Dataset:
    try:
        archive = np.load(p, allow_pickle=False)
    except ValueError as err:  # numpy: "Cannot load file containing pickled data when allow_pickle=False"
        raise DataError(
            f"'{p}' holds pickled Python objects; the auditor reads plain arrays only: save with "
            "np.savez(path, x=float_array, y=int_or_str_array)"
        ) from err
    except (OSError, EOFError) as err:
        raise DataError(
            f"'{p}' is not a readable .npz file ({err}); save it with np.savez(path, x=..., y=...)"
        ) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"'{p}' holds a single array, not an .npz archive; save it with np.savez(path, x=..., y=...)"
        )
    with archive:
        keys = sorted(archive.files)
        if "x" not in keys or "y" not in keys:
            raise DataError(
                f"'{p}' has arrays {keys}; expected 'x' (samples) and 'y' (labels), optionally "
                "'class_names': save with np.savez(path, x=..., y=...)"
            )
        try:
            x, raw_y = archive["x"], archive["y"]
            stored = archive["class_names"] if "class_names" in keys else None
        except ValueError as err:  # "Object arrays cannot be loaded when allow_pickle=False"
            raise DataError(
                f"'{p}' holds object arrays (pickled Python objects); the auditor reads plain arrays "
                "only: save x as a float array and y as an int or str array"
            ) from err
        except (OSError, EOFError) as err:
            raise DataError(f"'{p}' is not a readable .npz file ({err}); save it with np.savez") from err
    names = class_names
    if names is None and stored is not None:
        names = [v.strip() for v in _as_text(np.atleast_1d(stored))]
    y, names = _labels(raw_y, names, f"'{p}'")
    return Dataset(x, y, None if names is None else tuple(names), str(p))


def _load_csv(p: Path, label_column: str, class_names: list[str] | None) -> Dataset:
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            table = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(
            f"'{p}' is not a readable CSV file ({err}); save it as UTF-8 text with a header row"
        ) from err
    if not table:
        raise DataError(f"'{p}' is empty; expected a header row and one row per sample")
    header = [h.strip() for h in table[0]]
    if label_column not in header:
        shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise DataError(
            f"'{p}' has no column '{label_column}' (columns: {shown}); name the label column with "
            "--label-column"
        )
    if len(header) < 2:
        raise DataError(
            f"'{p}' has only the label column '{label_column}'; expected numeric feature columns too"
        )
    li = header.index(label_column)
    rows, labels = [], []
    for n, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"'{p}' row {n} has {len(row)} fields but the header has {len(header)}; fix that row"
            )
        labels.append(row[li].strip())
        try:
            rows.append([float(v) for i, v in enumerate(row) if i != li])
        except ValueError as err:
            raise DataError(
                f"'{p}' row {n}: {err}; every column but '{label_column}' must be numeric"
            ) from err
    if not rows:
        raise DataError(f"'{p}' has a header but no samples; expected one row per sample")
    y, names = _labels(np.array(labels), class_names, f"'{p}'")
    return Dataset(np.array(rows, dtype=np.float32), y, None if names is None else tuple(names), str(p))


def _channel_values(values: Sequence[float] | None, label: str, channels: int) -> np.ndarray | None:
    """``mean``/``std`` as a float32 vector that broadcasts over the channel axis."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if len(arr) not in (1, channels):
        raise OptionError(
            f"--{label} has {len(arr)} values but the images have {channels} channel(s); give 1 or "
            f"{channels} values"
        )
    if label == "std" and not np.all(arr > 0):
        raise OptionError(f"--std must be positive, got {arr.tolist()}")
    return arr


def _load_images(
    root: Path,
    *,
    image_size: tuple[int, int] | None,
    layout: str,
    scale: float,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    grayscale: bool,
    class_names: list[str] | None,
) -> Dataset:
    from PIL import Image

    if image_size is not None:
        if len(image_size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in image_size):
            raise OptionError(f"image size must be two positive integers (height, width), got {image_size!r}")
    channels = 1 if grayscale else 3
    mean_v = _channel_values(mean, "mean", channels)
    std_v = _channel_values(std, "std", channels)
    # Hidden folders (.ipynb_checkpoints, .git) are not classes.
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(
            f"'{root}' has no class subfolders; an image folder needs one subfolder of images per class"
        )
    names = class_names if class_names is not None else folders
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise DataError(
            f"'{root}': subfolders {unknown} are not among the class names {names[:10]}; give every "
            "class name or remove those folders"
        )
    index = {n: i for i, n in enumerate(names)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    files_of: list[Path] = []
    for name in folders:
        files = sorted(
            f
            for f in (root / name).iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"'{root / name}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add its images "
                "or remove the empty class folder"
            )
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if grayscale else "RGB")
                    if image_size is not None:
                        im = im.resize((int(image_size[1]), int(image_size[0])), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32)
            except (OSError, ValueError) as err:
                raise DataError(f"cannot read image '{f}' ({err}); remove or replace it") from err
            images.append(arr.reshape(arr.shape[0], arr.shape[1], channels))
            labels.append(index[name])
            files_of.append(f)
    sizes = sorted({a.shape[:2] for a in images})
    if len(sizes) > 1:
        first = next(f for f, a in zip(files_of, images, strict=True) if a.shape[:2] == sizes[-1])
        raise DataError(
            f"'{root}': images differ in size ({len(sizes)} sizes (H, W), e.g. {sizes[0]} and "
            f"{sizes[-1]} in '{first.name}'); pass image_size (--image-size HxW) to resize them"
        )
    x = np.stack(images)  # (N, H, W, C)
    x *= np.float32(scale)
    if mean_v is not None:
        x -= mean_v
    if std_v is not None:
        x /= std_v
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return Dataset(
        np.ascontiguousarray(x, dtype=np.float32), np.array(labels, dtype=np.int64), tuple(names), str(root)
    )


# ----------------------------------------------------------------------------- checking


def _shape_text(shape: Sequence[int | None]) -> str:
    """``(1, 8, 8)``, with ``?`` for a dynamic dim."""
    parts = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _fits(sample: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """Whether a sample shape matches the model's (``None`` matches any size)."""
    return len(sample) == len(expected) and all(
        e is None or e == s for s, e in zip(sample, expected, strict=True)
    )


def _shape_hint(sample: tuple[int, ...], expected: tuple[int | None, ...]) -> str:
    """What to do about a sample shape the model does not take."""
    if len(sample) == 3 and len(expected) == 3:
        c, h, w = sample
        if _fits((h, w, c), expected):
            return "the data look NCHW and the model NHWC: load images with --layout NHWC or transpose x"
        if _fits((sample[2], sample[0], sample[1]), expected):
            return "the data look NHWC and the model NCHW: load images with --layout NCHW or transpose x"
    if all(e is not None for e in expected) and math.prod(sample) == math.prod(
        e for e in expected if e is not None
    ):
        dims = ", ".join(str(e) for e in expected)
        return f"it has as many values per sample: reshape x to (N, {dims})"
    return "reshape the data to the model's input"


#: The names Hugging Face tokenizers give the arrays of each input role; data arrays not
#: named after a model input are matched to it by these.
ROLE_ARRAY_NAMES = {"token_ids": "input_ids", "attention_mask": "attention_mask",
                    "token_type_ids": "token_type_ids", "position_ids": "position_ids"}


def check_dataset(data: Dataset, model: Model, *, class_names: Sequence[str] | None = None,
                  name: str = "data") -> Dataset:
    """Check ``data`` against the model's inputs and classes; convert it once.

    Parameters
    ----------
    data : Dataset
    model : Model
    class_names : sequence of str, optional
        Names to attach; they must be K names and agree with any names the data carry.
    name : str, default="data"
        What to call the data in messages ("data", "gradient data").

    Returns
    -------
    Dataset
        Arrays keyed by the model's input names, in input order, each cast to its input's
        dtype; ``checked_for`` set, so analyses receiving it do not check again. ``data``
        itself when it was already checked for this model.

    Raises
    ------
    DataError
        An input cannot be filled from the data, a sample shape does not fit, a label is
        outside 0..K-1, there are more or fewer names than classes, or the data hold NaN,
        inf or values the input type cannot hold.

    Notes
    -----
    Arrays fill the inputs by input name; else by the names Hugging Face tokenizers use
    for each input role (:data:`ROLE_ARRAY_NAMES`); a single unnamed array fills the
    primary input. An attention mask, token type ids or position ids the data lack are
    made as a Hugging Face model makes them when the argument is omitted (ones, zeros,
    ``0..T-1``), and the data's ``notes`` say so. Classes with no samples are allowed;
    they get NaN entries.
    """
    if data.checked_for == model.signature and class_names is None:
        return data
    features, notes = check_features(data.features, model, name=name)
    n_classes = model.n_classes
    y = data.y
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} has {int(bad.sum())} of {len(y)} labels outside 0..{n_classes - 1} (first: "
            f"{int(y[first])} at sample {first}); the model has {n_classes} classes, so labels must be "
            f"0..{n_classes - 1}")
    names = _class_names(data, class_names, n_classes, name)
    return Dataset(features, y, names, data.source, data.texts, (*data.notes, *notes),
                   checked_for=model.signature)


def _class_names(data: Dataset, given: Sequence[str] | None, n_classes: int, name: str) -> tuple[str, ...] | None:
    if data.class_names is not None and len(data.class_names) > n_classes:
        raise DataError(f"{name} names {len(data.class_names)} classes but the model has {n_classes}; give "
                        f"{n_classes} class names or use data with the model's classes")
    if given is None:
        return data.class_names
    names = tuple(str(n) for n in given)
    if len(names) != n_classes:
        raise DataError(f"{len(names)} class names given but the model has {n_classes} classes; give one name per "
                        "class, in label order")
    if data.class_names is not None:
        clash = [i for i, n in enumerate(data.class_names) if n != names[i]]
        if clash:
            i = clash[0]
            raise DataError(f"{name} calls class {i} '{data.class_names[i]}' but the class names given call it "
                            f"'{names[i]}'; make the label order agree")
    return names


def check_features(arrays: Mapping[str, np.ndarray], model: Model, *,
                   name: str = "data") -> tuple[dict[str, np.ndarray], list[str]]:
    """The model's inputs filled from ``arrays`` and converted; notes on what was filled.

    The unlabelled half of :func:`check_dataset` (also used to predict samples without
    labels). See its Notes for how arrays are matched to inputs.
    """
    matched = _match_inputs(arrays, model, name)
    n = len(next(iter(arrays.values())))
    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for inp in model.inputs:
        value = matched.get(inp.name)
        if value is None:
            value = _default(inp, matched, n)
            notes.append(f"input '{inp.name}' was not in the {name}: filled as a model fills an omitted "
                         f"{inp.role} ({_FILL_TEXT[inp.role]})")
        out[inp.name] = _convert(value, inp, name, model)
    _check_lengths(out, model, name)
    return out, notes


def _match_inputs(arrays: Mapping[str, np.ndarray], model: Model, name: str) -> dict[str, np.ndarray]:
    """Which array fills which input; fillable inputs may stay unmatched. Names the missing ones."""
    matched: dict[str, np.ndarray] = {}
    unused = dict(arrays)
    for inp in model.inputs:
        for key in (inp.name, ROLE_ARRAY_NAMES.get(inp.role)):
            if key is not None and key in unused:
                matched[inp.name] = unused.pop(key)
                break
    if model.input_name not in matched and len(arrays) == 1 and unused:
        matched[model.input_name] = unused.popitem()[1]
    missing = [i.name for i in model.inputs if i.name not in matched and i.role not in _FILLABLE]
    if missing:
        have = ", ".join(arrays) or "none"
        raise DataError(
            f"the model's input{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} cannot be "
            f"filled from the {name} (its arrays: {have}); give one array per model input, named after it "
            "(`auditor inspect MODEL` lists the inputs), e.g. np.savez(path, y=..., " +
            ", ".join(f"{m}=..." for m in missing) + ")")
    return matched


_FILL_TEXT = {"attention_mask": "ones", "token_type_ids": "zeros", "position_ids": "0..T-1"}
_FILLABLE = frozenset(_FILL_TEXT)


def _default(inp: ModelInput, matched: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """An omitted mask, token type or position input, shaped like the token ids."""
    like = next((a for a in matched.values() if a.ndim == len(inp.shape)), None)
    if like is not None:
        shape = like.shape
    elif all(d is not None for d in inp.sample_shape):
        shape = (n, *[int(d) for d in inp.sample_shape if d is not None])
    else:
        raise DataError(f"cannot make input '{inp.name}' ({inp.role}): no array in the data has its shape; "
                        f"give '{inp.name}' in the data")
    if inp.role == "attention_mask":
        return np.ones(shape, dtype=np.int64)
    if inp.role == "position_ids":
        return np.broadcast_to(np.arange(shape[-1], dtype=np.int64), shape)
    return np.zeros(shape, dtype=np.int64)


def _convert(value: np.ndarray, inp: ModelInput, name: str, model: Model) -> np.ndarray:
    """Check one array's sample shape and values against its input; cast to the input dtype."""
    sample = tuple(int(s) for s in value.shape[1:])
    expected = tuple(None if d is None else int(d) for d in inp.sample_shape)
    label = f"{name} x" if len(model.inputs) == 1 else f"{name} array for input '{inp.name}'"
    if not _fits(sample, expected):
        where = f"model input '{inp.name}'"
        raise DataError(f"{label} has sample shape {_shape_text(sample)}, {where} expects "
                        f"{_shape_text(expected)} (batch axis excluded); {_shape_hint(sample, expected)}")
    dtype = inp.dtype
    if value.dtype.kind == "f":
        finite = np.isfinite(value.reshape(len(value), -1))
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            raise DataError(f"{label} holds {int(finite.size - np.count_nonzero(finite))} non-finite values "
                            f"(NaN or inf) in {len(rows)} samples, first in sample {int(rows[0])}; clean or drop "
                            "those samples")
    if value.dtype == dtype:
        return value
    if dtype.kind == "f":
        with np.errstate(over="ignore"):  # overflow is reported below, as a DataError
            cast = value.astype(dtype)
        if not np.isfinite(cast).all():
            raise DataError(f"{label} overflows {dtype} (largest magnitude {float(np.abs(value).max()):.3g}); "
                            "scale the data to the model's input range")
        return cast
    if value.dtype.kind == "f" and not np.array_equal(value, np.round(value)):
        raise DataError(f"{label} holds non-integer values but input '{inp.name}' takes {dtype}; give integer "
                        f"{inp.role.replace('_', ' ')}")
    if dtype != np.bool_ and value.size:
        info = np.iinfo(dtype)
        low, high = value.min(), value.max()
        if low < info.min or high > info.max:
            raise DataError(f"{label} holds values {low}..{high} outside {dtype}'s range; check the data")
    return value.astype(dtype)


def _check_lengths(features: Mapping[str, np.ndarray], model: Model, name: str) -> None:
    """Token-level inputs of one sample must share their sequence length."""
    tokens = {i.name: features[i.name].shape[1:] for i in model.inputs if i.role != "features"}
    if len(set(tokens.values())) > 1:
        shown = ", ".join(f"{n} {_shape_text(s)}" for n, s in tokens.items())
        raise DataError(f"{name}: the token-level arrays differ in shape ({shown}); tokenise every input to the "
                        "same sequence length")
