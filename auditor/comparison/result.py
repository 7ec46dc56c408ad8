"""The result of a comparison: what its results.json holds and what its report is drawn from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from auditor.confusion import pair_confusion
from auditor.errors import ResultsError
from auditor.gate import GateResult

from .inputs import InputMatch
from .options import CompareOptions
from .parts import Agreement, ClassComparison, FlipGroup, InterferenceChange, OverallComparison

__all__ = ["CompareResult", "SCHEMA_VERSION", "KIND"]

#: Version of the comparison's results.json (docs/compare-schema.md); independent of the audit's.
SCHEMA_VERSION = "1.0"
#: The ``kind`` field that tells a comparison's results.json from an audit's.
KIND = "compare"


@dataclass(frozen=True, eq=False)
class CompareResult:
    """Everything one comparison of a baseline and a candidate export measured.

    Attributes
    ----------
    baseline, candidate : dict
        :meth:`auditor.model.Model.summary` of each model.
    inputs : InputMatch
        How the candidate's inputs were paired with the baseline's, and what differs.
    data : dict
        Source, fingerprint, sample count and per-class counts of the data.
    class_names : list of str
        K names (class ids as text when neither the data nor the models carry names).
    options : CompareOptions
    classes : ClassComparison
        Per class: accuracies, losses, the change, its interval, McNemar and Holm.
    overall : OverallComparison
    confusion_baseline, confusion_candidate : ndarray of shape (K, K), int64
        Rows true, columns predicted.
    flips : tuple of FlipGroup
        Samples that went from right to wrong, by (true class, new prediction), largest first.
    agreement : Agreement
    provider : str
        The device that really ran.
    timings : dict of str to float
    versions : dict of str to str
    interference : InterferenceChange or None
        Pair scores of both models, with ``--interference``.
    gate : GateResult or None
    """

    baseline: Mapping[str, Any]
    candidate: Mapping[str, Any]
    inputs: InputMatch
    data: Mapping[str, Any]
    class_names: list[str]
    options: CompareOptions
    classes: ClassComparison
    overall: OverallComparison
    confusion_baseline: np.ndarray
    confusion_candidate: np.ndarray
    flips: tuple[FlipGroup, ...]
    agreement: Agreement
    provider: str
    timings: Mapping[str, float]
    versions: Mapping[str, str]
    interference: InterferenceChange | None = None
    gate: GateResult | None = None
    schema_version: str = SCHEMA_VERSION
    created: str = ""

    def __post_init__(self) -> None:
        self.confusion_baseline.flags.writeable = False
        self.confusion_candidate.flags.writeable = False

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def confusion_change(self) -> np.ndarray:
        """``C_candidate - C_baseline`` (int64, K x K)."""
        return np.asarray(self.confusion_candidate - self.confusion_baseline, dtype=np.int64)

    def regressed_classes(self) -> list[int]:
        """The regressed classes, largest accuracy drop first."""
        idx = np.flatnonzero(self.classes.regressed)
        return [int(c) for c in idx[np.argsort(self.classes.accuracy_change[idx], kind="stable")]]

    @property
    def max_class_accuracy_drop(self) -> float:
        """The largest accuracy drop among classes whose change is significant (Holm); 0 when none dropped."""
        change = self.classes.accuracy_change[self.classes.significant]
        return float(max(0.0, -float(change.min()))) if change.size else 0.0

    def pairs_gained(self, top: int | None = 10) -> list[tuple[int, int, int, int, int]]:
        """Unordered pairs whose pair confusion P rose: ``(a, b, P_baseline, P_candidate, change)``, a < b.

        Largest rise first (ties: lower pair first).
        """
        pb = pair_confusion(self.confusion_baseline)
        pc = pair_confusion(self.confusion_candidate)
        a, b = np.triu_indices(self.n_classes, 1)
        delta = pc[a, b] - pb[a, b]
        order = [j for j in np.lexsort((b, a, -delta)) if delta[j] > 0][:top]
        return [(int(a[j]), int(b[j]), int(pb[a[j], b[j]]), int(pc[a[j], b[j]]), int(delta[j])) for j in order]

    def with_gate(self, gate: GateResult | None) -> CompareResult:
        return replace(self, gate=gate)

    def to_dict(self) -> dict[str, Any]:
        from auditor.serialization import to_jsonable

        out: dict[str, Any] = to_jsonable({
            "schema_version": self.schema_version, "kind": KIND, "created": self.created,
            "versions": dict(self.versions), "provider": self.provider, "timings": dict(self.timings),
            "baseline": dict(self.baseline), "candidate": dict(self.candidate), "inputs": self.inputs.to_dict(),
            "data": dict(self.data), "class_names": self.class_names, "options": self.options.to_dict(),
            "per_class": self.classes.to_dict(), "overall": self.overall.to_dict(),
            "confusion": {"baseline": self.confusion_baseline.tolist(), "candidate": self.confusion_candidate.tolist(),
                          "change": self.confusion_change.tolist()},
            "pairs_gained": [list(p) for p in self.pairs_gained(None)],
            "flips": [g.to_dict() for g in self.flips], "agreement": self.agreement.to_dict(),
            "interference": None if self.interference is None else self.interference.to_dict(),
            "gate": None if self.gate is None else self.gate.to_dict(),
        })
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompareResult:
        """Read a results.json written by :func:`auditor.save.save_compare`.

        Raises
        ------
        ResultsError
            A missing, unreadable, non-JSON, malformed or unsupported file.
        """
        from auditor.serialization import read_results_json

        data = read_results_json(path, "compare", "a comparison's")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompareResult:
        if d.get("kind") != KIND:
            raise ResultsError("these results are not a comparison's (no \"kind\": \"compare\"); an audit's "
                               "results.json is read with AuditResult.load")
        version = str(d.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ResultsError(f"comparison schema version {version or 'missing'} is not supported (this auditor "
                               f"reads {SCHEMA_VERSION}); run `auditor compare` again to regenerate results.json")
        try:
            return cls(
                baseline=d["baseline"], candidate=d["candidate"], inputs=InputMatch.from_dict(d["inputs"]),
                data=d["data"], class_names=[str(n) for n in d["class_names"]],
                options=CompareOptions.from_dict(d["options"]), classes=ClassComparison.from_dict(d["per_class"]),
                overall=OverallComparison.from_dict(d["overall"]),
                confusion_baseline=np.asarray(d["confusion"]["baseline"], dtype=np.int64),
                confusion_candidate=np.asarray(d["confusion"]["candidate"], dtype=np.int64),
                flips=tuple(FlipGroup.from_dict(g) for g in d["flips"]), agreement=Agreement.from_dict(d["agreement"]),
                provider=d["provider"], timings=d["timings"], versions=d["versions"],
                interference=None if d.get("interference") is None else InterferenceChange.from_dict(d["interference"]),
                gate=None if d.get("gate") is None else GateResult.from_dict(d["gate"]),
                schema_version=version, created=d.get("created", ""))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise ResultsError(f"the comparison's results.json is incomplete or malformed ({type(err).__name__}: "
                               f"{err}); run `auditor compare` again to regenerate it") from err
