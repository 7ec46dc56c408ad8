"""Read labelled data from ``.npz`` files, image folders and ``.csv`` tables.

Text (CSV or JSON lines with a tokenizer) is read by :mod:`auditor.data.text`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from auditor.errors import DataError, OptionError

from .dataset import Dataset
from .labels import as_text, label_ids
from .text import TEXT_SUFFIXES, load_text, text_options

__all__ = ["load_data", "IMAGE_SUFFIXES", "LAYOUTS"]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
#: Axis orders :func:`load_data` can give image data.
LAYOUTS = ("NCHW", "NHWC")

_FORMATS = (
    "an .npz file (arrays x, y), a .csv file with a header row, a folder with one subfolder of images per "
    "class, or a .csv/.jsonl file of texts with --text-column and --tokenizer"
)


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
    text_column: str | Sequence[str] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    max_length: int = 128,
    padding: str = "longest",
) -> Dataset:
    """Read labelled data from an ``.npz`` file, an image folder, a ``.csv`` table or text.

    Parameters
    ----------
    path : path-like
        An ``.npz`` file with the samples (``x``, or one array per model input named after
        it), labels ``y`` and optionally ``class_names`` and ``texts`` (read without
        pickle); a directory with one subfolder of images per class; a ``.csv`` file with
        a header row; or, with ``text_column``, a ``.csv`` or ``.jsonl`` file of texts.
    label_column : str, default="label"
        CSV and text: the column holding the labels; in a numeric CSV every other column
        is a feature.
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
    text_column : str or sequence of str, optional
        Text: the column holding the text, or two columns for text pairs.
    tokenizer : path-like, optional
        Text: the model's ``tokenizer.json`` (Hugging Face ``tokenizers``).
    max_length : int, default=128
        Text: longer texts are truncated to this many tokens.
    padding : {"longest", "max_length"}, default="longest"
        Text: pad to the longest text, or every text to ``max_length`` (for exports with
        a fixed sequence length).

    Returns
    -------
    Dataset
        ``y`` int64; images and numeric CSV give ``x`` float32, text gives ``input_ids``,
        ``attention_mask`` and ``token_type_ids`` (see :mod:`auditor.data.text`). String
        labels and image subfolders are mapped to ids in the order of ``class_names``, or
        else of the sorted names found.

    Raises
    ------
    DataError
        Missing path, unknown format, missing keys or columns, pickled arrays, unreadable
        or differently sized images, an empty class folder, labels not among the names.
    OptionError
        A bad ``layout``, ``image_size``, ``mean``, ``std`` or text option, or a missing
        tokenizer.
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
    text = text_options(text_column, tokenizer, max_length, padding)
    if text is not None:
        if suffix not in TEXT_SUFFIXES:
            raise DataError(f"'{p}': text is read from {', '.join(sorted(TEXT_SUFFIXES))} files, not '{suffix}'")
        return load_text(p, text, label_column=label_column, class_names=names)
    if suffix in (".jsonl", ".ndjson"):
        raise OptionError(f"'{p}' is JSON lines: name its text column with --text-column and give --tokenizer")
    if suffix == ".npz":
        return _load_npz(p, names)
    if suffix == ".csv":
        return _load_csv(p, label_column, names)
    raise DataError(f"'{p}': unsupported data format '{suffix or p.name}'; give {_FORMATS}")


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
        samples = [k for k in keys if k not in _NPZ_RESERVED]
        if "y" not in keys or not samples:
            raise DataError(
                f"'{p}' has arrays {keys}; expected the samples ('x', or one array per model input named "
                "after it) and 'y' (labels), optionally 'class_names' and 'texts': save with "
                "np.savez(path, x=..., y=...)"
            )
        try:
            arrays = {k: archive[k] for k in samples}
            raw_y = archive["y"]
            stored = archive["class_names"] if "class_names" in keys else None
            texts = as_text(archive["texts"]) if "texts" in keys else None
        except ValueError as err:  # "Object arrays cannot be loaded when allow_pickle=False"
            raise DataError(
                f"'{p}' holds object arrays (pickled Python objects); the auditor reads plain arrays "
                "only: save x as a float array and y as an int or str array"
            ) from err
        except (OSError, EOFError) as err:
            raise DataError(f"'{p}' is not a readable .npz file ({err}); save it with np.savez") from err
    names = class_names
    if names is None and stored is not None:
        names = [v.strip() for v in as_text(np.atleast_1d(stored))]
    y, names = label_ids(raw_y, names, f"'{p}'")
    return Dataset(arrays, y, None if names is None else tuple(names), str(p), texts)


#: Arrays of an .npz file that are not samples.
_NPZ_RESERVED = frozenset({"y", "class_names", "texts"})


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
    y, names = label_ids(np.array(labels), class_names, f"'{p}'")
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
                with Image.open(f) as opened:
                    im = opened.convert("L" if grayscale else "RGB")
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
