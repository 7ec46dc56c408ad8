"""What each section of the audit report shows, from an :class:`~auditor.audit.AuditResult`.

These functions pick what to show (the classes of the top pairs when K is large, the
most-hurt classes of each cross-class test) and draw the figures; they compute no
analysis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from auditor.audit import AuditResult
from auditor.interference import ILL_CONDITIONED_FRACTION
from auditor.landscape import InterferenceModel
from auditor.report import figures
from auditor.report.format import class_name as _name
from auditor.report.format import fmt_num, fmt_seconds

__all__ = ["summary", "per_class", "errors", "examples", "interference", "cct", "models", "method",
           "agreement_text", "LARGE_K",
           "FOCUS_CLASSES", "MAX_CCT_PANELS"]

#: Above this many classes, heatmaps show only the classes of the top pairs.
LARGE_K = 30
#: How many classes such a heatmap shows at most.
FOCUS_CLASSES = 20
#: Cross-class-test panels at most (one per ego class).
MAX_CCT_PANELS = 12
#: Most-hurt classes labelled per CCT panel (drawn alone when K is large).
HURT_LABELLED = 3
HURT_LARGE_K = 5
#: Section ids, in page order.
SECTIONS = ("summary", "per-class", "errors", "interference", "cct", "interference-models", "label-dancing",
            "method")


def _focus_classes(result: AuditResult, n: int = FOCUS_CLASSES) -> list[int]:
    """Classes of the top pairs (by R, then by confusion, then more confused pairs), at most ``n``."""
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


def _pair_rows(result: AuditResult, pairs: Sequence[tuple[int, int, float]], names: Sequence[str],
               limit: int = 5) -> list[dict[str, Any]]:
    conf = result.errors.confusion
    inter = result.interference
    q = result.errors.soft_pairs()
    agree = set(result.agreeing_pairs(top=limit))
    rows = []
    for a, b, _ in pairs[:limit]:
        rows.append({"a": _name(names, a), "b": _name(names, b), "score": float(inter.pair_score[a, b]),
                     "one_sided": bool(inter.one_sided[a, b]), "confusion": int(conf[a, b] + conf[b, a]),
                     "soft": math.nan if q is None else float(q[a, b]), "conflict": float(inter.conflict[a, b]),
                     "both": (a, b) in agree})
    return rows


def agreement_text(result: AuditResult) -> dict[str, Any]:
    """The per-audit agreement of R with P in plain words, and its verdict."""
    g = result.agreement
    verdict = g.verdict()
    if verdict == "undefined":
        if g.n_pairs == 0:
            text = ("R is undefined for every pair (see the method section), so its agreement with the confusion "
                    "cannot be measured.")
        elif g.n_error_pairs == 0:
            text = ("This model makes no errors on the audit data, so there is nothing for interference to explain "
                    "here; R still shows which pairs would collide first.")
        else:
            text = "Every pair has errors, so R cannot be checked against them on this audit."
        return {"verdict": verdict, "text": text}
    words = {"much": "much", "part": "part", "little": "little"}[verdict]
    text = (f"On this model interference explains {words} of the confusion. Of the {g.k} most confused pairs, "
            f"a share of {g.precision_at_k:.2f} is among the {g.k} pairs with the largest R (precision@{g.k}; "
            f"{g.precision_at_fraction:.2f} for the top 10%, {g.k_fraction} pairs). Over all {g.n_pairs} pairs, "
            f"R tells the {g.n_error_pairs} pairs with at least one error from the {g.n_pairs - g.n_error_pairs} "
            f"without with AUC {g.auc:.2f} (0.5 is chance, 1 is perfect), and its rank correlation with the "
            f"error counts is {g.spearman:.2f}.")
    return {"verdict": verdict, "text": text}


def summary(result: AuditResult, names: Sequence[str]) -> dict[str, Any]:
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
        "agreement": agreement_text(result), "has_soft": result.errors.soft_confusion is not None,
        "notes": list(result.notes),
        "gate": gate,
        "skipped": [(_name(names, c), reason) for c, reason in sorted(result.skipped.items())],
        "n_errors": result.errors.n_errors,
    }


def _separate(result: AuditResult) -> bool:
    return result.data.get("sha256") != result.gradient_data.get("sha256") or \
        result.data.get("source") != result.gradient_data.get("source")


def per_class(result: AuditResult, names: Sequence[str]) -> dict[str, Any]:
    k = result.n_classes
    conf = np.asarray(result.errors.confusion)
    rows: list[dict[str, Any]] = []
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


def errors(result: AuditResult, names: Sequence[str]) -> dict[str, Any]:
    k = result.n_classes
    es = result.errors
    conf = np.asarray(es.confusion)
    if k > LARGE_K:
        focus = _focus_classes(result)
        block = conf[np.ix_(focus, focus)]
        uri = figures.confusion_heatmap(block, [_name(names, c) for c in focus], row_totals=conf[focus].sum(axis=1))
        note = (f"Showing {len(focus)} of {k} classes: those in the top pairs by pair score R and by confusion "
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
            "n_samples": int(conf.sum()), "has_soft": es.soft_confusion is not None,
            "pairs": _pair_rows(result, result.top_pairs_confusion, names, 10)}


def examples(result: AuditResult, names: Sequence[str]) -> dict[str, Any]:
    """The confused pairs' samples: thumbnails (image data), texts (text data) or indices."""
    from auditor.examples import THUMBNAIL_SIDE

    conf = result.errors.confusion
    samples = [s for p in result.examples for s in p.samples]
    kind = "image" if any(s.image is not None for s in samples) else "text" if any(
        s.text is not None for s in samples) else "none"
    pairs = [{"a": _name(names, p.a), "b": _name(names, p.b), "confusion": int(conf[p.a, p.b] + conf[p.b, p.a]),
              "samples": [{"index": s.index, "true": _name(names, s.true), "predicted": _name(names, s.predicted),
                           "text": s.text, "uri": None if s.image is None else figures.thumbnail_uri(s.image)}
                          for s in p.samples]}
             for p in result.examples]
    return {"pairs": pairs, "kind": kind, "side": THUMBNAIL_SIDE, "n_errors": result.errors.n_errors}


def interference(result: AuditResult, names: Sequence[str]) -> dict[str, Any]:
    k = result.n_classes
    inter = result.interference
    ill = np.asarray(inter.ill_conditioned, dtype=bool)
    if k > LARGE_K:
        focus = _focus_classes(result)
        idx = np.ix_(focus, focus)
        uri = figures.interference_heatmaps(inter.first_order[idx], inter.finite[idx],
                                            [_name(names, c) for c in focus], marked=[bool(ill[c]) for c in focus])
        note = (f"Showing {len(focus)} of {k} classes: those in the top pairs by pair score R and by confusion "
                f"(a {k}×{k} heatmap would be unreadable).")
    else:
        uri = figures.interference_heatmaps(inter.first_order, inter.finite, list(names), marked=list(ill))
        note = ""
    loss = np.asarray(result.loss, dtype=np.float64)
    marked = [(_name(names, int(c)), float(loss[c]), float(loss[c] / inter.mean_loss)) for c in np.flatnonzero(ill)]
    return {"uri": uri, "note": note, "pairs": _pair_rows(result, result.top_pairs_interference, names, 10),
            "reasons": [(_name(names, c), r) for c, r in sorted(inter.reasons.items())],
            "ill_conditioned": marked, "mean_loss": float(inter.mean_loss),
            "threshold": ILL_CONDITIONED_FRACTION, "any_one_sided": bool(np.any(inter.one_sided))}


def cct(result: AuditResult, names: Sequence[str]) -> dict[str, Any]:
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
        curves: list[tuple[str | None, int, np.ndarray]] = [(_name(names, j), j, loss[j]) for j in top]
        if not large:
            curves += [(None, j, loss[j]) for j in others if j not in top]
        panels.append({"title": f"ego class: {_name(names, c)}", "steps": steps, "ego": loss[c],
                       "others": curves, "alpha_s": float(result.interference.alpha_s[c])})
    uri = figures.cct_panels(panels, ncols=3 if len(panels) > 4 else min(len(panels), 2) or 1)
    notes = []
    if len(ego) > len(chosen):
        notes.append(f"Panels for {len(chosen)} of {len(ego)} ego classes: those in the top pairs by pair score R "
                     "and by confusion.")
    if large:
        notes.append(f"With {k} classes each panel draws only the ego curve and the {HURT_LARGE_K} classes whose "
                     "loss rises most at the largest step.")
    return {"uri": uri, "note": " ".join(notes), "shown": len(chosen), "n_ego": len(ego),
            "labelled": HURT_LARGE_K if large else HURT_LABELLED, "strategy": cct.strategy,
            "normalization": cct.normalization, "scaled": bool(np.any(cct.step_scale != 1.0))}


def models(result: AuditResult, names: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for m in result.models:
        r = m.radius if m.radius else 1.0
        na, nb = _name(names, m.a), _name(names, m.b)
        if m.basis == "gradients":
            xl, yl = f"s / r   (θ* − s·g_a, g_a of {figures.short(na)})", f"t / r   (− t·g_b, {figures.short(nb)})"
        else:
            xl, yl = "s / r   (along u = d_a / ‖d_a‖)", "t / r   (along v ⊥ u, from d_b)"
        s_l, t_l, lattice = m.lattice_view()  # contours from the lattice: every value defined there
        uri = figures.interference_model_figure({
            "s": np.asarray(s_l) / r, "t": np.asarray(t_l) / r, "loss_a": lattice["loss_a"],
            "loss_b": lattice["loss_b"], "total": lattice["total"],
            "minimum_a": (float(m.s[m.minimum_a[0]]) / r, float(m.t[m.minimum_a[1]]) / r, float(m.loss_a[m.minimum_a])),
            "minimum_b": (float(m.s[m.minimum_b[0]]) / r, float(m.t[m.minimum_b[1]]) / r, float(m.loss_b[m.minimum_b])),
            "name_a": na, "name_b": nb, "one_dimensional": m.one_dimensional, "xlabel": xl, "ylabel": yl})
        zero = (int(np.argmin(np.abs(m.s))), int(np.argmin(np.abs(m.t))))
        out.append({"a": na, "b": nb, "uri": uri, "basis": m.basis, "radius": m.radius,
                    "conflict_angle": m.conflict_angle, "minimum_separation": m.minimum_separation,
                    "resolution": m.resolution, "grid": _grid_text(m), "one_dimensional": m.one_dimensional,
                    "note": m.note, "n_samples": m.n_samples,
                    "loss_a0": float(m.loss_a[zero]), "loss_b0": float(m.loss_b[zero]),
                    "loss_a_min": float(m.loss_a[tuple(m.minimum_a)]),
                    "loss_b_min": float(m.loss_b[tuple(m.minimum_b)]),
                    "score": float(result.interference.pair_score[m.a, m.b]),
                    "confusion": int(result.errors.confusion[m.a, m.b] + result.errors.confusion[m.b, m.a])})
    return out


def _grid_text(m: InterferenceModel) -> str:
    shape = f"{len(m.s)}×{len(m.t)}"
    if not m.lattice or m.lattice >= len(m.s):
        return shape
    lattice = f"{m.lattice}×{m.lattice if len(m.t) > 1 else 1}"
    return f"{shape} ({lattice} lattice, {m.refined} points refined near each minimum)"


def models_grid(result: AuditResult) -> str:
    """What the 2-D models' grid was and why, for the method section."""
    design = result.cost.design if result.cost is not None else None
    if design is None:  # results from before the budget: the options said it
        grid = result.options.grid
        return f"{grid}×{grid} points, every point evaluated (option grid)." if grid else "—"
    if not design.pairs:
        return f"No 2-D model: {design.reason}."
    if design.lattice >= design.grid:
        what = f"every point of a {design.grid}×{design.grid} grid (resolution one cell, {2 / (design.grid - 1):.3g} r)"
    else:
        what = (f"a {design.lattice}×{design.lattice} lattice over the whole plane (every "
                f"{(design.grid - 1) // (design.lattice - 1)}th point of a {design.grid}×{design.grid} grid) on "
                "D_a ∪ D_b and a subsample of the other classes, then a search near each class's lattice minimum, "
                "halving the step down to one grid cell, on D_a ∪ D_b only: each minimum is resolved to one cell "
                f"of the {design.grid}×{design.grid} grid ({2 / (design.grid - 1):.3g} r); the contours and the "
                "total loss are drawn from the lattice")
    why = design.reason if design.chosen_by == "options" else design.reason.split(": ", 1)[-1]
    return f"{what[0].upper()}{what[1:]}. Why: {why}."


def cost_rows(result: AuditResult) -> list[dict[str, Any]]:
    """Planned and actual cost per stage (FPE: passes over the audit data)."""
    if result.cost is None:
        return []
    from auditor.budget import STAGES

    rows = []
    for stage in STAGES:
        p, a = result.cost.planned.get(stage), result.cost.actual.get(stage)
        if p is None and a is None:
            continue
        rows.append({"stage": stage.replace("_", " "), "planned_evaluations": p.evaluations if p else None,
                     "planned_fpe": p.fpe if p else None, "actual_evaluations": a.evaluations if a else None,
                     "actual_fpe": a.fpe if a else None, "seconds": a.seconds if a else None})
    return rows


def method(result: AuditResult) -> dict[str, Any]:
    opts = result.options.to_dict()
    amax = result.alpha_max[np.isfinite(result.alpha_max)]
    a1 = result.interference.alpha_1[np.isfinite(result.interference.alpha_1)]
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
            "grid": models_grid(result), "n_models": len(models), "cost": cost_rows(result),
            "budget": None if result.cost is None else result.cost.budget,
            "seconds_per_fpe": None if result.cost is None else result.cost.seconds_per_fpe,
            "resolutions": sorted({fmt_num(m.resolution) for m in models}),
            "alpha_1": (float(a1.min()), float(a1.max())) if a1.size else None,
            "mean_loss": float(result.interference.mean_loss), "ill_threshold": ILL_CONDITIONED_FRACTION,
            "agreement": result.agreement, "twin": _twin(result)}


def _twin(result: AuditResult) -> dict[str, Any] | None:
    """The deployed graph beside its float32 twin (fp16 and int8 exports)."""
    t = result.twin
    if t is None:
        return None
    names = result.class_names
    rows = [{"name": _name(names, c), "deployed_accuracy": float(t.deployed_accuracy[c]),
             "twin_accuracy": float(t.twin_accuracy[c]), "deployed_loss": float(t.deployed_loss[c]),
             "twin_loss": float(t.twin_loss[c])} for c in range(len(t.deployed_loss))]
    notes = list((result.model.get("twin") or {}).get("notes", []))
    return {"kind": t.kind, "top1_agreement": t.top1_agreement, "mean_abs_logit_difference":
            t.mean_abs_logit_difference, "max_abs_logit_difference": t.max_abs_logit_difference,
            "rows": rows[:2 * LARGE_K], "notes": notes}
