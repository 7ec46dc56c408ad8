"""What the label-dancing section shows, from a :class:`~auditor.dancing.DanceAnalysis`.

The rankings are the analysis' own (:meth:`~auditor.dancing.DanceAnalysis.dancing_pairs`,
its dance rates); this module picks the classes to draw and formats the agreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from auditor.dancing import DanceAnalysis
from auditor.report import figures
from auditor.report.format import class_name, fmt_num
from auditor.report.sections import FOCUS_CLASSES, LARGE_K

__all__ = ["dance_context", "PIANO_ROLLS", "DANCING_PAIRS_SHOWN", "ROLL_ROWS_LARGE_K"]

#: Classes whose dancing notes are drawn as piano rolls.
PIANO_ROLLS = 4
#: Dancing pairs listed in the table.
DANCING_PAIRS_SHOWN = 10
#: Predicted classes drawn in a piano roll when K is large (the loudest notes).
ROLL_ROWS_LARGE_K = 15


def dance_context(dance: DanceAnalysis, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything the label-dancing templates show (figures included)."""
    k = dance.n_classes
    names = list(dance.class_names or class_names or [])
    names += [str(c) for c in range(len(names), k)]
    steps = dance.steps.astype(np.float64)
    rate = dance.dance_rate
    ranked = [int(c) for c in np.argsort(-np.nan_to_num(rate, nan=-1.0), kind="stable")]
    top = [c for c in ranked if np.isfinite(rate[c]) and rate[c] > 0][:PIANO_ROLLS]
    ctx: dict[str, Any] = {"n_classes": k, "n_records": len(steps), "source": dance.source,
                           "threshold": dance.threshold, "window": list(dance.window), "n_probe": len(dance.labels),
                           "first_step": steps[0], "last_step": steps[-1], "top": [names[c] for c in top]}
    ctx["rows"], ctx["rows_note"] = _rows(dance, names, ranked, top)
    ctx["curves_uri"] = figures.dance_rate_curves(steps[1:], dance.dance_curve, names, top,
                                                  window_start=steps[dance.window[0]])
    ctx.update(_pairs(dance, names))
    ctx["rolls"] = [_roll(dance, names, c, steps) for c in (top or ranked[:1])]
    ctx["agreement"] = None if dance.agreement is None else _agreement(dance)
    return ctx


def _rows(dance: DanceAnalysis, names: list[str], ranked: list[int], top: list[int]) -> tuple[list[dict[str, Any]],
                                                                                               str]:
    k = dance.n_classes
    rows = []
    for c in ranked if k > LARGE_K else range(k):
        members = dance.labels == c
        rows.append({"name": names[c], "dance_rate": float(dance.dance_rate[c]), "n_probe": int(members.sum()),
                     "flips": int(dance.flips[members].sum()), "forgetting": int(dance.forgetting[members].sum()),
                     "never_forgotten": int(dance.never_forgotten[c]), "top": c in top})
    if k > LARGE_K:
        rows = rows[: 2 * LARGE_K]
        return rows, f"The {len(rows)} of {k} classes that dance most, highest dance rate first."
    return rows, ""


def _pairs(dance: DanceAnalysis, names: list[str]) -> dict[str, Any]:
    m = dance.pair_flips
    pairs = dance.dancing_pairs(top=DANCING_PAIRS_SHOWN)
    rows = [{"a": names[a], "b": names[b], "flips": n, "a_to_b": int(m[a, b]), "b_to_a": int(m[b, a])}
            for a, b, n in pairs]
    sym = m + m.T
    k = dance.n_classes
    if k <= LARGE_K:
        return {"pairs": rows, "pairs_uri": figures.dancing_pair_heatmap(sym, names), "pairs_note": ""}
    focus: list[int] = []
    for a, b, _ in dance.dancing_pairs(top=k * k):
        for c in (a, b):
            if c not in focus and len(focus) < FOCUS_CLASSES:
                focus.append(c)
    focus = focus or list(range(min(FOCUS_CLASSES, k)))
    return {"pairs": rows, "pairs_uri": figures.dancing_pair_heatmap(sym[np.ix_(focus, focus)],
                                                                    [names[c] for c in focus]),
            "pairs_note": f"Showing {len(focus)} of {k} classes: those in the top dancing pairs (a {k}×{k} heatmap "
                          "would be unreadable)."}


def _roll(dance: DanceAnalysis, names: list[str], c: int, steps: np.ndarray) -> dict[str, Any]:
    notes = dance.notes[c]  # [T, K]
    if notes.shape[1] > LARGE_K:
        peak = np.nan_to_num(np.nanmax(np.where(np.isnan(notes), -1, notes), axis=0), nan=0.0)
        peak[c] = np.inf
        rows_k = [int(j) for j in np.argsort(-peak, kind="stable")[:ROLL_ROWS_LARGE_K] if peak[j] > 0]
        note = f"Showing the {len(rows_k)} of {notes.shape[1]} predicted classes with the loudest notes."
    else:
        rows_k, note = list(range(notes.shape[1])), ""
    where = {j: r for r, j in enumerate(rows_k)}
    dominant = np.array([where.get(int(d), -1) for d in dance.dominant[c]])
    uri = figures.piano_roll(steps, notes[:, rows_k], [names[j] for j in rows_k],
                             rows_k.index(c) if c in rows_k else None,
                             f"class dancing notes of {figures.short(class_name(names, c), 24)}", dominant)
    return {"name": names[c], "note": note, "uri": uri}


def _agreement(dance: DanceAnalysis) -> dict[str, Any]:
    agreement = dance.agreement
    assert agreement is not None
    rows = [(label, [fmt_num(part.spearman), fmt_num(part.top_k_overlap), fmt_num(part.n_pairs)])
            for label, part in (("interference pairs", agreement.interference),
                                ("confusion pairs (P)", agreement.confusion)) if part is not None]
    return {"top_k": agreement.top_k, "columns": ["Spearman", f"top-{agreement.top_k} overlap", "pairs compared"],
            "rows": rows}
