"""The result of an audit: what results.json holds and what the report is drawn from."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from auditor.agreement import ScoreAgreement
from auditor.budget import AuditCost
from auditor.cct import CrossClassTestResult
from auditor.confusion import ErrorShare, pair_confusion
from auditor.dancing import DanceAnalysis
from auditor.errors import OptionError, ResultsError
from auditor.examples import PairExamples
from auditor.gate import DEFAULT_CHECKS, Check, GateResult, evaluate_gate
from auditor.interference import InterferenceResult
from auditor.landscape import Flatness, InterferenceModel

from .options import AuditOptions
from .twin_check import TwinCheck

__all__ = ["AuditResult", "SCHEMA_VERSION", "versions"]

SCHEMA_VERSION = "2.1"
#: Older major versions :meth:`AuditResult.from_dict` still reads (see :mod:`auditor.audit.upgrade`).
READABLE_MAJOR_VERSIONS = ("1", "2")


@dataclass(frozen=True, eq=False)
class AuditResult:
    """Everything one audit measured (docs/concepts.md names throughout).

    Attributes
    ----------
    model : dict
        :meth:`auditor.model.Model.summary` of the audited model.
    data, gradient_data : dict
        Source, fingerprint, sample count and per-class counts of the audit data and of
        the data the gradients came from (the same set unless ``--gradient-data``).
    class_names : list of str
        K names (class ids as text when the data have none).
    options : AuditOptions
    loss, accuracy : ndarray of shape (K,)
        ``L_c(θ*)`` and ``A_c(θ*)`` on the audit data; NaN for absent classes.
    counts : ndarray of shape (K,)
    gradient_norm : ndarray of shape (K,)
        ``||g_c||``; NaN where not computed.
    alpha_max : ndarray of shape (K,)
        α_max per ego class; NaN for classes without a direction.
    skipped : dict of int to str
        Classes without a direction or CCT row, with the reason.
    cct : CrossClassTestResult
    interference : InterferenceResult
    flatness : Flatness
    errors : ErrorShare
    top_pairs_interference : list of (int, int, float)
        Pairs by the pair score R, largest first ("why": with C and the 2-D models).
    top_pairs_confusion : list of (int, int, float)
        Pairs by pair confusion P, ties broken by R ("where the errors are").
    agreement : ScoreAgreement
        How far R's ranking agrees with P on the audit data (see :mod:`auditor.agreement`).
    models : list of InterferenceModel
    candidates : dict
        How the ego classes were chosen.
    provider : str
        The device that really ran.
    timings : dict of str to float
        Seconds per stage.
    versions : dict of str to str
    gate : GateResult or None
        The gate's verdicts (see :mod:`auditor.gate`), when one ran.
    dance : DanceAnalysis or None
        A label-dancing analysis (see :mod:`auditor.dancing`) with its agreement with this
        audit's pairs, when a log or checkpoints were given.
    cost : AuditCost or None
        Planned and actual cost of every stage, the budget and the 2-D models' design
        (see :mod:`auditor.budget`); None in results from before schema 2.1.
    examples : tuple of PairExamples
        A few misclassified samples of the most confused pairs (thumbnails or texts).
    twin : TwinCheck or None
        For an fp16 or int8 export: its deployed graph's base metrics (which ``loss``,
        ``accuracy`` and ``errors`` hold) beside those of the float32 twin the gradients
        and the CCT ran on.
    notes : tuple of str
        How this result was read, when not as written (e.g. upgraded from schema 1.0).
    """

    model: Mapping[str, Any]
    data: Mapping[str, Any]
    gradient_data: Mapping[str, Any]
    class_names: list[str]
    options: AuditOptions
    loss: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    gradient_norm: np.ndarray
    alpha_max: np.ndarray
    skipped: Mapping[int, str]
    cct: CrossClassTestResult
    interference: InterferenceResult
    flatness: Flatness
    errors: ErrorShare
    top_pairs_interference: list[tuple[int, int, float]]
    top_pairs_confusion: list[tuple[int, int, float]]
    agreement: ScoreAgreement
    models: list[InterferenceModel]
    candidates: Mapping[str, Any]
    provider: str
    timings: Mapping[str, float]
    versions: Mapping[str, str]
    gate: GateResult | None = None
    dance: DanceAnalysis | None = None
    cost: AuditCost | None = None
    schema_version: str = SCHEMA_VERSION
    created: str = ""
    examples: tuple[PairExamples, ...] = ()
    twin: TwinCheck | None = None
    notes: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def overall_accuracy(self) -> float:
        c = self.errors.confusion
        return float(np.trace(c) / c.sum()) if c.sum() else float("nan")

    def worst_class(self) -> tuple[int, float]:
        """The class with the lowest accuracy among present classes."""
        acc = np.where(np.isnan(self.accuracy), np.inf, self.accuracy)
        c = int(np.argmin(acc))
        return c, float(self.accuracy[c])

    def agreeing_pairs(self, top: int | None = None) -> list[tuple[int, int]]:
        """Pairs in both top lists (by R and by confusion), each list cut to ``top`` pairs."""
        a = {(x, y) for x, y, _ in self.top_pairs_interference[:top]}
        return [(x, y) for x, y, _ in self.top_pairs_confusion[:top] if (x, y) in a]

    def with_gate(self, gate: GateResult | None) -> AuditResult:
        return replace(self, gate=gate)

    def with_dance(self, dance: DanceAnalysis | None) -> AuditResult:
        """This result with a label-dancing analysis, compared with this audit's pairs."""
        if dance is None:
            return replace(self, dance=None)
        if dance.n_classes != self.n_classes:
            raise OptionError(f"the dancing log has {dance.n_classes} classes but the audit has {self.n_classes}; "
                              "compare a log and an audit of the same model")
        return replace(self, dance=dance.with_agreement(self.interference.pair_score,
                                                        pair_confusion(self.errors.confusion).astype(np.float64)))

    def to_dict(self) -> dict[str, Any]:
        from auditor.serialization import to_jsonable

        out: dict[str, Any] = to_jsonable({
            "schema_version": self.schema_version, "created": self.created, "versions": dict(self.versions),
            "provider": self.provider, "timings": dict(self.timings), "model": dict(self.model),
            "data": dict(self.data), "gradient_data": dict(self.gradient_data), "class_names": self.class_names,
            "options": self.options.to_dict(),
            "per_class": {"loss": self.loss, "accuracy": self.accuracy, "count": self.counts,
                          "gradient_norm": self.gradient_norm, "alpha_max": self.alpha_max},
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "cct": self.cct.to_dict(), "interference": self.interference.to_dict(),
            "flatness": self.flatness.to_dict(), "errors": self.errors.to_dict(),
            "top_pairs": {"interference": [list(p) for p in self.top_pairs_interference],
                          "confusion": [list(p) for p in self.top_pairs_confusion]},
            "agreement": self.agreement.to_dict(), "notes": list(self.notes),
            "interference_models": [m.to_dict() for m in self.models],
            "candidates": dict(self.candidates), "gate": None if self.gate is None else self.gate.to_dict(),
            "dance": None if self.dance is None else self.dance.to_dict(),
            "cost": None if self.cost is None else self.cost.to_dict(),
            "examples": [e.to_dict() for e in self.examples],
            "twin": None if self.twin is None else self.twin.to_dict(),
        })
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AuditResult:
        """Read a results.json written by :func:`auditor.save.save_audit`.

        Raises
        ------
        ResultsError
            A missing, unreadable, non-JSON, malformed or unsupported file.
        """
        from auditor.serialization import read_results_json

        data = read_results_json(path, "audit", "an audit's")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditResult:
        """Read :meth:`to_dict`; a schema-1.0 dict is upgraded first (:mod:`auditor.audit.upgrade`)."""
        from auditor.serialization import array_from_json

        from .upgrade import upgrade_v1

        version = str(d.get("schema_version", ""))
        major = version.split(".")[0]
        if major not in READABLE_MAJOR_VERSIONS:
            raise ResultsError(f"results schema version {version or 'missing'} is not supported (this auditor "
                               f"reads {SCHEMA_VERSION} and 1.0); run `auditor audit` again to regenerate "
                               "results.json")
        try:
            if major == "1":
                d = upgrade_v1(d, SCHEMA_VERSION)
            pc = d["per_class"]
            result = cls(
                model=_mapping(d, "model"), data=_mapping(d, "data"), gradient_data=_mapping(d, "gradient_data"),
                class_names=_strings(d["class_names"]), options=AuditOptions.from_dict(_mapping(d, "options")),
                loss=array_from_json(pc["loss"]), accuracy=array_from_json(pc["accuracy"]),
                counts=np.asarray(pc["count"], dtype=np.int64), gradient_norm=array_from_json(pc["gradient_norm"]),
                alpha_max=array_from_json(pc["alpha_max"]),
                skipped={int(k): str(v) for k, v in _mapping(d, "skipped").items()},
                cct=CrossClassTestResult.from_dict(d["cct"]),
                interference=InterferenceResult.from_dict(d["interference"]),
                flatness=Flatness.from_dict(d["flatness"]), errors=ErrorShare.from_dict(d["errors"]),
                top_pairs_interference=[(int(a), int(b), float(v)) for a, b, v in d["top_pairs"]["interference"]],
                top_pairs_confusion=[(int(a), int(b), float(v)) for a, b, v in d["top_pairs"]["confusion"]],
                agreement=ScoreAgreement.from_dict(d["agreement"]),
                models=[InterferenceModel.from_dict(m) for m in d["interference_models"]],
                candidates=_mapping(d, "candidates"), provider=_text(d, "provider"),
                timings={str(k): float(v) for k, v in _mapping(d, "timings").items()},
                versions={str(k): str(v) for k, v in _mapping(d, "versions").items()},
                gate=None if d.get("gate") is None else GateResult.from_dict(d["gate"]),
                dance=None if d.get("dance") is None else DanceAnalysis.from_dict(d["dance"]),
                cost=None if d.get("cost") is None else AuditCost.from_dict(d["cost"]),
                schema_version=str(d["schema_version"]), created=str(d.get("created", "")),
                examples=tuple(PairExamples.from_dict(e) for e in d.get("examples", ())),
                twin=None if d.get("twin") is None else TwinCheck.from_dict(d["twin"]),
                notes=tuple(str(n) for n in d.get("notes", [])))
            result.check_shapes()
            if major == "1":
                result = result._rechecked()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise ResultsError(f"results.json is incomplete or malformed ({type(err).__name__}: {err}); run "
                               "`auditor audit` again to regenerate it") from err
        return result

    def check_shapes(self) -> None:
        """Every array agrees with K, the α grid and the ego classes (ValueError if not)."""
        k = len(self.class_names)
        for name in ("loss", "accuracy", "counts", "gradient_norm", "alpha_max"):
            _expect(getattr(self, name), (k,), f"per_class.{name}")
        for name in ("conflict", "first_order", "finite", "pair_score"):
            _expect(getattr(self.interference, name), (k, k), f"interference.{name}")
        _expect(self.errors.confusion, (k, k), "errors.confusion")
        n_ego, n_alpha = len(self.cct.ego_classes), len(self.cct.alphas)
        for name in ("loss", "accuracy"):
            _expect(getattr(self.cct, name), (n_ego, k, n_alpha), f"cct.{name}")
        classes = [c for p in self.top_pairs_interference + self.top_pairs_confusion for c in p[:2]]
        classes += [c for m in self.models for c in (m.a, m.b)] + list(self.cct.ego_classes)
        classes += [c for e in self.examples for c in (e.a, e.b)]
        classes += [c for e in self.examples for s in e.samples for c in (s.true, s.predicted)]
        if any(not 0 <= c < k for c in classes):
            raise ValueError(f"a class id outside 0..{k - 1}")

    def _rechecked(self) -> AuditResult:
        """An upgraded schema-1 result: the dance compared with R, the gate re-evaluated.

        The stored checks keep their bounds, except ``max_interference``, whose schema-1
        bounds were meant for S: it gets the default bounds for R.
        """
        result = self.with_dance(self.dance) if self.dance is not None else self
        if self.gate is None:
            return result
        default = {c.name: c for c in DEFAULT_CHECKS}
        checks = [default.get(c.name, Check(c.name, c.warn, c.fail)) if c.name == "max_interference"
                  else Check(c.name, c.warn, c.fail) for c in self.gate.checks]
        return result.with_gate(evaluate_gate(result, checks))

def _mapping(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d[key]
    if not isinstance(value, Mapping):
        raise TypeError(f"'{key}' is a {type(value).__name__}, expected an object")
    return value


def _text(d: Mapping[str, Any], key: str) -> str:
    value = d[key]
    if not isinstance(value, str):
        raise TypeError(f"'{key}' is a {type(value).__name__}, expected a string")
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("'class_names' must be a list of strings")
    return list(value)


def _expect(a: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if np.shape(a) != shape:
        raise ValueError(f"{name} has shape {np.shape(a)}, expected {shape}")


def versions() -> dict[str, str]:
    import onnx
    import onnx_ad
    import onnxruntime

    from auditor import __version__

    return {"auditor": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnx_ad": onnx_ad.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


