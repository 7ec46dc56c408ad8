"""Figures of the comparison report, drawn from a comparison's arrays (PNG data URIs).

Same conventions as :mod:`auditor.report.figures`: plain arrays in, a data URI out, no
analysis computed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib import colors as mcolors

from auditor.report.figures import FONT, GREY, _annotate, _cmap, _figure, _side, _ticks, short, to_data_uri

__all__ = ["accuracy_change_chart", "change_heatmap", "REGRESSED_COLOR", "IMPROVED_COLOR",
           "MAX_CHART_CLASSES"]

REGRESSED_COLOR = "#b3261e"
IMPROVED_COLOR = "#1e7b34"
#: The accuracy-change chart shows at most this many classes (those whose accuracy fell most, then rose most).
MAX_CHART_CLASSES = 40


def accuracy_change_chart(labels: Sequence[str], change: np.ndarray, low: np.ndarray, high: np.ndarray,
                          status: Sequence[str], *, confidence: float = 0.95) -> str:
    """Per-class accuracy change with its interval, one row per class in the given order.

    ``status`` per row: "regressed", "improved" or anything else (drawn grey).
    """
    n = len(labels)
    change, low, high = (np.asarray(v, dtype=np.float64) * 100 for v in (change, low, high))
    fig = _figure(7.2, min(1.2 + 0.26 * n, 11.0))
    with matplotlib.rc_context(FONT):
        ax = fig.add_subplot()
        ys = np.arange(n)[::-1]
        for y, c, lo, hi, s in zip(ys, change, low, high, status):
            if not np.isfinite(c):
                continue
            color = REGRESSED_COLOR if s == "regressed" else IMPROVED_COLOR if s == "improved" else GREY
            ax.plot([lo, hi], [y, y], color=color, linewidth=2.2 if s in ("regressed", "improved") else 1.4,
                    solid_capstyle="butt")
            ax.plot([c], [y], marker="o", color=color, markersize=5)
        ax.axvline(0, color="#444444", linewidth=0.8)
        ax.set_yticks(ys, [short(s, 20) for s in labels])
        ax.set_xlabel(f"accuracy change, candidate − baseline (percentage points), {confidence:.0%} interval")
        ax.set_ylim(-0.7, n - 0.3)
        ax.grid(axis="x", color="#e4e7eb", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_title("per-class accuracy change (red: regressed, green: improved; significant after Holm)")
    return to_data_uri(fig)


def change_heatmap(matrix: np.ndarray, labels: Sequence[str], *, title: str, colorbar: str,
                   xlabel: str = "predicted class", ylabel: str = "true class", fmt: str = "+.0f",
                   blank_diagonal: bool = True) -> str:
    """A signed change (e.g. of the confusion matrix) on a diverging scale centred at 0; zeros unlabelled."""
    m = np.array(matrix, dtype=np.float64)
    if blank_diagonal:
        np.fill_diagonal(m, np.nan)
    finite = m[np.isfinite(m)]
    span = float(np.max(np.abs(finite))) if finite.size else 1.0
    span = span if span > 0 else 1.0
    norm = mcolors.Normalize(-span, span)
    cm = _cmap("RdBu_r")
    fig = _figure(_side(m.shape[1]) + 1.0, _side(m.shape[0]))
    with matplotlib.rc_context(FONT):
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
        _ticks(ax, list(labels), list(labels))
        if max(m.shape) <= 20:
            _annotate(ax, m, m, fmt, norm, cm, skip_zero=True)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax, shrink=0.85, label=colorbar)
    return to_data_uri(fig)
