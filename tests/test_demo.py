"""The bundled demo end to end: `auditor demo` writes a complete results.json and report."""

from __future__ import annotations

import html as htmllib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from auditor.cli import app

from .conftest import r_from_results


def test_demo_writes_a_complete_audit(demo_run: dict[str, Any], tmp_path: Path) -> None:
    out, output = demo_run["out"], demo_run["output"]
    assert f"report: {(out / 'report.html').resolve()}" in output
    data = json.loads((out / "results.json").read_text())
    assert data["model"]["n_classes"] == 10 and data["class_names"][3] == "digit 3"
    assert data["data"]["n_samples"] == 899 and data["gradient_data"]["n_samples"] == 898
    assert len(data["cct"]["ego_classes"]) == 10 and len(data["cct"]["alphas"]) == 21
    # the budget sizes the 2-D models: at least the smallest design, exactly what the design names
    design = data["cost"]["design"]
    assert design["chosen_by"] == "budget" and len(data["interference_models"]) == len(design["pairs"]) >= 1
    assert [[m["a"], m["b"]] for m in data["interference_models"]] == design["pairs"]
    assert data["cost"]["actual"]["cct"]["evaluations"] == 10 * 20  # α = 0 is the unperturbed pass
    assert "plan: ≈" in output and "2-D models: " in output
    assert data["dance"] is not None and set(data["dance"]["agreement"]) >= {"interference", "confusion"}
    assert {c["name"] for c in data["gate"]["checks"]} >= {"worst_class_accuracy", "late_dance_rate"}
    assert all(c["status"] != "skipped" for c in data["gate"]["checks"])  # the log makes every check defined
    html = (out / "report.html").read_text()
    assert "digit 8" in html and "data:image/png;base64," in html
    assert "why: top pairs by pair score R" in output and "interference explains" in output

    # the same log, compared with this audit from the dance command
    from auditor.demo import demo_paths

    dance = CliRunner().invoke(app, ["dance", str(demo_paths().dance), "--results", str(out / "results.json"),
                                     "--out", str(tmp_path / "dance")])
    assert dance.exit_code == 0, dance.output
    agreement = json.loads((tmp_path / "dance" / "dance.json").read_text())["agreement"]
    assert agreement == data["dance"]["agreement"]


def test_dance_from_the_demo_checkpoints(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    ckpts = root / "examples" / "digits" / "checkpoints"
    probe = root / "auditor" / "demo" / "digits_test.npz"
    result = CliRunner().invoke(app, ["dance", "--checkpoints", str(ckpts / "epoch_*.onnx"), "--data", str(probe),
                                      "--out", str(tmp_path / "d"), "--max-per-class", "20"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "d" / "dance.json").read_text())
    assert len(data["steps"]) == 12 and data["steps"][:3] == [1, 2, 3]
    assert len(data["labels"]) == 200
    assert (tmp_path / "d" / "dance.html").stat().st_size > 1000


def _table_pairs(html: str, table_id: str) -> list[str]:
    table = html[html.index(f'<table id="{table_id}"'):]
    table = table[:table.index("</table>")]
    return [htmllib.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<tr[^>]*>\s*<td>(.*?)</td>", table, flags=re.S)]


def test_demo_ranks_pairs_by_r_and_reports_the_agreement(demo_run: dict[str, Any]) -> None:
    out = demo_run["out"]
    data = json.loads((out / "results.json").read_text())
    names = data["class_names"]
    assert data["schema_version"] == "2.1"
    # R from the stored CCT losses, independently: the results and the report rank by it
    r = r_from_results(data)
    np.testing.assert_allclose(np.array(data["interference"]["pair_score"], dtype=np.float64), r, rtol=1e-9)
    a, b = np.triu_indices(len(names), 1)
    order = np.argsort(-r[a, b], kind="stable")[:5]
    top_r = [(int(a[j]), int(b[j])) for j in order]
    assert [tuple(p[:2]) for p in data["top_pairs"]["interference"][:5]] == top_r
    html = (out / "report.html").read_text(encoding="utf-8")
    assert _table_pairs(html, "pairs-interference") == [f"{names[x]} / {names[y]}" for x, y in top_r]
    # where the errors are: by P, ties by R
    conf = np.asarray(data["errors"]["confusion"])
    p = (conf + conf.T)[a, b]
    where = sorted(range(len(a)), key=lambda j: (-p[j], -r[a[j], b[j]]))[:5]
    assert _table_pairs(html, "pairs-confusion") == [f"{names[a[j]]} / {names[b[j]]}" for j in where]
    # the soft confusion: probabilities summed by class, rows sum to the class counts
    soft = np.asarray(data["errors"]["soft_confusion"])
    np.testing.assert_allclose(soft.sum(axis=1), data["per_class"]["count"], rtol=1e-5)
    # the agreement, in results.json and as a paragraph in the report
    g = data["agreement"]
    assert g["n_pairs"] == 45 and g["k"] == 5 and g["k_fraction"] == 5
    paragraph = re.search(r'<p id="agreement"[^>]*>(.*?)</p>', html, flags=re.S)
    assert paragraph is not None
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", paragraph.group(1)))
    assert "On this model interference explains" in text and f"AUC {g['auc']:.2f}" in text
