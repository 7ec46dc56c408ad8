"""The pre-deployment gate: warn and fail bounds on documented quantities.

See CONCEPTS.md, "Pre-deployment gate". A check whose quantity is undefined (NaN, e.g.
no dancing log) is "skipped", never "passed". The CLI exits 1 when any check fails.

Configure from the command line (``--gate worst_class_accuracy=0.9:0.8``, bounds as
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
from typing import Any

import numpy as np

from .errors import OptionError

__all__ = ["Check", "QUANTITIES", "DEFAULT_CHECKS", "evaluate_gate", "parse_check", "load_gate_config"]


def _worst_class_accuracy(r: Any) -> float:
    acc = np.asarray(r["per_class"]["accuracy"], dtype=object)
    values = [float(a) for a in acc if a is not None]
    return min(values) if values else math.nan


def _overall_accuracy(r: Any) -> float:
    c = np.asarray(r["errors"]["confusion"], dtype=np.float64)
    return float(np.trace(c) / c.sum()) if c.sum() else math.nan


def _top_pair_error_share(r: Any) -> float:
    share = r["errors"]["cumulative_share"]
    if r["errors"]["n_errors"] == 0:
        return 0.0
    return float(share[0]) if share else math.nan


def _max_interference(r: Any) -> float:
    s = np.asarray(r["interference"]["pair_score"], dtype=object)
    values = [float(v) for v in s.ravel() if v is not None]
    return max(values) if values else math.nan


def _late_dance_rate(r: Any) -> float:
    dance = r.get("dance")
    if not dance:
        return math.nan
    values = [float(v) for v in dance.get("dance_rate", []) if v is not None]
    return max(values) if values else math.nan


#: name -> (direction, description, extractor over the results.json dict)
QUANTITIES: dict[str, tuple[str, str, Callable[[Any], float]]] = {
    "worst_class_accuracy": ("min", "lowest per-class accuracy A_c at θ*", _worst_class_accuracy),
    "overall_accuracy": ("min", "accuracy over all audit samples at θ*", _overall_accuracy),
    "top_pair_error_share": ("max", "share of all errors carried by the most confused pair", _top_pair_error_share),
    "max_interference": ("max", "largest pair score S (finite-step interference)", _max_interference),
    "late_dance_rate": ("max", "largest per-class dance rate over the last half of training",
                        _late_dance_rate),
}


@dataclass(frozen=True)
class Check:
    """One gate check: ``name`` from :data:`QUANTITIES`, a warn and a fail bound.

    For a "min" quantity the check warns below ``warn`` and fails below ``fail``; for a
    "max" quantity, above.
    """

    name: str
    warn: float | None
    fail: float | None

    def __post_init__(self) -> None:
        if self.name not in QUANTITIES:
            raise OptionError(f"unknown gate check {self.name!r}; choose from {', '.join(QUANTITIES)}")
        direction = QUANTITIES[self.name][0]
        if self.warn is not None and self.fail is not None:
            if (direction == "min" and self.fail > self.warn) or (direction == "max" and self.fail < self.warn):
                word = "below" if direction == "min" else "above"
                raise OptionError(f"gate check {self.name}: the fail bound ({self.fail}) must be {word} or equal to "
                                  f"the warn bound ({self.warn}), since {self.name} is bad when it is "
                                  f"{'low' if direction == 'min' else 'high'}")


#: Checks applied when none are given: loose bounds that flag a clearly broken model.
DEFAULT_CHECKS = (
    Check("worst_class_accuracy", warn=0.9, fail=0.5),
    Check("top_pair_error_share", warn=0.5, fail=0.9),
    Check("max_interference", warn=5.0, fail=50.0),
    Check("late_dance_rate", warn=0.05, fail=0.25),
)


def _status(direction: str, value: float, warn: float | None, fail: float | None) -> str:
    if math.isnan(value):
        return "skipped"
    worse = (lambda v, b: v < b) if direction == "min" else (lambda v, b: v > b)
    if fail is not None and worse(value, fail):
        return "fail"
    if warn is not None and worse(value, warn):
        return "warn"
    return "pass"


def evaluate_gate(results: Mapping[str, Any], checks: Sequence[Check] = DEFAULT_CHECKS) -> dict[str, Any]:
    """Verdicts of every check on a results.json dict.

    Returns ``{"verdict": "pass"|"warn"|"fail", "checks": [...]}``, each check with its
    name, description, direction, value (None when undefined), warn and fail bounds and
    status. The verdict is the worst status; skipped checks do not count as passed.
    """
    rows = []
    for check in checks:
        direction, description, extract = QUANTITIES[check.name]
        value = float(extract(results))
        rows.append({"name": check.name, "description": description, "direction": direction,
                     "value": None if math.isnan(value) else value, "warn": check.warn, "fail": check.fail,
                     "status": _status(direction, value, check.warn, check.fail)})
    statuses = {r["status"] for r in rows}
    verdict = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    return {"verdict": verdict, "checks": rows}


def parse_check(text: str) -> Check:
    """``name=WARN:FAIL`` (either bound may be empty) -> :class:`Check`."""
    name, sep, bounds = text.partition("=")
    warn_text, colon, fail_text = bounds.partition(":")
    if not sep or not colon:
        raise OptionError(f"--gate {text!r}: expected NAME=WARN:FAIL, e.g. worst_class_accuracy=0.9:0.8")
    try:
        warn = float(warn_text) if warn_text.strip() else None
        fail = float(fail_text) if fail_text.strip() else None
    except ValueError as err:
        raise OptionError(f"--gate {text!r}: bounds must be numbers, e.g. worst_class_accuracy=0.9:0.8") from err
    return Check(name.strip(), warn, fail)


def load_gate_config(path: str | Path) -> list[Check]:
    """Checks from a TOML file with one ``[gate.NAME]`` table per check."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"gate config '{p}' does not exist; give a TOML file with [gate.NAME] tables")
    try:
        config = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise OptionError(f"gate config '{p}' is not valid TOML ({err})") from err
    table = config.get("gate")
    if not isinstance(table, dict) or not table:
        raise OptionError(f"gate config '{p}' has no [gate.NAME] tables; e.g. [gate.worst_class_accuracy] "
                          "with warn = 0.9 and fail = 0.8")
    checks = []
    for name, bounds in table.items():
        if not isinstance(bounds, dict) or not set(bounds) <= {"warn", "fail"}:
            raise OptionError(f"gate config '{p}': [gate.{name}] may hold only warn and fail")
        checks.append(Check(name, _number(bounds.get("warn"), p, name), _number(bounds.get("fail"), p, name)))
    return checks


def _number(v: Any, p: Path, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OptionError(f"gate config '{p}': [gate.{name}] bounds must be numbers, got {v!r}")
    return float(v)
