"""Synthetic results for the report tests: a large-K audit and a label-dancing analysis.

``results_small.json`` (next to this file) is a real audit of a tiny CNN (K = 5, from the
smoke run of ``run_audit``), written with results schema 1.0: reading it also exercises the
upgrade to schema 2 (R and its agreement recomputed from the stored CCT; no soft confusion).
The functions here derive, deterministically, what that file cannot show: many classes
(K = 40, one of them absent, with a soft confusion) and a dancing analysis.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.serialization import json_array

if TYPE_CHECKING:
    from auditor.dancing import DanceAnalysis

HERE = Path(__file__).parent
SMALL = HERE / "results_small.json"


def small() -> dict[str, Any]:
    """The committed K = 5 results.json as a dict."""
    return json.loads(SMALL.read_text(encoding="utf-8"))


def large_k(k: int = 40, seed: int = 0, absent: int | None = None) -> dict[str, Any]:
    """A consistent results.json dict with ``k`` classes; class ``absent`` (default: the last) has no samples."""
    from auditor.agreement import score_agreement
    from auditor.audit import AuditResult
    from auditor.cct import CrossClassTestResult
    from auditor.confusion import error_share, pair_confusion
    from auditor.gate import evaluate_gate
    from auditor.interference import ill_conditioned, loss_changes, mean_loss, pair_score, ranked_pairs

    rng = np.random.default_rng(seed)
    d = copy.deepcopy(AuditResult.from_dict(small()).to_dict())  # schema 2
    absent = k - 1 if absent is None else absent
    present = np.array([c for c in range(k) if c != absent])
    names = [f"species {c:02d}" for c in range(k)]
    counts = np.full(k, 20)
    counts[absent] = 0

    confusion = np.zeros((k, k), dtype=np.int64)
    for c in present:
        wrong = rng.integers(0, 8)
        row = rng.multinomial(wrong, np.ones(len(present)) / len(present))
        row[list(present).index(c)] = 0
        confusion[c, present] = row
        confusion[c, c] = 20 - row.sum()
    accuracy = np.full(k, np.nan)
    accuracy[present] = np.diag(confusion)[present] / 20.0
    loss = np.full(k, np.nan)
    loss[present] = rng.uniform(0.1, 1.5, len(present))
    loss[5] = 0.02  # a well-learned class: its rows of I and I1 are flagged ill-conditioned

    alphas = np.asarray(d["cct"]["alphas"], dtype=np.float64)
    a_count = len(alphas)
    cct_loss = np.full((len(present), k, a_count), np.nan)
    for i, c in enumerate(present):
        slope = rng.normal(0.5, 0.6, k)
        slope[c] = -4.0
        curv = rng.uniform(1.0, 8.0, k)
        cct_loss[i] = loss[:, None] + slope[:, None] * alphas[None] + curv[:, None] * alphas[None] ** 2
    cct_acc = np.clip(1 - cct_loss / 3, 0, 1)

    def mat() -> np.ndarray:
        m = np.full((k, k), np.nan)
        m[np.ix_(present, present)] = rng.normal(0.3, 0.5, (len(present), len(present)))
        np.fill_diagonal(m, -1.0)
        m[absent, :] = m[:, absent] = np.nan
        return m

    finite = mat()
    first = finite + rng.normal(0, 0.05, (k, k))
    conflict = mat()
    d["cct"].update(step_scale=[1.0] * len(present), ego_classes=present.tolist(), loss=json_array(cct_loss),
                    accuracy=json_array(cct_acc), flow=None, flow_top_classes=None, flow_top_share=None,
                    counts=counts.tolist())
    cct = CrossClassTestResult.from_dict(d["cct"])
    delta, alpha_1 = loss_changes(cct)
    l_mean = mean_loss(cct)
    score, one_sided = pair_score(delta, l_mean)
    # soft confusion: mostly the hard confusion, the rest spread evenly; rows sum to the counts
    soft = 0.8 * confusion + 0.2 * counts[:, None] * (counts[None, :] > 0) / len(present)
    errors = error_share(confusion, tiebreak=score, soft_confusion=soft).to_dict()
    top_s = ranked_pairs(score, 10)
    top_p = [[a, b, float(n)] for a, b, n in errors["pairs"][:10]]

    vec = np.full(k, np.nan)
    vec[present] = 0.2
    curvature = np.full(k, np.nan)
    curvature[present] = rng.uniform(1, 9, len(present))
    sharpness = np.full(k, np.nan)
    sharpness[present] = rng.uniform(0.01, 0.05, len(present))
    gnorm = np.full(k, np.nan)
    gnorm[present] = rng.uniform(1, 5, len(present))
    alpha_s = np.full(k, np.nan)
    alpha_s[present] = 0.02

    models = []
    for m, (a, b, _) in zip(d["interference_models"], top_s):
        m = dict(m)
        m["a"], m["b"] = int(a), int(b)
        models.append(m)

    d.update(class_names=names, skipped={str(absent): "no samples in the audit data"}, interference_models=models,
             candidates={"rule": "every class with a direction", "classes": None})
    d["model"] = dict(d["model"], n_classes=k)
    for key in ("data", "gradient_data"):
        d[key] = dict(d[key], n_samples=int(counts.sum()), counts=counts.tolist())
    d["per_class"] = {"loss": json_array(loss), "accuracy": json_array(accuracy), "count": counts.tolist(),
                      "gradient_norm": json_array(gnorm), "alpha_max": json_array(vec)}
    d["interference"] = {"conflict": json_array(conflict), "first_order": json_array(first), "finite": json_array(finite),
                         "alpha_s": json_array(alpha_s), "pair_score": json_array(score),
                         "one_sided": [[int(a), int(b)] for a, b in zip(*np.nonzero(np.triu(one_sided, 1)))],
                         "alpha_1": json_array(alpha_1), "mean_loss": l_mean,
                         "ill_conditioned": [int(c) for c in np.flatnonzero(ill_conditioned(loss, l_mean))],
                         "reasons": {}}
    d["flatness"] = {"curvature": json_array(curvature), "sharpness": json_array(sharpness), "rho": json_array(vec / 2)}
    d["errors"] = errors
    d["top_pairs"] = {"interference": [list(p) for p in top_s], "confusion": top_p}
    d["agreement"] = score_agreement(score, pair_confusion(confusion).astype(np.float64)).to_dict()
    d["notes"] = []
    d["gate"] = None
    d["gate"] = evaluate_gate(AuditResult.from_dict(d)).to_dict()
    return d


def dance(k: int = 5, records: int = 30, per_class: int = 12, seed: int = 0) -> DanceAnalysis:
    """A synthetic run's analysis: classes 0 and 1 keep trading samples late in training."""
    from dataclasses import replace

    from auditor.dancing import dance_analysis

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per_class)
    n = len(labels)
    predictions = np.empty((records, n), dtype=np.int64)
    for t in range(records):
        p_right = min(0.2 + t / records, 0.93)
        right = rng.random(n) < p_right
        predictions[t] = np.where(right, labels, rng.integers(0, k, n))
        dancers = (labels == 0) & (rng.random(n) < 0.35)
        predictions[t, dancers] = 1 if t % 2 else 0
    return replace(dance_analysis((predictions, labels), n_classes=k), steps=np.arange(records) * 50)
