"""The gate: pass / warn / fail / skipped on documented quantities, and its configuration."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from auditor.confusion import error_share
from auditor.errors import OptionError
from auditor.gate import Check, GateResult, evaluate_gate, load_gate_config, parse_check


def _results(acc: list[float | None], confusion: list[list[int]], s: list[list[float | None]],
             dance: list[float | None] | None = None) -> Any:
    """The fields of an AuditResult the gate reads (NaN where the JSON has null)."""

    def floats(v: Any) -> np.ndarray:
        return np.array([[math.nan if x is None else x for x in row] for row in v] if np.ndim(v) == 2
                        else [math.nan if x is None else x for x in v], dtype=np.float64)

    errors = error_share(np.array(confusion))
    c = errors.confusion
    return SimpleNamespace(accuracy=floats(acc), errors=errors, interference=SimpleNamespace(pair_score=floats(s)),
                           overall_accuracy=float(np.trace(c) / c.sum()),
                           dance=None if dance is None else SimpleNamespace(dance_rate=floats(dance)))


RESULTS = _results([0.95, 0.7, None], [[19, 1, 0], [6, 14, 0], [0, 0, 0]],
                   [[None, 1.5, None], [1.5, None, 0.2], [None, 0.2, None]])


@pytest.mark.parametrize(("check", "status", "value"), [
    (Check("worst_class_accuracy", warn=0.6, fail=0.5), "pass", 0.7),
    (Check("worst_class_accuracy", warn=0.8, fail=0.5), "warn", 0.7),
    (Check("worst_class_accuracy", warn=0.9, fail=0.75), "fail", 0.7),
    (Check("top_pair_error_share", warn=0.5, fail=1.0), "warn", 1.0),
    (Check("top_pair_error_share", warn=0.5, fail=0.99), "fail", 1.0),
    (Check("max_interference", warn=1.0, fail=2.0), "warn", 1.5),
    (Check("max_interference", warn=1.0, fail=1.2), "fail", 1.5),
    (Check("overall_accuracy", warn=0.8, fail=0.7), "pass", 33 / 40),
    (Check("late_dance_rate", warn=0.1, fail=0.2), "skipped", None),
])
def test_each_check_status(check: Check, status: str, value: float | None) -> None:
    gate = evaluate_gate(RESULTS, [check])
    row = gate.checks[0]
    assert row.status == status
    if value is None:
        assert math.isnan(row.value)
    else:
        assert row.value == pytest.approx(value)
    assert gate.verdict == {"pass": "pass", "skipped": "pass", "warn": "warn", "fail": "fail"}[status]
    assert GateResult.from_dict(gate.to_dict()).to_dict() == gate.to_dict()
    assert gate.to_dict()["checks"][0]["value"] == (None if value is None else pytest.approx(value))


def test_late_dance_rate_is_checked_when_a_log_is_given() -> None:
    r = _results([1.0, 1.0], [[5, 0], [0, 5]], [[None, None], [None, None]], dance=[0.01, 0.3])
    gate = evaluate_gate(r, [Check("late_dance_rate", 0.05, 0.25), Check("max_interference", 1, 2)])
    assert [c.status for c in gate.checks] == ["fail", "skipped"]
    assert gate.checks[0].value == pytest.approx(0.3)
    assert gate.verdict == "fail" and gate.failed


def test_worst_status_wins() -> None:
    gate = evaluate_gate(RESULTS, [Check("worst_class_accuracy", 0.8, 0.5), Check("max_interference", 1.0, 1.2)])
    assert [c.status for c in gate.checks] == ["warn", "fail"] and gate.verdict == "fail"


@pytest.mark.parametrize(("text", "message"), [
    ("worst_class_accuracy", "expected NAME=WARN:FAIL"),
    ("worst_class_accuracy=0.9", "expected NAME=WARN:FAIL"),
    ("worst_class_accuracy=a:b", "bounds must be numbers"),
    ("nonsense=1:2", "unknown gate check 'nonsense'"),
    ("worst_class_accuracy=0.5:0.9", "fail bound .* must be below"),
    ("max_interference=2:1", "fail bound .* must be above"),
])
def test_bad_gate_options(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        parse_check(text)


def test_gate_config_toml(tmp_path: Path) -> None:
    p = tmp_path / "gate.toml"
    p.write_text("[gate.worst_class_accuracy]\nwarn = 0.9\nfail = 0.8\n[gate.max_interference]\nfail = 3\n")
    assert load_gate_config(p) == [Check("worst_class_accuracy", 0.9, 0.8), Check("max_interference", None, 3.0)]
    p.write_text("[gate.worst_class_accuracy]\nwarn = 'high'\n")
    with pytest.raises(OptionError, match="bounds must be numbers"):
        load_gate_config(p)
    p.write_text("gate = 1\n")
    with pytest.raises(OptionError, match=r"no \[gate.NAME\] tables"):
        load_gate_config(p)
    with pytest.raises(OptionError, match="does not exist"):
        load_gate_config(tmp_path / "missing.toml")
