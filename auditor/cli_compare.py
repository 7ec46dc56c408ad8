"""The console summary of ``auditor compare``: headline numbers and rich tables on stdout."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .report.format import fmt_points

if TYPE_CHECKING:
    from rich.console import Console

    from .comparison import CompareResult

__all__ = ["print_comparison", "CLASS_ROWS"]

#: Classes listed when none changed significantly (the largest drops).
CLASS_ROWS = 5


def _classes_to_list(result: CompareResult) -> tuple[list[int], str]:
    significant = np.flatnonzero(result.classes.significant)
    if significant.size:
        order = significant[np.argsort(result.classes.accuracy_change[significant], kind="stable")]
        return [int(c) for c in order], (f"classes whose accuracy changed significantly (exact McNemar, Holm-corrected "
                                         f"p < {result.classes.alpha:g})")
    change = np.where(np.isnan(result.classes.accuracy_change), np.inf, result.classes.accuracy_change)
    order = np.argsort(change, kind="stable")[:CLASS_ROWS]
    return [int(c) for c in order if np.isfinite(change[c])], \
        "no class changed significantly; the largest accuracy drops"


def print_comparison(result: CompareResult, out: Console) -> None:
    """Overall accuracy of both, the significantly changed classes, the pairs that gained errors."""
    from rich.table import Table

    names, o, cl = result.class_names, result.overall, result.classes
    base = os.path.basename(str(result.baseline.get("path", "baseline")))
    cand = os.path.basename(str(result.candidate.get("path", "candidate")))
    out.print(f"{base} -> {cand} on {o.n_samples} samples: overall accuracy {o.accuracy_baseline:.1%} -> "
              f"{o.accuracy_candidate:.1%} ({fmt_points(o.accuracy_change)}, {cl.confidence:.0%} interval "
              f"{fmt_points(o.interval_low)} to {fmt_points(o.interval_high)}); top-1 agreement "
              f"{result.agreement.overall_top1:.1%}")
    classes, title = _classes_to_list(result)
    table = Table(title=title, title_justify="left")
    for column in ("class", "samples", "baseline", "candidate", "change", f"{cl.confidence:.0%} interval",
                   "p (Holm)", "status"):
        table.add_column(column, justify="left" if column in ("class", "status") else "right")
    for c in classes:
        status = "REGRESSED" if cl.regressed[c] else "improved" if cl.improved[c] else ""
        table.add_row(names[c], str(int(cl.count[c])), f"{cl.accuracy_baseline[c]:.1%}",
                      f"{cl.accuracy_candidate[c]:.1%}", fmt_points(cl.accuracy_change[c]),
                      f"{fmt_points(cl.interval_low[c])} to {fmt_points(cl.interval_high[c])}",
                      f"{cl.p_holm[c]:.3g}", status)
    out.print(table)
    gained = result.pairs_gained(5)
    if gained:
        pairs = Table(title="pairs that gained errors (pair confusion P = C[a,b] + C[b,a])", title_justify="left")
        for column in ("pair", "baseline", "candidate", "change"):
            pairs.add_column(column, justify="left" if column == "pair" else "right")
        for a, b, pb, pc, d in gained:
            pairs.add_row(f"{names[a]} / {names[b]}", str(pb), str(pc), f"+{d}")
        out.print(pairs)
    else:
        out.print("no pair of classes gained errors")
    if result.interference is not None:
        rose = result.interference.rose(3)
        out.print("interference rose most for: " + (", ".join(
            f"{names[a]} / {names[b]} ({pb:.3g} -> {pc:.3g})" for a, b, pb, pc, _ in rose) or "no pair"))
