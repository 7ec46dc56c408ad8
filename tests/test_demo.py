"""The bundled demo end to end: `auditor demo` writes a complete results.json and report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from auditor.cli import app


def test_demo_writes_a_complete_audit(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report: {(out / 'report.html').resolve()}" in result.output
    data = json.loads((out / "results.json").read_text())
    assert data["model"]["n_classes"] == 10 and data["class_names"][3] == "digit 3"
    assert data["data"]["n_samples"] == 899 and data["gradient_data"]["n_samples"] == 898
    assert len(data["cct"]["ego_classes"]) == 10 and len(data["cct"]["alphas"]) == 21
    # the budget sizes the 2-D models: at least the smallest design, exactly what the design names
    design = data["cost"]["design"]
    assert design["chosen_by"] == "budget" and len(data["interference_models"]) == len(design["pairs"]) >= 1
    assert [[m["a"], m["b"]] for m in data["interference_models"]] == design["pairs"]
    assert data["cost"]["actual"]["cct"]["evaluations"] == 1 + 10 * 20
    assert "plan: ≈" in result.output and "2-D models: " in result.output
    assert data["dance"] is not None and set(data["dance"]["agreement"]) >= {"interference", "confusion"}
    assert {c["name"] for c in data["gate"]["checks"]} >= {"worst_class_accuracy", "late_dance_rate"}
    assert all(c["status"] != "skipped" for c in data["gate"]["checks"])  # the log makes every check defined
    html = (out / "report.html").read_text()
    assert "digit 8" in html and "data:image/png;base64," in html

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
