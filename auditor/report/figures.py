"""Figures of the HTML report, drawn from result arrays and returned as PNG data URIs.

Every function takes plain arrays and returns ``"data:image/png;base64,..."``; nothing
here computes an analysis. Figures are built on :class:`matplotlib.figure.Figure` with
the Agg canvas directly (no pyplot, no global state, no GUI), saved at :data:`DPI`
without the PNG "Software" text chunk, so the report holds no network address. NaN
cells of a heatmap stay blank.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "DPI", "to_data_uri", "short", "class_color", "heatmap", "confusion_heatmap", "interference_heatmaps",
    "pareto_chart", "cct_panels", "interference_model_figure", "dance_rate_curves", "dancing_pair_heatmap",
    "piano_roll",
]

DPI = 110
EGO_COLOR = "#d62728"
A_COLOR = "#1f77b4"
B_COLOR = "#ff7f0e"
GREY = "#b0b0b0"
#: tab10 without red (kept for ego curves) plus dark tab20b tones: readable as text on white
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
                "#a68a00", "#393b79", "#637939", "#7b4173", "#8c6d31")
# matplotlib types rc keys as literals; these are known-good
FONT: Any = {"font.size": 8.5, "axes.titlesize": 9.5, "axes.labelsize": 8.5, "xtick.labelsize": 7.5,
             "ytick.labelsize": 7.5, "legend.fontsize": 7.5}


def short(name: object, width: int = 16) -> str:
    """A class name cut to ``width`` characters (tick labels stay readable)."""
    text = str(name)
    return text if len(text) <= width else text[: width - 1] + "…"


def class_color(c: int) -> str:
    """One colour per class id, the same in every panel."""
    return CLASS_COLORS[int(c) % len(CLASS_COLORS)]


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI (no metadata chunk naming matplotlib's web site)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # a class name in a script DejaVu Sans lacks draws as boxes; that must not stop the report
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(image: np.ndarray) -> str:
    """A uint8 thumbnail ((H, W) or (H, W, 3)) as a PNG data URI, pixels as they are (the page scales it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cmap(name: str) -> mcolors.Colormap:
    return matplotlib.colormaps[name].with_extremes(bad="white")


def _side(n: int) -> float:
    return float(min(max(3.2, 0.3 * n + 2.0), 8.5))


def _ticks(ax: Any, labels_x: Sequence[str], labels_y: Sequence[str]) -> None:
    n_x, n_y = len(labels_x), len(labels_y)
    size = 7.5 if max(n_x, n_y) <= 20 else 6.5
    ax.set_xticks(range(n_x), [short(s) for s in labels_x], rotation=60 if n_x > 4 else 0,
                  ha="right" if n_x > 4 else "center", rotation_mode="anchor", fontsize=size)
    ax.set_yticks(range(n_y), [short(s) for s in labels_y], fontsize=size)
    ax.tick_params(length=2)


def _annotate(ax: Any, values: np.ndarray, shown: np.ndarray, fmt: str, norm: mcolors.Normalize,
              cmap: mcolors.Colormap, skip_zero: bool = False) -> None:
    for (i, j), v in np.ndenumerate(values):
        if not np.isfinite(v) or (skip_zero and v == 0):
            continue
        r, g, b, _ = cmap(norm(shown[i, j])) if np.isfinite(shown[i, j]) else (1, 1, 1, 1)
        light = 0.299 * r + 0.587 * g + 0.114 * b > 0.55
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=6.5,
                color="black" if light else "white")


def _norm(m: np.ndarray, vmin: float | None, vmax: float | None) -> mcolors.Normalize:
    finite = m[np.isfinite(m)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return mcolors.Normalize(lo, hi)


def heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str] | None = None, *,
            title: str = "", cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
            colorbar: str = "", xlabel: str = "", ylabel: str = "", annotate: bool | None = None,
            fmt: str = ".2f") -> str:
    """One heatmap; NaN cells blank; values written in the cells when there are few."""
    m = np.asarray(matrix, dtype=np.float64)
    cols = list(row_labels if col_labels is None else col_labels)
    fig = _figure(_side(m.shape[1]) + 1.0, _side(m.shape[0]))
    with matplotlib.rc_context(FONT):
        ax = fig.add_subplot()
        norm = _norm(m, vmin, vmax)
        cm = _cmap(cmap)
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
        _ticks(ax, cols, list(row_labels))
        if annotate is None:
            annotate = max(m.shape) <= 12
        if annotate:
            _annotate(ax, m, m, fmt, norm, cm)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax, shrink=0.85, label=colorbar)
    return to_data_uri(fig)


def confusion_heatmap(confusion: np.ndarray, labels: Sequence[str], *, row_totals: np.ndarray | None = None,
                      title: str = "confusion matrix") -> str:
    """Counts (rows true, columns predicted), coloured by the row share so rare classes show too.

    ``row_totals``: samples per true class when ``confusion`` is a block of a larger matrix.
    """
    c = np.asarray(confusion, dtype=np.float64)
    totals = c.sum(axis=1) if row_totals is None else np.asarray(row_totals, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = c / totals[:, None]
    fig = _figure(_side(c.shape[1]) + 1.0, _side(c.shape[0]))
    with matplotlib.rc_context(FONT):
        ax = fig.add_subplot()
        norm = mcolors.PowerNorm(0.5, 0.0, 1.0)  # square-root scale: small error shares still show
        cm = _cmap("Blues")
        im = ax.imshow(np.ma.masked_invalid(share), cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
        _ticks(ax, labels, labels)
        if max(c.shape) <= 20:
            _annotate(ax, c, share, ".0f", norm, cm, skip_zero=True)
        ax.set_title(title)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        fig.colorbar(im, ax=ax, shrink=0.85, label="share of the true class's samples (square-root scale)")
    return to_data_uri(fig)


def interference_heatmaps(first_order: np.ndarray, finite: np.ndarray, labels: Sequence[str],
                          marked: Sequence[bool] | None = None) -> str:
    """I1 and I side by side on one diverging colour scale centred at 0 (diagonal blank).

    Rows flagged in ``marked`` (ill-conditioned: tiny ego loss) get a "†" before their
    label, and the colour scale is set by the other rows so that they do not wash it out.
    """
    mats = [np.array(first_order, dtype=np.float64), np.array(finite, dtype=np.float64)]
    for m in mats:
        np.fill_diagonal(m, np.nan)
    flags = np.zeros(len(labels), dtype=bool) if marked is None else np.asarray(marked, dtype=bool)
    scaled = [m[~flags] if (~flags).any() else m for m in mats]
    both = np.concatenate([m[np.isfinite(m)] for m in scaled])
    span = float(np.max(np.abs(both))) if both.size else 1.0
    span = span if span > 0 else 1.0
    norm = mcolors.Normalize(-span, span)
    cm = _cmap("RdBu_r")
    n = len(labels)
    side = min(_side(n), 4.4)  # two panels must fit the page width (about 10 in at DPI) unscaled
    fig = _figure(2 * side + 1.4, side + 0.9)
    with matplotlib.rc_context(FONT):
        axes = fig.subplots(1, 2)
        im = None
        rows = [f"† {s}" if f else s for s, f in zip(labels, flags)]
        for ax, m, t in zip(axes, mats, ("first-order interference I1[c, c′]", "finite-step interference I[c, c′]")):
            im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
            _ticks(ax, labels, rows)
            if n <= 10:
                _annotate(ax, m, m, ".2f", norm, cm)
            ax.set_title(t)
            ax.set_xlabel("c′: class that pays")
            ax.set_ylabel("c: ego class (helped)")
        assert im is not None  # two panels drawn
        fig.colorbar(im, ax=list(axes), shrink=0.85, label="loss c′ gains per unit c sheds")
    return to_data_uri(fig)


def pareto_chart(pair_counts: Sequence[int], pair_labels: Sequence[str], cumulative_share: np.ndarray,
                 marks: Sequence[tuple[str, int, float]], *, max_bars: int = 25) -> str:
    """Left: pair confusion P of the most confused pairs. Right: the cumulative error share of all pairs.

    ``marks``: ``(label, number of pairs, share)`` for the top 1/3/5/10% of pairs, marked on
    the cumulative curve.
    """
    cum = np.asarray(cumulative_share, dtype=np.float64)
    n_bars = min(len(pair_counts), max_bars)
    fig = _figure(9.6, 3.9)
    with matplotlib.rc_context(FONT):
        if n_bars == 0:
            ax = fig.add_subplot()
            ax.text(0.5, 0.5, "no errors: every audit sample is classified correctly", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            return to_data_uri(fig)
        ax, ax2 = fig.subplots(1, 2, width_ratios=(1.7, 1))
        x = np.arange(1, n_bars + 1)
        ax.bar(x, list(pair_counts[:n_bars]), color="#9ecae1", edgecolor="#4a90c2", linewidth=0.5)
        ax.set_xticks(x, [short(s, 30) for s in pair_labels[:n_bars]], rotation=60, ha="right",
                      rotation_mode="anchor", fontsize=6.5 if n_bars > 12 else 7.5)
        ax.set_ylabel("pair confusion P (errors)")
        ax.set_xlim(0.4, n_bars + 0.6)
        ax.set_title("most confused pairs" if len(pair_counts) <= n_bars
                     else f"the {n_bars} most confused of {len(pair_counts)} confused pairs")
        ax.spines[["top", "right"]].set_visible(False)
        xs = np.arange(1, len(cum) + 1)
        ax2.plot(xs, cum, color="#333333", linewidth=1.4, marker="o" if len(cum) <= 40 else None, markersize=2.5)
        ax2.set_ylim(0, 1.05)
        ax2.set_xlim(0, max(len(cum), 1) * 1.02 + 0.5)
        ax2.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        ax2.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, nbins=6))
        ax2.set_xlabel("number of pairs, most confused first")
        ax2.set_ylabel("cumulative share of all errors")
        ax2.set_title("error share")
        ax2.spines[["top", "right"]].set_visible(False)
        seen: dict[int, list[str]] = {}
        for label, n_pairs, share in marks:
            if np.isfinite(share) and n_pairs >= 1:
                seen.setdefault(min(n_pairs, len(cum)), []).append(label)
        for rank, (n_pairs, labels) in enumerate(sorted(seen.items())):
            share = float(cum[n_pairs - 1])
            ax2.plot(n_pairs, share, marker="o", markersize=5, color="#d62728", linestyle="none", zorder=4)
            ax2.annotate(f"{', '.join(labels)} → {share:.0%}", (n_pairs, share), xytext=(8, -12 - 10 * rank),
                         textcoords="offset points", fontsize=7, color="#d62728",
                         arrowprops={"arrowstyle": "-", "color": "#d62728", "linewidth": 0.5})
    return to_data_uri(fig)


def _spread(values: list[float], gap: float) -> list[float]:
    """Label heights moved apart by at least ``gap``, keeping their order (end labels must not overlap)."""
    if not values:
        return []
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [values[i] for i in order]
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    shift = max(out[-1] - max(values), 0.0) / 2  # centre the stack on the curve ends
    result = [0.0] * len(values)
    for rank, i in enumerate(order):
        result[i] = out[rank] - shift
    return result


def cct_panels(panels: Sequence[dict[str, Any]], *, ncols: int = 3) -> str:
    """Small multiples of the cross-class test: one panel per ego class.

    Each panel dict: ``title``, ``steps`` (A,), ``ego`` (A,) the ego curve, ``others`` a
    list of ``(label or None, class id, curve)`` (labelled ones are the most hurt), and
    ``alpha_s``.
    """
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _figure(3.4 * ncols + 0.4, 2.6 * nrows + 0.4)
    with matplotlib.rc_context(FONT):
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, p in zip(axes, panels):
            steps = np.asarray(p["steps"], dtype=np.float64)
            for label, _, curve in p["others"]:
                if label is None:
                    ax.plot(steps, curve, color=GREY, linewidth=0.7, alpha=0.8, zorder=1)
            ends = []
            for label, c, curve in p["others"]:
                if label is not None:
                    ax.plot(steps, curve, color=class_color(c), linewidth=1.3, zorder=2)
                    last = np.flatnonzero(np.isfinite(curve))
                    if len(last):
                        ends.append((label, c, float(steps[last[-1]]), float(curve[last[-1]])))
            ax.plot(steps, p["ego"], color=EGO_COLOR, linewidth=2.4, zorder=3)
            ax.axvline(0, color="black", linewidth=0.6, zorder=0)
            if p.get("alpha_s") is not None and np.isfinite(p["alpha_s"]):
                ax.axvline(p["alpha_s"], color=EGO_COLOR, linestyle=":", linewidth=0.9, zorder=0)
            ax.set_title(short(p["title"], 34))
            ax.set_xlabel("α (step along the ego direction)")
            ax.set_ylabel("class loss L_c′")
            ax.spines[["top", "right"]].set_visible(False)
            lo, hi = float(steps.min()), float(steps.max())
            width = hi - lo if hi > lo else 1.0
            ax.set_xlim(lo, hi + 0.32 * width)  # room on the right for the end labels
            y0, y1 = ax.get_ylim()
            gap = 0.08 * (y1 - y0)
            heights = _spread([e[3] for e in ends], gap)
            if heights and max(heights) > y1 - gap / 2:  # keep the stack inside the panel
                excess = max(heights) - (y1 - gap / 2)
                heights = [h - excess for h in heights]
            for (label, c, x, y), yl in zip(ends, heights):
                ax.annotate(short(label, 12), (x, y), xytext=(x + 0.04 * width, yl), textcoords="data",
                            fontsize=6.8, color=class_color(c), va="center", annotation_clip=False,
                            arrowprops={"arrowstyle": "-", "color": class_color(c), "linewidth": 0.5,
                                        "shrinkA": 0, "shrinkB": 1})
        for ax in axes[n:]:
            ax.set_axis_off()
        handles = [Line2D([], [], color=EGO_COLOR, linewidth=2.4, label="ego class (the step helps it)"),
                   Line2D([], [], color=CLASS_COLORS[0], linewidth=1.3,
                          label="most hurt classes (labelled; one colour per class)"),
                   Line2D([], [], color=GREY, linewidth=0.7, label="other classes"),
                   Line2D([], [], color=EGO_COLOR, linestyle=":", linewidth=0.9, label="α_s")]
        fig.legend(handles=handles, loc="outside upper center", ncols=4, frameon=False)
    return to_data_uri(fig)


def interference_model_figure(model: dict[str, Any]) -> str:
    """Overlaid contours of L_a and L_b (left) and the total loss L (right) on the pair's plane.

    ``model``: ``s``, ``t`` (in units of r), ``loss_a``, ``loss_b``, ``total`` ([n, m], NaN where
    not evaluated), ``minimum_a``, ``minimum_b`` (``(s, t, loss)`` of each class's minimum, s and t
    in units of r), ``name_a``, ``name_b``, ``one_dimensional``, ``xlabel``, ``ylabel``.
    """
    s, t = np.asarray(model["s"], float), np.asarray(model["t"], float)
    la, lb, tot = (np.asarray(model[k], float) for k in ("loss_a", "loss_b", "total"))
    ma, mb = model["minimum_a"], model["minimum_b"]
    na, nb = short(model["name_a"], 20), short(model["name_b"], 20)
    star: dict[str, Any] = {"marker": "*", "markersize": 14, "markeredgecolor": "black", "markeredgewidth": 0.6,
            "linestyle": "none", "zorder": 6, "clip_on": False}
    if model["one_dimensional"] or len(t) < 2:
        fig = _figure(6.4, 3.3)
        with matplotlib.rc_context(FONT):
            ax = fig.add_subplot()
            for z, color, label in ((la, A_COLOR, f"L_a ({na})"), (lb, B_COLOR, f"L_b ({nb})")):
                ok = np.isfinite(z[:, 0])
                ax.plot(s[ok], z[ok, 0], color=color, linewidth=1.8, label=label)
            ok = np.isfinite(tot[:, 0])
            ax.plot(s[ok], tot[ok, 0], color="#555555", linewidth=1.0, linestyle="--", label="total loss L")
            ax.plot(ma[0], ma[2], color=A_COLOR, **star)
            ax.plot(mb[0], mb[2], color=B_COLOR, **star)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.annotate("θ*", (0, 1), xycoords=("data", "axes fraction"), xytext=(3, -10),
                        textcoords="offset points")
            ax.set_xlabel(model["xlabel"])
            ax.set_ylabel("loss")
            ax.legend(frameon=False)
            ax.spines[["top", "right"]].set_visible(False)
        return to_data_uri(fig)
    fig = _figure(8.8, 4.1)
    with matplotlib.rc_context(FONT):
        ax, ax2 = fig.subplots(1, 2)
        grid_s, grid_t = np.meshgrid(s, t, indexing="ij")
        for z, cmap in ((la, "Blues"), (lb, "Oranges")):
            if np.isfinite(z).sum() >= 4 and np.nanmax(z) > np.nanmin(z):
                levels = np.linspace(np.nanmin(z), np.nanpercentile(z, 95), 9)
                if levels[-1] > levels[0]:
                    ax.contour(grid_s, grid_t, np.ma.masked_invalid(z), levels=levels, cmap=cmap, linewidths=1.1,
                               vmin=levels[0] - 0.6 * (levels[-1] - levels[0]), vmax=levels[-1])
        cf = None
        if np.isfinite(tot).sum() >= 4 and np.nanmax(tot) > np.nanmin(tot):
            levels = np.linspace(np.nanmin(tot), np.nanpercentile(tot, 95), 12)
            if levels[-1] > levels[0]:
                cf = ax2.contourf(grid_s, grid_t, np.ma.masked_invalid(tot), levels=levels, cmap="viridis",
                                  extend="max")
        for a in (ax, ax2):
            a.plot(0, 0, marker="P", markersize=9, color="black", markeredgecolor="white", linestyle="none",
                   zorder=5)
            a.plot(ma[0], ma[1], color=A_COLOR, **star)
            a.plot(mb[0], mb[1], color=B_COLOR, **star)
            a.set_xlabel(model["xlabel"])
            a.set_ylabel(model["ylabel"])
            a.set_xlim(s.min(), s.max())
            a.set_ylim(t.min(), t.max())
            a.set_aspect("equal")
        ax.set_title(f"contours of L_a ({na}) and L_b ({nb})")
        ax2.set_title("total loss L (all classes)")
        if cf is not None:
            fig.colorbar(cf, ax=ax2, shrink=0.85, label="L", format="%.3g")
        handles = [Line2D([], [], color=A_COLOR, label=f"L_a: {na}"), Line2D([], [], color=B_COLOR, label=f"L_b: {nb}"),
                   Line2D([], [], marker="P", color="black", linestyle="none", label="θ* (exported weights)"),
                   Line2D([], [], marker="*", color=A_COLOR, markeredgecolor="black", markersize=10,
                          linestyle="none", label="minimum of L_a"),
                   Line2D([], [], marker="*", color=B_COLOR, markeredgecolor="black", markersize=10,
                          linestyle="none", label="minimum of L_b")]
        fig.legend(handles=handles, loc="outside lower center", ncols=5, frameon=False)
    return to_data_uri(fig)


def dance_rate_curves(x: np.ndarray, curves: np.ndarray, labels: Sequence[str], highlight: Sequence[int], *,
                      window_start: float | None = None, max_background: int = 200) -> str:
    """Per-transition dance-rate curve of every class; the top dancing classes highlighted."""
    curves = np.asarray(curves, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    fig = _figure(7.6, 3.4)
    with matplotlib.rc_context(FONT):
        ax = fig.add_subplot()
        hl = [int(c) for c in highlight]
        background = [c for c in range(curves.shape[0]) if c not in hl][:max_background]
        for c in background:
            ax.plot(x, curves[c], color=GREY, linewidth=0.6, alpha=0.7, zorder=1)
        for c in hl:
            ax.plot(x, curves[c], color=class_color(c), linewidth=1.7, zorder=2, label=short(labels[c], 20))
        if window_start is not None and len(x):
            ax.axvspan(window_start, float(np.max(x)), color="#eeeeee", zorder=0,
                       label="dance-rate window")
        ax.set_xlabel("training record (step or epoch)")
        ax.set_ylabel("share of the class's probe\nsamples that flip")
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)
        if hl or window_start is not None:
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_data_uri(fig)


def dancing_pair_heatmap(matrix: np.ndarray, labels: Sequence[str]) -> str:
    """``M + Mᵀ``: flips between each two predicted classes over the whole run (diagonal blank)."""
    m = np.array(matrix, dtype=np.float64)
    np.fill_diagonal(m, np.nan)
    return heatmap(m, labels, title="dancing pairs M + Mᵀ", cmap="magma_r", vmin=0.0,
                   colorbar="flips between the two classes", xlabel="predicted class", ylabel="predicted class",
                   fmt=".0f")


def piano_roll(x: np.ndarray, notes: np.ndarray, labels: Sequence[str], own: int | None, title: str,
               dominant: np.ndarray | None = None) -> str:
    """Class dancing notes as a piano roll: time on x, predicted class on y, intensity F_c[t, k].

    ``notes`` is ``[T, rows]`` for the classes named by ``labels``; ``own`` is the row of
    the class itself (its label in red), ``dominant`` the row of the dominant note per
    record (-1: none).
    """
    f = np.asarray(notes, dtype=np.float64).T  # [rows, T]
    x = np.asarray(x, dtype=np.float64)
    fig = _figure(7.6, min(1.4 + 0.22 * len(labels), 6.0))
    with matplotlib.rc_context(FONT):
        ax = fig.add_subplot()
        if len(x) > 1:
            edges = np.concatenate([[x[0] - (x[1] - x[0]) / 2], (x[:-1] + x[1:]) / 2,
                                    [x[-1] + (x[-1] - x[-2]) / 2]])
        else:
            edges = np.array([x[0] - 0.5, x[0] + 0.5]) if len(x) else np.array([0.0, 1.0])
        y_edges = np.arange(len(labels) + 1) - 0.5
        mesh = ax.pcolormesh(edges, y_edges, np.ma.masked_invalid(f), cmap=_cmap("Greys"), vmin=0.0, vmax=1.0,
                             shading="flat")
        if dominant is not None:
            d = np.asarray(dominant)
            keep = d >= 0
            if keep.any():
                ax.plot(x[keep], d[keep], linestyle="none", marker="o", markersize=2.5, color=EGO_COLOR,
                        label="dominant note")
                ax.legend(frameon=False, loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=7)
        ax.set_yticks(range(len(labels)), [short(s, 18) for s in labels])
        if own is not None:
            ax.get_yticklabels()[own].set_fontweight("bold")
            ax.get_yticklabels()[own].set_color(EGO_COLOR)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlabel("training record (step or epoch)")
        ax.set_ylabel("predicted class")
        ax.set_title(title, loc="right")
        fig.colorbar(mesh, ax=ax, shrink=0.9, label="F_c[t, k]")
    return to_data_uri(fig)
