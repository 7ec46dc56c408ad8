"""How the report writes numbers: significant digits, percentages, seconds, em dashes for NaN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["fmt_num", "fmt_pct", "fmt_points", "fmt_seconds", "class_name", "finite"]


def finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; NaN/None as an em dash."""
    if x is None or isinstance(x, str):
        return "—" if x is None else x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    if 1e3 <= abs(v) < 1e12 or (v.is_integer() and abs(v) < 1e12):
        return f"{v:,.0f}".replace("-", "−")
    if 1e-3 <= abs(v) < 1e3:
        return f"{v:.{digits}g}".replace("-", "−")
    return f"{v:.{max(digits - 1, 0)}e}".replace("-", "−")


def fmt_pct(x: Any, digits: int = 1) -> str:
    return f"{float(x) * 100:.{digits}f}%" if finite(x) else "—"


def fmt_points(x: Any, digits: int = 1) -> str:
    """A change of a proportion in signed percentage points ("−15.2 pts"); NaN as an em dash."""
    if not finite(x):
        return "—"
    v = float(x) * 100
    text = f"{v:+.{digits}f}"
    return f"{0:.{digits}f} pts" if float(text) == 0 else text.replace("-", "−") + " pts"


def fmt_seconds(x: Any) -> str:
    if not finite(x):
        return "—"
    v = float(x)
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s" if v < 120 else f"{v / 60:.1f} min"


def class_name(names: Sequence[str], c: int) -> str:
    return str(names[c]) if 0 <= c < len(names) else str(c)
