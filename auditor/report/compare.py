"""The comparison report (``auditor compare``), drawn only from a :class:`~auditor.comparison.CompareResult`.

These functions pick what each section shows and draw its figures; they compute no
analysis, so the page can be rebuilt from a comparison's results.json.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.comparison import CompareResult
from auditor.report import compare_figures as cf
from auditor.report import figures
from auditor.report.format import class_name as _name
from auditor.report.format import fmt_num, fmt_seconds
from auditor.report.render import render_template
from auditor.report.sections import FOCUS_CLASSES, LARGE_K

__all__ = ["compare_context", "render_compare_report", "COMPARE_SECTIONS"]

#: Section ids of the comparison report, in page order.
COMPARE_SECTIONS = ("summary", "per-class", "pairs", "flips", "agreement", "interference", "method")
#: Rows of the pair tables and of the table of flip groups without examples.
PAIR_ROWS = 15
GROUP_ROWS = 50


def _model(m: Mapping[str, Any]) -> dict[str, Any]:
    inputs = m.get("inputs") or [m.get("input") or {}]
    return {"file": os.path.basename(str(m.get("path", ""))) or "—", "path": m.get("path", "—"),
            "producer": m.get("producer") or "—", "opset": m.get("opset", "—"), "ir_version": m.get("ir_version", "—"),
            "inputs": ", ".join(f"{i.get('name')} [{'x'.join(str(d) for d in i.get('shape', []))}] {i.get('dtype')}"
                                for i in inputs),
            "logits": f"{(m.get('logits') or {}).get('tensor', '—')} ({(m.get('logits') or {}).get('kind', '—')})",
            "batch": f"fixed at {m['fixed_batch']}" if m.get("fixed_batch") else "dynamic",
            "n_parameters": m.get("n_parameters"), "sha256": m.get("sha256", "—"),
            "op_types": ", ".join(f"{k} ×{v}" for k, v in (m.get("op_types") or {}).items()) or "—"}


def _status(result: CompareResult, c: int) -> str:
    if result.classes.regressed[c]:
        return "regressed"
    if result.classes.improved[c]:
        return "improved"
    return "absent" if result.classes.count[c] == 0 else ""


def _summary(result: CompareResult, names: Sequence[str]) -> dict[str, Any]:
    cl = result.classes
    regressed = [{"name": _name(names, c), "change": float(cl.accuracy_change[c]), "p_holm": float(cl.p_holm[c])}
                 for c in result.regressed_classes()]
    improved = [{"name": _name(names, int(c)), "change": float(cl.accuracy_change[c])}
                for c in np.flatnonzero(cl.improved)]
    return {"baseline": _model(result.baseline), "candidate": _model(result.candidate),
            "inputs": result.inputs.line, "overall": result.overall, "regressed": regressed, "improved": improved,
            "agreement": result.agreement.overall_top1, "gate": result.gate, "alpha": cl.alpha,
            "confidence": cl.confidence, "n_samples": result.overall.n_samples,
            "source": result.data.get("source", "—"), "notes": list(result.data.get("notes") or [])}


def _ranked(result: CompareResult) -> list[int]:
    """Classes by accuracy change, largest drop first; absent classes last."""
    change = np.where(np.isnan(result.classes.accuracy_change), np.inf, result.classes.accuracy_change)
    return [int(c) for c in np.argsort(change, kind="stable")]


def _per_class(result: CompareResult, names: Sequence[str]) -> dict[str, Any]:
    cl = result.classes
    order = _ranked(result)
    rows = [{"name": _name(names, c), "count": int(cl.count[c]), "acc_b": float(cl.accuracy_baseline[c]),
             "acc_c": float(cl.accuracy_candidate[c]), "change": float(cl.accuracy_change[c]),
             "low": float(cl.interval_low[c]), "high": float(cl.interval_high[c]), "loss_b": float(cl.loss_baseline[c]),
             "loss_c": float(cl.loss_candidate[c]), "b": int(cl.only_baseline[c]), "c": int(cl.only_candidate[c]),
             "p": float(cl.p_value[c]), "p_holm": float(cl.p_holm[c]), "status": _status(result, c)} for c in order]
    shown = [c for c in order if cl.count[c] > 0][:cf.MAX_CHART_CLASSES]
    uri = cf.accuracy_change_chart([_name(names, c) for c in shown], cl.accuracy_change[shown],
                                   cl.interval_low[shown], cl.interval_high[shown],
                                   [_status(result, c) for c in shown], confidence=cl.confidence)
    present = int((cl.count > 0).sum())
    note = (f"The chart shows the {len(shown)} classes whose accuracy fell most (or rose least) of {present}."
            if present > len(shown) else "")
    return {"rows": rows, "uri": uri, "note": note}


def _focus(result: CompareResult, n: int = FOCUS_CLASSES) -> list[int]:
    """Classes of the pairs that gained most errors, then the regressed ones, at most ``n``."""
    out: list[int] = []
    for c in [x for a, b, *_ in result.pairs_gained(None) for x in (a, b)] + result.regressed_classes() + \
            _ranked(result):
        if c not in out:
            out.append(c)
        if len(out) >= n:
            break
    return sorted(out)


def _pairs(result: CompareResult, names: Sequence[str]) -> dict[str, Any]:
    k = result.n_classes
    delta = result.confusion_change
    focus = list(range(k)) if k <= LARGE_K else _focus(result)
    uri = cf.change_heatmap(delta[np.ix_(focus, focus)], [_name(names, c) for c in focus],
                            title="confusion change C_candidate − C_baseline",
                            colorbar="samples (red: more in the candidate)")
    labels = [_name(names, c) for c in focus]
    block = np.ix_(focus, focus)
    both = [figures.confusion_heatmap(m[block], labels, row_totals=m[focus].sum(axis=1), title=f"confusion, {role}")
            for role, m in (("baseline", result.confusion_baseline), ("candidate", result.confusion_candidate))]
    note = (f"Showing {len(focus)} of {k} classes: those of the pairs that gained most errors and the regressed "
            "classes." if len(focus) < k else "")
    gained = [{"a": _name(names, a), "b": _name(names, b), "before": pb, "after": pc, "change": d}
              for a, b, pb, pc, d in result.pairs_gained(PAIR_ROWS)]
    off = delta.astype(np.float64)
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off > 0)
    order = np.lexsort((p, t, -off[t, p]))[:PAIR_ROWS]
    directed = [{"true": _name(names, int(t[j])), "pred": _name(names, int(p[j])),
                 "before": int(result.confusion_baseline[t[j], p[j]]),
                 "after": int(result.confusion_candidate[t[j], p[j]]), "change": int(off[t[j], p[j]])} for j in order]
    errors_b = int(result.confusion_baseline.sum() - np.trace(result.confusion_baseline))
    errors_c = int(result.confusion_candidate.sum() - np.trace(result.confusion_candidate))
    return {"uri": uri, "note": note, "gained": gained, "directed": directed, "errors_b": errors_b,
            "errors_c": errors_c, "baseline_uri": both[0], "candidate_uri": both[1]}


def _flips(result: CompareResult, names: Sequence[str]) -> dict[str, Any]:
    shown: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for g in result.flips:
        entry: dict[str, Any] = {"true": _name(names, g.true), "pred": _name(names, g.predicted), "count": g.count,
                 "indices": ", ".join(str(i) for i in g.indices[:12]) + (" …" if g.count > 12 else "")}
        if g.examples:
            entry["examples"] = [{"index": e.index, "text": e.text, "p_b": e.baseline_probability,
                                  "p_c": e.candidate_probability,
                                  "uri": None if e.thumbnail is None else figures.thumbnail_uri(e.thumbnail)}
                                 for e in g.examples]
            shown.append(entry)
        elif len(rest) < GROUP_ROWS:
            rest.append(entry)
    total = sum(g.count for g in result.flips)
    return {"groups": shown, "rest": rest, "n_groups": len(result.flips), "total": total,
            "fixed": int(result.overall.only_candidate)}


def _agreement(result: CompareResult, names: Sequence[str]) -> dict[str, Any]:
    ag = result.agreement
    rows: list[dict[str, Any]] = [
        {"name": _name(names, c), "count": int(result.classes.count[c]), "top1": float(ag.top1[c]),
         "mean_abs": float(ag.mean_abs_logit_difference[c]), "max_abs": float(ag.max_abs_logit_difference[c]),
         "kl": float(ag.mean_kl[c])} for c in range(result.n_classes)]
    if result.n_classes > LARGE_K:
        rows.sort(key=lambda r: (math.isnan(r["top1"]), r["top1"]))
    return {"overall": ag, "rows": rows, "sorted": result.n_classes > LARGE_K}


def _interference(result: CompareResult, names: Sequence[str]) -> dict[str, Any] | None:
    change = result.interference
    if change is None:
        return None
    k = result.n_classes
    rose = change.rose(PAIR_ROWS)
    focus = list(range(k)) if k <= LARGE_K else sorted({c for a, b, *_ in rose for c in (a, b)})[:FOCUS_CLASSES]
    uri = cf.change_heatmap(change.change[np.ix_(focus, focus)], [_name(names, c) for c in focus],
                            title="pair score change (candidate − baseline)", colorbar="change of the pair score",
                            xlabel="class", ylabel="class", fmt="+.2f") if focus else None
    return {"uri": uri, "description": change.description, "max_increase": change.max_increase,
            "rose": [{"a": _name(names, a), "b": _name(names, b), "before": pb, "after": pc, "change": d}
                     for a, b, pb, pc, d in rose]}


def _method(result: CompareResult) -> dict[str, Any]:
    return {"options": sorted(result.options.to_dict().items()), "data": dict(result.data),
            "versions": sorted(dict(result.versions).items()), "provider": result.provider,
            "timings": [(k, fmt_seconds(v) if k.endswith("_s") else fmt_num(v)) for k, v in result.timings.items()],
            "schema_version": result.schema_version, "created": result.created,
            "baseline": _model(result.baseline), "candidate": _model(result.candidate),
            "alpha": result.options.alpha, "confidence": result.options.confidence}


def compare_context(result: CompareResult, title: str | None = None) -> dict[str, Any]:
    """Everything the comparison template shows (figures included), from one result."""
    names = [str(n) for n in result.class_names]
    base = os.path.basename(str(result.baseline.get("path", ""))) or "baseline"
    cand = os.path.basename(str(result.candidate.get("path", ""))) or "candidate"
    return {"title": title or f"Comparison: {base} → {cand}", "sections": COMPARE_SECTIONS, "k": result.n_classes,
            "summary": _summary(result, names), "per_class": _per_class(result, names),
            "pairs": _pairs(result, names), "flips": _flips(result, names), "agreement": _agreement(result, names),
            "interference": _interference(result, names), "method": _method(result), "created": result.created}


def render_compare_report(result: CompareResult, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the comparison report of ``result`` to ``path`` as one self-contained HTML file, atomically.

    Parameters
    ----------
    result : CompareResult
        What :func:`auditor.compare` returned, or ``CompareResult.load`` of a results.json.
    path : path-like
    title : str, optional
        Page title (default: "Comparison: BASELINE FILE → CANDIDATE FILE").

    Returns
    -------
    Path
    """
    return render_template("compare.html.j2", compare_context(result, title), path)
