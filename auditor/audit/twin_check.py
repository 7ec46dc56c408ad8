"""How faithful a float32 twin is to the graph as deployed (fp16 and int8 exports).

An fp16 or int8 export is audited through its float32 twin (:mod:`auditor.twin`): the
gradients and the cross-class test run on the twin, while the base metrics the report
leads with are the deployed graph's. :class:`TwinCheck` puts both side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.runtime import StepStats
from auditor.serialization import array_from_json, json_array

__all__ = ["TwinCheck", "twin_check"]


@dataclass(frozen=True, eq=False)
class TwinCheck:
    """The deployed graph's and the twin's base metrics on the audit data.

    Attributes
    ----------
    kind : str
        What the export was (:attr:`auditor.model.Model.precision`).
    deployed_loss, deployed_accuracy : ndarray of shape (K,)
        ``L_c`` and ``A_c`` of the graph as exported (these are the audit's base metrics).
    twin_loss, twin_accuracy : ndarray of shape (K,)
        The same of the float32 twin, which the gradients and the CCT use.
    top1_agreement : float
        Share of audit samples with the same argmax in both.
    mean_abs_logit_difference, max_abs_logit_difference : float
        Over all samples and classes.
    """

    kind: str
    deployed_loss: np.ndarray
    deployed_accuracy: np.ndarray
    twin_loss: np.ndarray
    twin_accuracy: np.ndarray
    top1_agreement: float
    mean_abs_logit_difference: float
    max_abs_logit_difference: float

    _ARRAYS = ("deployed_loss", "deployed_accuracy", "twin_loss", "twin_accuracy")

    def __post_init__(self) -> None:
        for name in self._ARRAYS:
            getattr(self, name).flags.writeable = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{n: json_array(getattr(self, n)) for n in self._ARRAYS},
                "top1_agreement": self.top1_agreement, "mean_abs_logit_difference": self.mean_abs_logit_difference,
                "max_abs_logit_difference": self.max_abs_logit_difference}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TwinCheck:
        arrays = {n: array_from_json(d[n]) for n in cls._ARRAYS}
        return cls(kind=str(d["kind"]), **arrays, top1_agreement=float(d["top1_agreement"]),
                   mean_abs_logit_difference=float(d["mean_abs_logit_difference"]),
                   max_abs_logit_difference=float(d["max_abs_logit_difference"]))


def twin_check(kind: str, deployed_logits: np.ndarray, twin_logits: np.ndarray, y: np.ndarray,
               n_classes: int) -> tuple[TwinCheck, StepStats]:
    """Compare the two graphs' logits on the same samples; also return the deployed graph's sums."""
    deployed = StepStats.from_logits(deployed_logits, y, n_classes)
    twin = StepStats.from_logits(twin_logits, y, n_classes)
    diff = np.abs(np.asarray(deployed_logits, np.float64) - np.asarray(twin_logits, np.float64))
    assert deployed.predictions is not None and twin.predictions is not None
    check = TwinCheck(kind, deployed.loss, deployed.accuracy, twin.loss, twin.accuracy,
                      float(np.mean(deployed.predictions == twin.predictions)), float(diff.mean()), float(diff.max()))
    return check, deployed
