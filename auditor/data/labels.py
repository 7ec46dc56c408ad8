"""Labels as class ids: integers pass through, class-name strings map to their index."""

from __future__ import annotations

import math

import numpy as np

from auditor.errors import DataError

__all__ = ["label_ids", "as_text"]


def as_text(values: np.ndarray) -> list[str]:
    """Strings from a unicode or bytes array."""
    if values.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in values.tolist()]
    return [str(v) for v in values.tolist()]


def label_ids(
    raw: np.ndarray, class_names: list[str] | None, source: str
) -> tuple[np.ndarray, list[str] | None]:
    """Labels as ids: integers pass through, class-name strings map to their index."""
    if raw.dtype.kind in "iubf":
        return raw, class_names  # Dataset rejects non-integer floats
    if raw.dtype.kind not in "US":
        raise DataError(
            f"{source}: labels have dtype {raw.dtype}; expected integer class ids or class-name strings"
        )
    values = [v.strip() for v in as_text(raw)]
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
