"""Exit 2 with one line for every bad file or option a user can give; 101 only for our own bugs.

Damaged inputs are made systematically (truncated model files, results.json with each key
removed or of the wrong type, broken dancing logs), so a new reader path that lets a
user's file reach "internal error" fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from auditor.cli import app

runner = CliRunner()


def _invoke(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def _one_error_line(result: Any, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("error:", "internal error:"))]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return str(lines[0])


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small audit (results.json) and its model and data, made once for the module."""
    from .conftest import make_mlp, random_mlp_weights

    root = tmp_path_factory.mktemp("audited")
    rng = np.random.default_rng(0)
    model = make_mlp(root / "mlp.onnx", random_mlp_weights(4, 6, 3))
    np.savez(root / "data.npz", x=rng.standard_normal((30, 4)).astype(np.float32), y=np.arange(30) % 3)
    result = _invoke("audit", model, "--data", root / "data.npz", "--out", root / "out", "--grid", "3", "--pairs",
                     "1", "--quiet", "--gate", "worst_class_accuracy=0:0", "--no-report")
    assert result.exit_code == 0, result.output
    return {"model": model, "data": root / "data.npz", "results": root / "out" / "results.json", "root": root}


def _mutations(results: dict[str, Any]) -> list[tuple[str, Any]]:
    """results.json with each top-level key removed, or replaced by a value of the wrong type."""
    out: list[tuple[str, Any]] = []
    for key in results:
        if key in ("created",):  # optional
            continue
        out.append((f"without {key}", {k: v for k, v in results.items() if k != key}))
        for bad in (5, "text", [], {"x": 1}):
            if type(bad) is not type(results[key]) and not (results[key] is None and bad == {"x": 1}):
                out.append((f"{key}={bad!r}", {**results, key: bad}))
    out.append(("per_class.loss truncated", {**results, "per_class": {**results["per_class"],
                                                                       "loss": results["per_class"]["loss"][:1]}}))
    out.append(("cct.loss ragged", {**results, "cct": {**results["cct"], "loss": [[1.0], [1.0, 2.0]]}}))
    return out


def test_every_damaged_results_file_is_one_line_and_exit_2(audited: dict[str, Path], tmp_path: Path) -> None:
    good = json.loads(audited["results"].read_text())
    cases = _mutations(good)
    assert len(cases) > 40
    internal = []
    for name, damaged in cases:
        path = tmp_path / "r.json"
        path.write_text(json.dumps(damaged))
        result = _invoke("report", path, "--out", tmp_path / "r.html")
        if result.exit_code == 0:
            continue  # a key the report can do without (e.g. timings)
        if result.exit_code != 2:
            internal.append((name, result.output.strip().splitlines()[-1]))
            continue
        line = _one_error_line(result)
        assert "results" in line, (name, line)
    assert not internal, internal


@pytest.mark.parametrize(("content", "message"), [
    ("not json at all", r"is not a readable JSON results file"),
    ("[1, 2, 3]", r"holds a JSON list, not an audit's results"),
    ('{"schema_version": "9.0"}', r"schema version 9\.0 is not supported"),
    ('{"schema_version": "1.0"}', r"incomplete or malformed"),
])
def test_report_and_dance_refuse_bad_results_in_one_line(content: str, message: str, tmp_path: Path) -> None:
    from auditor.demo import demo_paths

    path = tmp_path / "results.json"
    path.write_text(content)
    assert re.search(message, _one_error_line(_invoke("report", path, "--out", tmp_path / "x.html")))
    line = _one_error_line(_invoke("dance", demo_paths().dance, "--results", path, "--out", tmp_path / "d"))
    assert re.search(message, line)
    assert not (tmp_path / "d").exists()


def test_truncated_and_corrupted_model_files_are_exit_2(audited: dict[str, Path], tmp_path: Path) -> None:
    raw = audited["model"].read_bytes()
    for cut in (1, 10, len(raw) // 3, len(raw) // 2, len(raw) - 7):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(raw[:cut])
        _one_error_line(_invoke("inspect", path))
    flipped = bytearray(raw)
    flipped[len(raw) // 2: len(raw) // 2 + 16] = b"\xff" * 16
    (tmp_path / "flipped.onnx").write_bytes(bytes(flipped))
    result = _invoke("inspect", tmp_path / "flipped.onnx")
    assert result.exit_code in (0, 2), result.output  # may still parse: then it is a (different) valid model


def _external(tmp_path: Path, location: str) -> Path:
    w = numpy_helper.from_array(np.ones((6, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    sub = tmp_path / "sub"
    sub.mkdir(exist_ok=True)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), sub / "m.onnx",
              save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "outside.bin").write_bytes((sub / "w.bin").read_bytes())
    m = onnx.load(sub / "m.onnx", load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(m, sub / "moved.onnx")
    return sub / "moved.onnx"


@pytest.mark.parametrize(("location", "message"), [
    ("../outside.bin", r"point to an external data file outside the model's folder .*move the data file there"),
    ("missing.bin", r"live in external data files that could not be read .*keep them next to the model file"),
])
def test_external_data_outside_the_folder_or_missing(tmp_path: Path, location: str, message: str) -> None:
    assert re.search(message, _one_error_line(_invoke("inspect", _external(tmp_path, location))))


@pytest.mark.parametrize(("content", "message"), [
    ("", r"is empty"),
    ('{"format": "something else"}\n', r"not a label-dancing log"),
    ('{"format": "auditor-label-dancing", "version": 1, "labels": [0, 1], "n_classes": 2}\n'
     '{"step": 0, "pred": [0, 1]}\n', r"needs at least 2"),
    ("\x00\x01\x02 binary", r"not a label-dancing log|not valid"),
])
def test_dance_refuses_bad_logs_in_one_line(content: str, message: str, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(content)
    assert re.search(message, _one_error_line(_invoke("dance", log, "--out", tmp_path / "d")))


def test_dance_option_errors(tmp_path: Path) -> None:
    assert "either a LOG or --checkpoints" in _one_error_line(_invoke("dance", "--out", tmp_path / "d"))
    assert "--checkpoints needs --data" in _one_error_line(_invoke("dance", "--checkpoints", "x*.onnx"))
    np.savez(tmp_path / "p.npz", x=np.zeros((4, 2), np.float32), y=np.arange(4) % 2)
    assert "no checkpoint matches" in _one_error_line(
        _invoke("dance", "--checkpoints", str(tmp_path / "none_*.onnx"), "--data", tmp_path / "p.npz"))


def test_exit_101_only_for_an_internal_fault(audited: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr("auditor.audit.pipeline.cct_stage", bug)
    result = _invoke("audit", audited["model"], "--data", audited["data"], "--out", tmp_path / "o", "--quiet")
    line = _one_error_line(result, code=101)
    assert line == ("internal error: ZeroDivisionError: a bug of ours. This is a bug in the auditor; rerun with "
                    "--debug and report the traceback.")
    assert not (tmp_path / "o").exists()
