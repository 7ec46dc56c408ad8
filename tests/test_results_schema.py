"""results.json schema 2.0, and reading schema-1.0 files (R and its agreement recomputed from the stored CCT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from auditor import AuditResult
from auditor.agreement import score_agreement
from auditor.audit.upgrade import UPGRADE_NOTE
from auditor.cli import app
from auditor.errors import ResultsError
from auditor.gate import DEFAULT_CHECKS
from tests.report_fixtures import synthetic

from .conftest import r_from_results


def test_schema_1_file_is_upgraded() -> None:
    old = synthetic.small()
    assert old["schema_version"] == "1.0"
    result = AuditResult.from_dict(old)
    assert result.schema_version == "2.1" and result.notes == (UPGRADE_NOTE,)
    r = r_from_results(old)
    np.testing.assert_allclose(result.interference.pair_score, r, rtol=1e-12, equal_nan=True)
    # S was stored; R replaces it and changes the ranking of this model's pairs
    s = np.array([[np.nan if v is None else v for v in row] for row in old["interference"]["pair_score"]])
    assert not np.allclose(np.nan_to_num(s), np.nan_to_num(r))
    values = [v for _, _, v in result.top_pairs_interference]
    assert values == sorted(values, reverse=True) and len(values) == len(old["top_pairs"]["interference"])
    a, b, v = result.top_pairs_interference[0]
    assert v == pytest.approx(np.nanmax(r)) and r[a, b] == pytest.approx(v)
    # stored numbers that need no model are kept
    np.testing.assert_array_equal(result.interference.finite,
                                  np.array([[np.nan if x is None else x for x in row]
                                            for row in old["interference"]["finite"]]))
    # no probabilities were stored: Q is undefined, and the report says to re-audit
    assert result.errors.soft_confusion is None and result.errors.soft_pairs() is None
    p = np.asarray(old["errors"]["confusion"]) + np.asarray(old["errors"]["confusion"]).T
    assert result.agreement == score_agreement(r, p.astype(np.float64))
    # the gate: max_interference now bounds R, with the default bounds; the others keep theirs
    assert result.gate is not None
    checks = {c.name: c for c in result.gate.checks}
    default = next(c for c in DEFAULT_CHECKS if c.name == "max_interference")
    assert (checks["max_interference"].warn, checks["max_interference"].fail) == (default.warn, default.fail)
    assert checks["max_interference"].value == pytest.approx(np.nanmax(r))
    stored = {c["name"]: c for c in old["gate"]["checks"]}
    assert (checks["worst_class_accuracy"].warn, checks["worst_class_accuracy"].fail) == (
        stored["worst_class_accuracy"]["warn"], stored["worst_class_accuracy"]["fail"])


def test_upgraded_result_round_trips_as_schema_2() -> None:
    upgraded = AuditResult.from_dict(synthetic.small()).to_dict()
    assert upgraded["schema_version"] == "2.1" and upgraded["errors"]["soft_confusion"] is None
    again = AuditResult.from_dict(json.loads(json.dumps(upgraded)))
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(upgraded, sort_keys=True)


@pytest.mark.parametrize("version", ["3.0", "0.9", None])
def test_other_versions_are_refused_in_one_line(version: str | None) -> None:
    d = synthetic.small()
    if version is None:
        del d["schema_version"]
    else:
        d["schema_version"] = version
    with pytest.raises(ResultsError, match=r"not supported .*run `auditor audit` again") as err:
        AuditResult.from_dict(d)
    assert "\n" not in str(err.value)


def test_report_command_reads_both_versions(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(synthetic.small()), encoding="utf-8")
    out = CliRunner().invoke(app, ["report", str(v1), "--out", str(tmp_path / "v1.html")])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "v1.html").read_text(encoding="utf-8")
    assert "schema 1.0" in html and "Q is not in this results file" in html
    v3 = tmp_path / "v3.json"
    v3.write_text(json.dumps(dict(synthetic.small(), schema_version="3.0")), encoding="utf-8")
    out = CliRunner().invoke(app, ["report", str(v3), "--out", str(tmp_path / "v3.html")])
    assert out.exit_code == 2 and "not supported" in out.output and not (tmp_path / "v3.html").exists()
