"""The pre-deployment gate: warn and fail bounds on documented quantities of a result.

See docs/concepts.md, "Pre-deployment gate". A check whose quantity is undefined (NaN, e.g. no
dancing log) is "skipped", never "passed". The CLI exits 1 when any check fails.

Each kind of result has its own table of quantities (:data:`AUDIT_QUANTITIES` for an
audit, :data:`COMPARE_QUANTITIES` for ``auditor compare``), read from the typed result
object, never from its JSON. Configure from the command line (``--gate worst_class_accuracy=0.9:0.8``, bounds as
``WARN:FAIL``) or a TOML file::

    [gate.worst_class_accuracy]
    warn = 0.9
    fail = 0.8
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import numpy as np

from .errors import OptionError

if TYPE_CHECKING:
    from .audit import AuditResult
    from .comparison import CompareResult

__all__ = ["Quantity", "Check", "CheckResult", "GateResult", "AUDIT_QUANTITIES", "DEFAULT_CHECKS", "evaluate_gate",
           "parse_check", "load_gate_config", "Status", "COMPARE_QUANTITIES", "DEFAULT_COMPARE_CHECKS"]

R = TypeVar("R")
Direction = Literal["min", "max"]
Status = Literal["pass", "warn", "fail", "skipped"]
Verdict = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Quantity(Generic[R]):
    """A number a gate check can bound.

    Attributes
    ----------
    name : str
    direction : {"min", "max"}
        "min": bad when low (warn below the warn bound); "max": bad when high.
    description : str
        One line for the report and the CLI.
    extract : callable
        ``extract(result) -> float``; NaN when undefined.
    """

    name: str
    direction: Direction
    description: str
    extract: Callable[[R], float]


@dataclass(frozen=True)
class Check:
    """One gate check: a quantity's name, a warn and a fail bound (either may be None)."""

    name: str
    warn: float | None
    fail: float | None


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check.

    Attributes
    ----------
    name, description : str
    direction : {"min", "max"}
    value : float
        The quantity; NaN when undefined (then ``status`` is "skipped").
    warn, fail : float or None
    status : {"pass", "warn", "fail", "skipped"}
    """

    name: str
    description: str
    direction: Direction
    value: float
    warn: float | None
    fail: float | None
    status: Status

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "direction": self.direction,
                "value": None if math.isnan(self.value) else self.value, "warn": self.warn, "fail": self.fail,
                "status": self.status}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckResult:
        return cls(d["name"], d["description"], d["direction"], math.nan if d["value"] is None else float(d["value"]),
                   d["warn"], d["fail"], d["status"])


@dataclass(frozen=True)
class GateResult:
    """Every check's verdict and the overall verdict (the worst status; skipped checks do not pass)."""

    verdict: Verdict
    checks: tuple[CheckResult, ...]

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        return cls(d["verdict"], tuple(CheckResult.from_dict(c) for c in d["checks"]))


# ------------------------------------------------------------------------------------ the audit's quantities


def _worst_class_accuracy(r: AuditResult) -> float:
    acc = r.accuracy[np.isfinite(r.accuracy)]
    return float(acc.min()) if acc.size else math.nan


def _top_pair_error_share(r: AuditResult) -> float:
    if r.errors.n_errors == 0:
        return 0.0
    share = r.errors.cumulative_share
    return float(share[0]) if len(share) else math.nan


def _max_interference(r: AuditResult) -> float:
    """The largest pair score R (never I or I1: they inherit the 1/L_c conditioning)."""
    s = r.interference.pair_score
    values = s[np.isfinite(s)]
    return float(values.max()) if values.size else math.nan


def _late_dance_rate(r: AuditResult) -> float:
    if r.dance is None:
        return math.nan
    rate = r.dance.dance_rate[np.isfinite(r.dance.dance_rate)]
    return float(rate.max()) if rate.size else math.nan


#: The quantities an audit's gate can bound.
AUDIT_QUANTITIES: dict[str, Quantity[AuditResult]] = {q.name: q for q in (
    Quantity("worst_class_accuracy", "min", "lowest per-class accuracy A_c at θ*", _worst_class_accuracy),
    Quantity("overall_accuracy", "min", "accuracy over all audit samples at θ*", lambda r: r.overall_accuracy),
    Quantity("top_pair_error_share", "max", "share of all errors carried by the most confused pair",
             _top_pair_error_share),
    Quantity("max_interference", "max", "largest pair score R (loss a pair's classes gain from each other's first "
             "step, relative to the mean loss)", _max_interference),
    Quantity("late_dance_rate", "max", "largest per-class dance rate over the last half of training",
             _late_dance_rate),
)}

#: Checks applied when none are given: loose bounds that flag a clearly broken model.
#: ``max_interference`` (max R) is an outlier flag, not a quality measure: over the 120
#: models of the validation study (docs/validation.md) max R rises as a model fits
#: (median 4.4, 95th percentile 21, largest 39; under-trained models 0.03 to 0.16), so
#: it warns above nearly every model measured and fails far beyond any.
DEFAULT_CHECKS = (
    Check("worst_class_accuracy", warn=0.9, fail=0.5),
    Check("top_pair_error_share", warn=0.5, fail=0.9),
    Check("max_interference", warn=25.0, fail=100.0),
    Check("late_dance_rate", warn=0.05, fail=0.25),
)


# ------------------------------------------------------------------------------------ a comparison's quantities


def _max_pair_score_increase(r: CompareResult) -> float:
    return math.nan if r.interference is None else r.interference.max_increase


#: The quantities the gate of ``auditor compare`` can bound (baseline versus candidate).
COMPARE_QUANTITIES: dict[str, Quantity[CompareResult]] = {q.name: q for q in (
    Quantity("max_class_accuracy_drop", "max", "largest per-class accuracy drop among classes whose change is "
             "significant (exact McNemar, Holm); 0 when none dropped", lambda r: r.max_class_accuracy_drop),
    Quantity("regressed_classes", "max", "classes whose accuracy fell significantly (exact McNemar, Holm-corrected "
             "p < alpha)", lambda r: float(np.count_nonzero(r.classes.regressed))),
    Quantity("agreement", "min", "share of samples on which both models predict the same class",
             lambda r: r.agreement.overall_top1),
    Quantity("overall_accuracy_drop", "max", "baseline minus candidate accuracy over all samples",
             lambda r: -r.overall.accuracy_change),
    Quantity("mean_kl", "max", "mean KL divergence of the candidate's softmax from the baseline's",
             lambda r: r.agreement.overall_mean_kl),
    Quantity("max_pair_score_increase", "max", "largest rise of a pair's interference pair score "
             "(needs --interference)", _max_pair_score_increase),
)}

#: Checks of a comparison when none are given: any significant class regression fails.
DEFAULT_COMPARE_CHECKS = (
    Check("regressed_classes", warn=0, fail=0),
    Check("max_class_accuracy_drop", warn=0.01, fail=0.05),
    Check("agreement", warn=0.99, fail=0.9),
)


# ------------------------------------------------------------------------------------ evaluation


def validate(check: Check, quantities: Mapping[str, Quantity[Any]]) -> Quantity[Any]:
    """The check's quantity; an unknown name or bounds in the wrong order are an OptionError."""
    quantity = quantities.get(check.name)
    if quantity is None:
        raise OptionError(f"unknown gate check {check.name!r}; choose from {', '.join(quantities)}")
    if check.warn is not None and check.fail is not None:
        low = quantity.direction == "min"
        if (low and check.fail > check.warn) or (not low and check.fail < check.warn):
            raise OptionError(f"gate check {check.name}: the fail bound ({check.fail}) must be "
                              f"{'below' if low else 'above'} or equal to the warn bound ({check.warn}), since "
                              f"{check.name} is bad when it is {'low' if low else 'high'}")
    return quantity


def _status(direction: Direction, value: float, warn: float | None, fail: float | None) -> Status:
    if math.isnan(value):
        return "skipped"

    def worse(v: float, bound: float) -> bool:
        return v < bound if direction == "min" else v > bound

    if fail is not None and worse(value, fail):
        return "fail"
    if warn is not None and worse(value, warn):
        return "warn"
    return "pass"


def evaluate_gate(result: R, checks: Sequence[Check] = DEFAULT_CHECKS,
                  quantities: Mapping[str, Quantity[R]] | None = None) -> GateResult:
    """Verdicts of every check on a result object.

    Parameters
    ----------
    result : AuditResult (or the result type ``quantities`` reads)
    checks : sequence of Check, default=DEFAULT_CHECKS
    quantities : mapping of str to Quantity, optional
        The table the check names refer to (default: :data:`AUDIT_QUANTITIES`).

    Returns
    -------
    GateResult
    """
    table: Mapping[str, Quantity[Any]] = AUDIT_QUANTITIES if quantities is None else quantities
    rows = []
    for check in checks:
        q = validate(check, table)
        value = float(q.extract(result))
        rows.append(CheckResult(check.name, q.description, q.direction, value, check.warn, check.fail,
                                _status(q.direction, value, check.warn, check.fail)))
    statuses = {r.status for r in rows}
    verdict: Verdict = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    return GateResult(verdict, tuple(rows))


def parse_check(text: str, quantities: Mapping[str, Quantity[Any]] | None = None) -> Check:
    """``name=WARN:FAIL`` (either bound may be empty) -> :class:`Check`, validated."""
    name, sep, bounds = text.partition("=")
    warn_text, colon, fail_text = bounds.partition(":")
    if not sep or not colon:
        raise OptionError(f"--gate {text!r}: expected NAME=WARN:FAIL, e.g. worst_class_accuracy=0.9:0.8")
    try:
        warn = float(warn_text) if warn_text.strip() else None
        fail = float(fail_text) if fail_text.strip() else None
    except ValueError as err:
        raise OptionError(f"--gate {text!r}: bounds must be numbers, e.g. worst_class_accuracy=0.9:0.8") from err
    check = Check(name.strip(), warn, fail)
    validate(check, AUDIT_QUANTITIES if quantities is None else quantities)
    return check


def load_gate_config(path: str | Path, quantities: Mapping[str, Quantity[Any]] | None = None) -> list[Check]:
    """Checks from a TOML file with one ``[gate.NAME]`` table per check, validated."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"gate config '{p}' does not exist; give a TOML file with [gate.NAME] tables")
    try:
        config = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise OptionError(f"gate config '{p}' is not valid TOML ({err})") from err
    table = config.get("gate")
    if not isinstance(table, dict) or not table:
        raise OptionError(f"gate config '{p}' has no [gate.NAME] tables; e.g. [gate.worst_class_accuracy] "
                          "with warn = 0.9 and fail = 0.8")
    checks = []
    for name, bounds in table.items():
        if not isinstance(bounds, dict) or not set(bounds) <= {"warn", "fail"}:
            raise OptionError(f"gate config '{p}': [gate.{name}] may hold only warn and fail")
        check = Check(name, _number(bounds.get("warn"), p, name), _number(bounds.get("fail"), p, name))
        validate(check, AUDIT_QUANTITIES if quantities is None else quantities)
        checks.append(check)
    return checks


def _number(v: Any, p: Path, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OptionError(f"gate config '{p}': [gate.{name}] bounds must be numbers, got {v!r}")
    return float(v)
