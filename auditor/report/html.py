"""The self-contained HTML report: one file, inline CSS, figures as PNG data URIs.

The report draws only from an :class:`~auditor.audit.AuditResult` (so it can be rebuilt
from ``results.json``): this module picks what to show (the classes of the top pairs
when K is large, the most-hurt classes of each cross-class test) and formats numbers;
it computes no analysis. Templates live in ``reports/templates`` (installed as
``auditor/_templates``), one per section.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import AuditorError
from auditor.report import figures
from auditor.serialization import atomic_write_text

__all__ = ["render_report", "render_dance_report", "template_dir", "TemplateNotFoundError", "LARGE_K",
           "FOCUS_CLASSES", "MAX_CCT_PANELS", "SECTIONS"]

#: Above this many classes, heatmaps show only the classes of the top pairs.
LARGE_K = 30
#: How many classes such a heatmap shows at most.
FOCUS_CLASSES = 20
#: Cross-class-test panels at most (one per ego class).
MAX_CCT_PANELS = 12
#: Most-hurt classes labelled per CCT panel (drawn alone when K is large).
HURT_LABELLED = 3
HURT_LARGE_K = 5
#: Classes whose dancing notes are drawn as piano rolls.
PIANO_ROLLS = 4
#: Section ids, in page order.
SECTIONS = ("summary", "per-class", "errors", "interference", "cct", "interference-models", "label-dancing",
            "method")


class TemplateNotFoundError(AuditorError, FileNotFoundError):
    """The report templates are missing from both the source checkout and the installed package."""


def template_dir() -> Path:
    """The report templates: ``reports/templates`` in a source checkout, else ``auditor/_templates``.

    Raises
    ------
    TemplateNotFoundError
        When neither exists (a broken install).
    """
    package = Path(__file__).resolve().parent.parent
    candidates = [package.parent / "reports" / "templates", package / "_templates"]
    for c in candidates:
        if (c / "base.html.j2").is_file():
            return c
    raise TemplateNotFoundError(
        "report templates not found; looked in " + " and ".join(f"'{c}'" for c in candidates)
        + ". In a source checkout they live in reports/templates; a wheel installs them as auditor/_templates "
        "(reinstall auditor: pip install --force-reinstall auditor)")


# ---------------------------------------------------------------------------------------------- formatting

def _finite(x: Any) -> bool:
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
    return f"{float(x) * 100:.{digits}f}%" if _finite(x) else "—"


def fmt_seconds(x: Any) -> str:
    if not _finite(x):
        return "—"
    v = float(x)
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s" if v < 120 else f"{v / 60:.1f} min"


def _floats(v: Any) -> np.ndarray:
    """JSON lists (None for NaN) or arrays to a float array."""
    if v is None:
        return np.zeros(0)
    a = np.asarray(v, dtype=object)
    return np.where(a == None, np.nan, a).astype(np.float64)  # noqa: E711 (element-wise)


def _name(names: Sequence[str], c: int) -> str:
    return str(names[c]) if 0 <= c < len(names) else str(c)


# ---------------------------------------------------------------------------------------------- sections

def _focus_classes(result: Any, n: int = FOCUS_CLASSES) -> list[int]:
    """Classes of the top pairs (by S, then by confusion, then more confused pairs), at most ``n``."""
    out: list[int] = []
    pairs = [(a, b) for a, b, _ in result.top_pairs_interference] + \
            [(a, b) for a, b, _ in result.top_pairs_confusion] + [(a, b) for a, b, _ in result.errors.pairs]
    for a, b in pairs:
        for c in (a, b):
            if c not in out and len(out) < n:
                out.append(int(c))
        if len(out) >= n:
            break
    if len(out) < n:  # no pairs at all: fall back to the worst classes
        acc = np.where(np.isnan(result.accuracy), np.inf, result.accuracy)
        for c in np.argsort(acc, kind="stable"):
            if int(c) not in out and len(out) < n:
                out.append(int(c))
    return out


def _pair_rows(result: Any, pairs: Sequence[tuple[int, int, float]], names: Sequence[str],
               limit: int = 5) -> list[dict[str, Any]]:
    conf = result.errors.confusion
    s = result.interference.pair_score
    agree = set(result.agreeing_pairs(top=limit))
    rows = []
    for a, b, _ in pairs[:limit]:
        rows.append({"a": _name(names, a), "b": _name(names, b), "score": float(s[a, b]),
                     "confusion": int(conf[a, b] + conf[b, a]), "conflict": float(result.interference.conflict[a, b]),
                     "both": (a, b) in agree})
    return rows


def _summary(result: Any, names: Sequence[str]) -> dict[str, Any]:
    m = result.model
    op_types = m.get("op_types") or {}
    worst, worst_acc = result.worst_class()
    counts = np.asarray(result.counts)
    present = counts[counts > 0]
    gate = result.gate
    return {
        "model": {"file": os.path.basename(str(m.get("path", ""))) or "—", "path": m.get("path", "—"),
                  "producer": m.get("producer") or "—", "opset": m.get("opset", "—"),
                  "ir_version": m.get("ir_version", "—"), "n_parameters": m.get("n_parameters"),
                  "n_tensors": len(m.get("parameters") or []),
                  "op_types": ", ".join(f"{k} ×{v}" for k, v in op_types.items()) or "—",
                  "logits": (m.get("logits") or {}).get("tensor", "—"),
                  "logits_kind": (m.get("logits") or {}).get("kind", "—"),
                  "input": m.get("input") or {}, "notes": list(m.get("notes") or [])},
        "data": {"source": result.data.get("source", "—"), "n_samples": result.data.get("n_samples"),
                 "n_classes": result.n_classes, "n_present": int((counts > 0).sum()),
                 "counts": [(_name(names, c), int(n)) for c, n in enumerate(counts)] if result.n_classes <= LARGE_K
                 else None,
                 "count_range": (int(present.min()), int(np.median(present)), int(present.max())) if present.size
                 else None,
                 "separate_gradient_data": _separate(result)},
        "overall_accuracy": result.overall_accuracy, "worst_name": _name(names, worst), "worst_accuracy": worst_acc,
        "pairs_interference": _pair_rows(result, result.top_pairs_interference, names),
        "pairs_confusion": _pair_rows(result, result.top_pairs_confusion, names),
        "agreeing": [f"{_name(names, a)} / {_name(names, b)}" for a, b in result.agreeing_pairs(top=5)],
        "gate": None if gate is None else {"verdict": gate.get("verdict", "—"), "checks": list(gate.get("checks", []))},
        "skipped": [(_name(names, c), reason) for c, reason in sorted(result.skipped.items())],
        "n_errors": result.errors.n_errors,
    }


def _separate(result: Any) -> bool:
    return result.data.get("sha256") != result.gradient_data.get("sha256") or \
        result.data.get("source") != result.gradient_data.get("source")


def _per_class(result: Any, names: Sequence[str]) -> dict[str, Any]:
    k = result.n_classes
    conf = np.asarray(result.errors.confusion)
    rows = []
    for c in range(k):
        off = conf[c].astype(np.float64).copy()
        off[c] = -1
        order = [int(j) for j in np.argsort(-off, kind="stable")[:3] if off[j] > 0]
        total = conf[c].sum()
        rows.append({
            "index": c, "name": _name(names, c), "count": int(result.counts[c]),
            "accuracy": float(result.accuracy[c]), "loss": float(result.loss[c]),
            "curvature": float(result.flatness.curvature[c]), "sharpness": float(result.flatness.sharpness[c]),
            "gradient_norm": float(result.gradient_norm[c]), "alpha_max": float(result.alpha_max[c]),
            "alpha_s": float(result.interference.alpha_s[c]),
            "confusions": [(_name(names, j), int(conf[c, j]), conf[c, j] / total if total else math.nan)
                           for j in order],
            "skipped": result.skipped.get(c, ""),
        })
    worst_first = k > LARGE_K
    if worst_first:
        rows.sort(key=lambda r: (math.isnan(r["accuracy"]), r["accuracy"]))
    return {"rows": rows, "worst_first": worst_first}


def _errors(result: Any, names: Sequence[str]) -> dict[str, Any]:
    k = result.n_classes
    es = result.errors
    conf = np.asarray(es.confusion)
    if k > LARGE_K:
        focus = _focus_classes(result)
        block = conf[np.ix_(focus, focus)]
        uri = figures.confusion_heatmap(block, [_name(names, c) for c in focus], row_totals=conf[focus].sum(axis=1))
        note = (f"Showing {len(focus)} of {k} classes: those in the top pairs by pair score S and by confusion "
                f"(a {k}×{k} heatmap would be unreadable). Colours are shares of each true class's samples, over "
                "all predictions.")
    else:
        uri = figures.confusion_heatmap(conf, list(names))
        note = ""
    n_pairs_total = k * (k - 1) // 2
    marks, shares = [], []
    for f, share in sorted(es.share.items()):
        n = max(1, math.ceil(float(f) * n_pairs_total))
        label = f"top {float(f) * 100:g}%"
        marks.append((label, n, share))
        shares.append({"label": label, "n_pairs": n, "share": share})
    pareto = figures.pareto_chart([n for _, _, n in es.pairs],
                                  [f"{_name(names, a)} / {_name(names, b)}" for a, b, _ in es.pairs],
                                  es.cumulative_share, marks)
    return {"confusion_uri": uri, "confusion_note": note, "pareto_uri": pareto, "shares": shares,
            "n_errors": es.n_errors, "n_pairs_total": n_pairs_total, "n_confused_pairs": len(es.pairs),
            "n_samples": int(conf.sum())}


def _interference(result: Any, names: Sequence[str]) -> dict[str, Any]:
    k = result.n_classes
    inter = result.interference
    if k > LARGE_K:
        focus = _focus_classes(result)
        idx = np.ix_(focus, focus)
        uri = figures.interference_heatmaps(inter.first_order[idx], inter.finite[idx],
                                            [_name(names, c) for c in focus])
        note = (f"Showing {len(focus)} of {k} classes: those in the top pairs by pair score S and by confusion "
                f"(a {k}×{k} heatmap would be unreadable).")
    else:
        uri = figures.interference_heatmaps(inter.first_order, inter.finite, list(names))
        note = ""
    return {"uri": uri, "note": note, "pairs": _pair_rows(result, result.top_pairs_interference, names, 10),
            "reasons": [(_name(names, c), r) for c, r in sorted(inter.reasons.items())]}


def _cct(result: Any, names: Sequence[str]) -> dict[str, Any]:
    cct = result.cct
    k = result.n_classes
    ego = list(cct.ego_classes)
    if not ego:
        return {"uri": None, "note": "No class had an ego direction, so no cross-class test ran.", "shown": 0,
                "n_ego": 0}
    focus = _focus_classes(result, n=k)
    order = [c for c in focus if c in ego] + [c for c in ego if c not in focus]
    chosen = order[:MAX_CCT_PANELS]
    large = k > LARGE_K
    panels = []
    z = cct.zero_index
    for c in sorted(chosen, key=ego.index):
        i = ego.index(c)
        steps = cct.steps(i)
        loss = np.asarray(cct.loss[i])
        positive = np.flatnonzero(steps > 0)
        end = int(positive[-1]) if len(positive) else len(steps) - 1
        hurt = loss[:, end] - loss[:, z]
        others = [j for j in range(k) if j != c and np.isfinite(loss[j]).any()]
        ranked = sorted((j for j in others if np.isfinite(hurt[j])), key=lambda j: -hurt[j])
        top = ranked[: HURT_LARGE_K if large else HURT_LABELLED]
        curves = [(_name(names, j), j, loss[j]) for j in top]
        if not large:
            curves += [(None, j, loss[j]) for j in others if j not in top]
        panels.append({"title": f"ego class: {_name(names, c)}", "steps": steps, "ego": loss[c],
                       "others": curves, "alpha_s": float(result.interference.alpha_s[c])})
    uri = figures.cct_panels(panels, ncols=3 if len(panels) > 4 else min(len(panels), 2) or 1)
    notes = []
    if len(ego) > len(chosen):
        notes.append(f"Panels for {len(chosen)} of {len(ego)} ego classes: those in the top pairs by pair score "
                     "and by confusion.")
    if large:
        notes.append(f"With {k} classes each panel draws only the ego curve and the {HURT_LARGE_K} classes whose "
                     "loss rises most at the largest step.")
    return {"uri": uri, "note": " ".join(notes), "shown": len(chosen), "n_ego": len(ego),
            "labelled": HURT_LARGE_K if large else HURT_LABELLED, "strategy": cct.strategy,
            "normalization": cct.normalization, "scaled": bool(np.any(cct.step_scale != 1.0))}


def _models(result: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for m in result.models:
        r = m.radius if m.radius else 1.0
        na, nb = _name(names, m.a), _name(names, m.b)
        if m.basis == "gradients":
            xl, yl = f"s / r   (θ* − s·g_a, g_a of {figures.short(na)})", f"t / r   (− t·g_b, {figures.short(nb)})"
        else:
            xl, yl = "s / r   (along u = d_a / ‖d_a‖)", "t / r   (along v ⊥ u, from d_b)"
        uri = figures.interference_model_figure({
            "s": np.asarray(m.s) / r, "t": np.asarray(m.t) / r, "loss_a": m.loss_a, "loss_b": m.loss_b,
            "total": m.total, "minimum_a": m.minimum_a, "minimum_b": m.minimum_b, "name_a": na, "name_b": nb,
            "one_dimensional": m.one_dimensional, "xlabel": xl, "ylabel": yl})
        zero = (int(np.argmin(np.abs(m.s))), int(np.argmin(np.abs(m.t))))
        out.append({"a": na, "b": nb, "uri": uri, "basis": m.basis, "radius": m.radius,
                    "conflict_angle": m.conflict_angle, "minimum_separation": m.minimum_separation,
                    "resolution": m.resolution, "grid": f"{len(m.s)}×{len(m.t)}", "one_dimensional": m.one_dimensional,
                    "note": m.note, "n_samples": m.n_samples,
                    "loss_a0": float(m.loss_a[zero]), "loss_b0": float(m.loss_b[zero]),
                    "loss_a_min": float(m.loss_a[tuple(m.minimum_a)]),
                    "loss_b_min": float(m.loss_b[tuple(m.minimum_b)]),
                    "score": float(result.interference.pair_score[m.a, m.b]),
                    "confusion": int(result.errors.confusion[m.a, m.b] + result.errors.confusion[m.b, m.a])})
    return out


def dance_context(dance: Mapping[str, Any], class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """What the label-dancing section shows, from ``DanceAnalysis.to_dict()`` (optional keys may be absent)."""
    rate = _floats(dance.get("dance_rate"))
    notes = _floats(dance.get("notes")) if dance.get("notes") is not None else None
    pair_flips = _floats(dance.get("pair_flips")) if dance.get("pair_flips") is not None else None
    curve = _floats(dance.get("dance_curve")) if dance.get("dance_curve") is not None else None
    k = next((len(x) for x in (rate, dance.get("class_names"), class_names) if x is not None and len(x)), 0)
    if not k and notes is not None and notes.ndim == 3:
        k = notes.shape[0]
    names = list(dance.get("class_names") or class_names or [str(c) for c in range(k)])
    if len(names) < k:
        names += [str(c) for c in range(len(names), k)]
    labels = np.asarray(dance["labels"], dtype=np.int64) if dance.get("labels") is not None else None
    steps = _floats(dance.get("steps")) if dance.get("steps") is not None else None
    n_records = len(steps) if steps is not None else (notes.shape[1] if notes is not None and notes.ndim == 3 else
                                                      (curve.shape[1] + 1 if curve is not None and curve.ndim == 2
                                                       else 0))
    if steps is None or len(steps) != n_records:
        steps = np.arange(n_records, dtype=np.float64)
    if notes is not None and notes.ndim != 3 and k and n_records and notes.size == k * n_records * k:
        notes = notes.reshape(k, n_records, k)
    if curve is not None and curve.ndim != 2 and k and curve.size == k * max(n_records - 1, 0):
        curve = curve.reshape(k, n_records - 1)
    ctx: dict[str, Any] = {"n_classes": k, "n_records": n_records, "source": dance.get("source") or "",
                           "threshold": dance.get("threshold"), "window": list(dance.get("window") or []),
                           "n_probe": int(len(labels)) if labels is not None else None,
                           "first_step": steps[0] if len(steps) else None,
                           "last_step": steps[-1] if len(steps) else None}
    ranked = [int(c) for c in np.argsort(-np.nan_to_num(rate, nan=-1.0), kind="stable")] if rate.size else []
    top = [c for c in ranked if np.isfinite(rate[c]) and rate[c] > 0][:PIANO_ROLLS]
    # table of classes
    flips = _floats(dance.get("flips")) if dance.get("flips") is not None else None
    forgetting = _floats(dance.get("forgetting")) if dance.get("forgetting") is not None else None
    never = _floats(dance.get("never_forgotten")) if dance.get("never_forgotten") is not None else None
    rows = []
    for c in (ranked if k > LARGE_K else range(k)):
        in_c = labels == c if labels is not None else None
        per_sample = labels is not None and in_c is not None
        rows.append({
            "name": _name(names, c), "dance_rate": rate[c] if c < len(rate) else math.nan,
            "n_probe": int(in_c.sum()) if in_c is not None else None,
            "flips": float(np.nansum(flips[in_c])) if per_sample and flips is not None
            and len(flips) == len(labels) else None,
            "forgetting": float(np.nansum(forgetting[in_c])) if per_sample and forgetting is not None
            and len(forgetting) == len(labels) else None,
            "never_forgotten": never[c] if never is not None and c < len(never) else None,
            "top": c in top})
    ctx["rows"] = rows[: 2 * LARGE_K] if k > LARGE_K else rows
    ctx["rows_note"] = (f"The {len(ctx['rows'])} of {k} classes that dance most, highest dance rate first."
                        if k > LARGE_K else "")
    ctx["top"] = [_name(names, c) for c in top]
    # dance-rate curves
    ctx["curves_uri"] = None
    if curve is not None and curve.ndim == 2 and curve.shape[1] >= 1:
        x = steps[1:] if len(steps) == curve.shape[1] + 1 else np.arange(1, curve.shape[1] + 1, dtype=np.float64)
        window_given = dance.get("window")
        start = int(window_given[0]) if window_given else (max(1, n_records // 2) if n_records else 1)
        window = x[min(start, len(x)) - 1] if len(x) else None
        ctx["curves_uri"] = figures.dance_rate_curves(x, curve, names, top, window_start=window)
    # dancing pairs
    ctx["pairs_uri"], ctx["pairs"], ctx["pairs_note"] = None, [], ""
    if pair_flips is not None and pair_flips.ndim == 2 and pair_flips.shape[0] == pair_flips.shape[1]:
        sym = np.nan_to_num(pair_flips) + np.nan_to_num(pair_flips).T
        a, b = np.triu_indices(sym.shape[0], 1)
        order = np.argsort(-sym[a, b], kind="stable")
        ctx["pairs"] = [{"a": _name(names, int(a[j])), "b": _name(names, int(b[j])), "flips": int(sym[a[j], b[j]]),
                         "a_to_b": int(np.nan_to_num(pair_flips[a[j], b[j]])),
                         "b_to_a": int(np.nan_to_num(pair_flips[b[j], a[j]]))}
                        for j in order[:10] if sym[a[j], b[j]] > 0]
        if sym.shape[0] > LARGE_K:
            focus: list[int] = []
            for j in order:
                for c in (int(a[j]), int(b[j])):
                    if c not in focus and len(focus) < FOCUS_CLASSES:
                        focus.append(c)
                if len(focus) >= FOCUS_CLASSES or sym[a[j], b[j]] <= 0:
                    break
            focus = focus or list(range(min(FOCUS_CLASSES, sym.shape[0])))
            ctx["pairs_uri"] = figures.dancing_pair_heatmap(sym[np.ix_(focus, focus)], [_name(names, c) for c in focus])
            ctx["pairs_note"] = (f"Showing {len(focus)} of {sym.shape[0]} classes: those in the top dancing pairs "
                                 f"(a {sym.shape[0]}×{sym.shape[0]} heatmap would be unreadable).")
        else:
            ctx["pairs_uri"] = figures.dancing_pair_heatmap(sym, names[: sym.shape[0]])
    # piano rolls
    rolls = []
    dominant = np.asarray(dance["dominant"]) if dance.get("dominant") is not None else None
    if notes is not None and notes.ndim == 3:
        roll_x = steps if len(steps) == notes.shape[1] else np.arange(notes.shape[1], dtype=np.float64)
        for c in top or ranked[:1]:
            f = notes[c]  # [T, K]
            if f.shape[1] > LARGE_K:
                peak = np.nan_to_num(np.nanmax(np.where(np.isnan(f), -1, f), axis=0), nan=0.0)
                peak[c] = np.inf
                rows_k = [int(j) for j in np.argsort(-peak, kind="stable")[:15] if peak[j] > 0]
                note = (f"Showing the {len(rows_k)} of {f.shape[1]} predicted classes with the loudest notes.")
            else:
                rows_k, note = list(range(f.shape[1])), ""
            dom = None
            if dominant is not None and dominant.ndim == 2 and c < dominant.shape[0] \
                    and dominant.shape[1] == f.shape[0]:
                where = {j: r for r, j in enumerate(rows_k)}
                dom = np.array([where.get(int(d), -1) for d in dominant[c]])
            rolls.append({"name": _name(names, c), "note": note,
                          "uri": figures.piano_roll(roll_x, f[:, rows_k], [_name(names, j) for j in rows_k],
                                                    rows_k.index(c) if c in rows_k else None,
                                                    f"class dancing notes of {figures.short(_name(names, c), 24)}",
                                                    dom)})
    ctx["rolls"] = rolls
    ctx["agreement"] = _agreement(dance.get("agreement"))
    return ctx


def _agreement(agreement: Any) -> dict[str, Any] | None:
    """A table from the optional agreement dict, whatever its nesting (one level of dicts -> columns)."""
    if not isinstance(agreement, Mapping) or not agreement:
        return None
    nested = {k: v for k, v in agreement.items() if isinstance(v, Mapping)}
    flat = {k: v for k, v in agreement.items() if not isinstance(v, Mapping)}
    columns: list[str] = []
    for v in nested.values():
        for key in v:
            if key not in columns:
                columns.append(str(key))
    return {"columns": columns,
            "rows": [(str(k), [_cell(v.get(c)) for c in columns]) for k, v in nested.items()],
            "flat": [(str(k), _cell(v)) for k, v in flat.items()]}


def _cell(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        text = ", ".join(_cell(x) for x in v[:10])
        return f"[{text}{', …' if len(v) > 10 else ''}]"
    return fmt_num(v)


def _method(result: Any) -> dict[str, Any]:
    opts = result.options.to_dict()
    amax = result.alpha_max[np.isfinite(result.alpha_max)]
    models = result.models
    return {"options": [(k, "—" if v is None or v == [] else ", ".join(map(str, v)) if isinstance(v, list) else v)
                        for k, v in opts.items()],
            "normalization": result.options.normalization, "alphas_given": result.options.alphas is not None,
            "n_alphas": len(result.cct.alphas), "alpha_max": (float(amax.min()), float(amax.max())) if amax.size
            else None, "data": dict(result.data), "gradient_data": dict(result.gradient_data),
            "separate": _separate(result), "versions": sorted(dict(result.versions).items()),
            "timings": [(k, fmt_seconds(v) if k.endswith("_s") else fmt_num(v)) for k, v in result.timings.items()],
            "provider": result.provider, "strategy": result.cct.strategy, "model": dict(result.model),
            "candidates": dict(result.candidates), "created": result.created,
            "schema_version": result.schema_version, "basis": result.options.basis,
            "grid": result.options.grid, "n_models": len(models),
            "resolutions": sorted({fmt_num(m.resolution) for m in models})}


# ---------------------------------------------------------------------------------------------- rendering

def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(num=fmt_num, pct=fmt_pct, seconds=fmt_seconds, short=figures.short)
    return env


def build_context(result: Any, title: str | None = None) -> dict[str, Any]:
    """Everything the report templates show (figures included), from one result."""
    names = [str(n) for n in result.class_names]
    model_file = os.path.basename(str(result.model.get("path", ""))) or "model"
    return {
        "title": title or f"Class interference audit: {model_file}",
        "sections": SECTIONS, "names": names, "k": result.n_classes, "large": result.n_classes > LARGE_K,
        "summary": _summary(result, names), "per_class": _per_class(result, names),
        "errors": _errors(result, names), "interference": _interference(result, names),
        "cct": _cct(result, names), "models": _models(result, names),
        "dance": dance_context(result.dance, names) if isinstance(result.dance, Mapping) else None,
        "method": _method(result), "created": result.created,
    }


def render_report(result: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the interference report of ``result`` to ``path`` as one self-contained HTML file.

    Parameters
    ----------
    result : AuditResult
        What :func:`auditor.run_audit` returned, or ``AuditResult.from_dict`` of a results.json.
    path : path-like
        The HTML file; written atomically (whole or not at all: a failure while drawing
        leaves an existing file untouched).
    title : str, optional
        Page title (default: "Class interference audit: MODEL FILE").

    Returns
    -------
    Path
    """
    html = _environment().get_template("report.html.j2").render(**build_context(result, title))
    return atomic_write_text(path, html)


def render_dance_report(dance: Mapping[str, Any], path: str | os.PathLike[str], *,
                        class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Write a standalone label-dancing report (``DanceAnalysis.to_dict()``) to ``path``, atomically.

    Parameters
    ----------
    dance : mapping
        ``DanceAnalysis.to_dict()``; optional keys (``agreement``, ``notes``, ...) may be absent.
    path : path-like
    class_names : sequence of str, optional
        Used when ``dance`` carries none.
    title : str, optional

    Returns
    -------
    Path
    """
    ctx = {"title": title or "Label dancing during training", "sections": ("label-dancing",),
           "dance": dance_context(dance, class_names), "created": "", "standalone": True}
    html = _environment().get_template("dance_report.html.j2").render(**ctx)
    return atomic_write_text(path, html)
