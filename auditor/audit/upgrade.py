"""Read results.json files of schema 1: recompute what the stored cross-class test allows.

Schema 1 stored the pair score ``S = max(I[a, b], I[b, a])`` (ill-conditioned, see
docs/concepts.md, "Interference"), no soft pair confusion Q and no agreement. The pair score
R, the ill-conditioned rows and the agreement of R with P are functions of the stored
CCT losses and confusion, so :func:`upgrade_v1` recomputes them exactly as an audit
would; Q needs the model's probabilities and stays undefined (re-audit to get it). The
gate is re-evaluated by :func:`auditor.audit.AuditResult.from_dict` with the stored
bounds, except ``max_interference``, whose schema-1 bounds were meant for S.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from auditor.agreement import score_agreement
from auditor.cct import CrossClassTestResult
from auditor.confusion import error_share, pair_confusion
from auditor.interference import (
    ILL_CONDITIONED_FRACTION,
    ill_conditioned,
    loss_changes,
    mean_loss,
    pair_score,
    ranked_pairs,
)
from auditor.serialization import json_array

__all__ = ["upgrade_v1", "UPGRADE_NOTE"]

UPGRADE_NOTE = ("read from a results.json of schema 1.0: the pair score R, its ranking and its agreement with P "
                "were recomputed from the stored cross-class test; the soft pair confusion Q was not measured "
                "(run `auditor audit` again to get it); the gate was re-evaluated with max_interference bounding R")


def upgrade_v1(d: Mapping[str, Any], schema_version: str) -> dict[str, Any]:
    """A schema-1 results dict rewritten as schema ``schema_version`` (2.x).

    Raises KeyError, TypeError, ValueError or IndexError on a malformed file (the caller
    turns them into one :class:`~auditor.errors.ResultsError`).
    """
    out = copy.deepcopy(dict(d))
    cct = CrossClassTestResult.from_dict(d["cct"])
    loss = mean_loss(cct)
    delta, alpha_1 = loss_changes(cct)
    r, one_sided = pair_score(delta, loss)
    a, b = np.nonzero(np.triu(one_sided, 1))
    out["interference"] = dict(
        d["interference"], pair_score=json_array(r), one_sided=[[int(x), int(y)] for x, y in zip(a, b)],
        alpha_1=json_array(alpha_1), mean_loss=float(loss) if np.isfinite(loss) else None,
        ill_conditioned=[int(c) for c in np.flatnonzero(ill_conditioned(cct.base_loss(), loss))],
        ill_conditioned_fraction=ILL_CONDITIONED_FRACTION)
    old = d["errors"]
    confusion = np.asarray(old["confusion"], dtype=np.int64)
    fractions = [float(f) for f in old["share"]]
    out["errors"] = error_share(confusion, fractions, tiebreak=r).to_dict()
    listed = max(len(d["top_pairs"]["interference"]), len(d["top_pairs"]["confusion"]))
    out["top_pairs"] = {"interference": [list(p) for p in ranked_pairs(r, listed)],
                        "confusion": [list(p) for p in out["errors"]["pairs"][:listed]]}
    out["agreement"] = score_agreement(r, pair_confusion(confusion).astype(np.float64)).to_dict()
    out["schema_version"] = schema_version
    out["notes"] = [*d.get("notes", []), UPGRADE_NOTE]
    return out
