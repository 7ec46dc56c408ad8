"""The command line: exact exit codes and one-line messages for bad input; audit outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import auditor
from auditor.cli import app

runner = CliRunner()


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def mlp_files(small_mlp: dict, tmp_path: Path) -> dict:
    data = tmp_path / "data.npz"
    np.savez(data, x=small_mlp["x"], y=small_mlp["y"], class_names=np.array(["cat", "dog", "fox", "owl"]))
    return {**small_mlp, "data": data, "out": tmp_path / "out"}


def _audit_args(files: dict, *extra: str) -> list[str]:
    return ["audit", str(files["path"]), "--data", str(files["data"]), "--out", str(files["out"]), "--grid", "5",
            "--pairs", "1", "--quiet", *extra]


def test_audit_writes_results_equal_to_an_independent_computation(mlp_files: dict) -> None:
    from . import numpy_mlp as nref

    result = _invoke(*_audit_args(mlp_files, "--gate", "worst_class_accuracy=0:0", "--gate", "max_interference=1e9:1e9"))
    assert result.exit_code == 0, result.output
    assert "why: top pairs by pair score R" in result.output and "gate: PASS" in result.output
    assert "where the errors are: top pairs by pair confusion P" in result.output
    data = json.loads((mlp_files["out"] / "results.json").read_text())
    w, x, y, k = mlp_files["weights"], mlp_files["x"], mlp_files["y"], 4
    assert data["schema_version"] == "2.1" and data["errors"]["soft_confusion"] is not None
    assert data["class_names"] == ["cat", "dog", "fox", "owl"]
    np.testing.assert_allclose(data["per_class"]["loss"], nref.class_losses(w, x, y, k), rtol=1e-5)
    np.testing.assert_allclose(data["per_class"]["accuracy"], nref.class_accuracies(w, x, y, k))
    np.testing.assert_array_equal(data["errors"]["confusion"], nref.confusion(w, x, y, k))
    assert data["per_class"]["count"] == [12, 12, 12, 12] and data["data"]["n_samples"] == 48
    # the CCT rows come from the exported weights moved along the directions the audit used
    alphas = np.asarray(data["cct"]["alphas"])
    assert len(alphas) == 21 and alphas[10] == 0.0 and np.isclose(alphas[-1], 0.2)  # filter: α_max = 0.2
    assert data["options"]["grid"] == 5 and data["options"]["pairs"] == 1
    models = data["interference_models"]
    # --pairs 1: the top pair by R and the top pair by P (once if they are the same), every point of 5x5
    tops = [data["top_pairs"]["interference"][0][:2], data["top_pairs"]["confusion"][0][:2]]
    expected = [p for i, p in enumerate(tops) if p not in tops[:i]]
    assert [[m["a"], m["b"]] for m in models] == expected == data["cost"]["design"]["pairs"]
    assert all(len(m["s"]) == len(m["t"]) == 5 and m["evaluations"] == 25 for m in models)
    for m in models:  # the 2-D model at θ* is the unperturbed loss of both classes
        np.testing.assert_allclose([m["loss_a"][2][2], m["loss_b"][2][2]],
                                   nref.class_losses(w, x, y, k)[[m["a"], m["b"]]], rtol=1e-5)
    gate = {c["name"]: c for c in data["gate"]["checks"]}
    assert gate["worst_class_accuracy"]["value"] == pytest.approx(min(nref.class_accuracies(w, x, y, k)))
    assert data["gate"]["verdict"] == "pass"
    assert data["provider"] in ("cpu", "cuda")
    again = auditor.AuditResult.from_dict(data)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(data, sort_keys=True)


@pytest.mark.parametrize(("gate", "code", "verdict"), [
    ("worst_class_accuracy=0:0", 0, "PASS"),
    ("worst_class_accuracy=1.01:0", 0, "WARN"),
    ("worst_class_accuracy=1.01:1.005", 1, "FAIL"),
])
def test_gate_exit_codes(mlp_files: dict, gate: str, code: int, verdict: str) -> None:
    result = _invoke(*_audit_args(mlp_files, "--gate", gate, "--no-report"))
    assert result.exit_code == code, result.output
    assert f"gate: {verdict}" in result.output


def test_gate_config_file(mlp_files: dict, tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    cfg.write_text("[gate.overall_accuracy]\nwarn = 1.01\nfail = 1.005\n")
    result = _invoke(*_audit_args(mlp_files, "--gate-config", str(cfg), "--no-report"))
    assert result.exit_code == 1 and re.search(r"fail\W+overall_accuracy\W+0\.3333\W+1\.01\W+1\.005", result.output)


def test_interrupted_audit_leaves_previous_results(mlp_files: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _invoke(*_audit_args(mlp_files, "--gate", "worst_class_accuracy=0:0")).exit_code == 0
    before = (mlp_files["out"] / "results.json").read_bytes()
    report_before = (mlp_files["out"] / "report.html").read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("auditor.audit.pipeline.interference_model", interrupted)
    result = _invoke(*_audit_args(mlp_files, "--classes", "0,1"))
    assert result.exit_code == 130 and "interrupted" in result.output
    assert (mlp_files["out"] / "results.json").read_bytes() == before
    assert (mlp_files["out"] / "report.html").read_bytes() == report_before
    assert sorted(p.name for p in mlp_files["out"].iterdir()) == ["report.html", "results.json"]


def test_report_rerenders_from_results_to_the_same_page(mlp_files: dict, tmp_path: Path) -> None:
    assert _invoke(*_audit_args(mlp_files, "--gate", "worst_class_accuracy=0:0")).exit_code == 0
    out = tmp_path / "again.html"
    result = _invoke("report", mlp_files["out"] / "results.json", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    assert out.read_bytes() == (mlp_files["out"] / "report.html").read_bytes()


def test_inspect_lists_parameters(small_mlp: dict) -> None:
    result = _invoke("inspect", small_mlp["path"])
    assert result.exit_code == 0
    for name in ("w0", "b0", "w1", "b1"):
        assert name in result.output
    assert "K = 4" in result.output
    data = json.loads(_invoke("inspect", small_mlp["path"], "--json").output)
    assert data["n_classes"] == 4 and data["n_parameters"] == 6 * 8 + 8 + 8 * 4 + 4


def _bad_files(tmp_path: Path, small_mlp: dict) -> dict[str, Path]:
    files = {}
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 this is not a protobuf model \xff" * 10)
    files["junk"] = tmp_path / "junk.onnx"
    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "intin.onnx")
    files["int_input"] = tmp_path / "intin.onnx"
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.STRING, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, ["N", 3])])
    w = numpy_helper.from_array(np.ones((4, 6), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 6])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "rank3.onnx")
    files["rank3"] = tmp_path / "rank3.onnx"
    w = numpy_helper.from_array(np.ones((6, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]),
                           helper.make_node("Mystery", ["h"], ["y"], domain="com.example")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
              tmp_path / "custom.onnx")
    files["custom"] = tmp_path / "custom.onnx"
    x, y = small_mlp["x"], small_mlp["y"]
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 5), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "labels.npz", x=x, y=np.where(y == 3, 7, y))
    bad = x.copy()
    bad[5, 2] = np.nan
    bad[9, 0] = np.inf
    np.savez(tmp_path / "nan.npz", x=bad, y=y)
    for name in ("shape", "labels", "nan"):
        files[name] = tmp_path / f"{name}.npz"
    np.savez(tmp_path / "good.npz", x=x, y=y)
    files["good"] = tmp_path / "good.npz"
    return files


BAD_INPUT = [
    ("missing model", lambda f, m: ["audit", "nope.onnx", "--data", f["good"]], "model file 'nope.onnx' does not exist"),
    ("not onnx", lambda f, m: ["inspect", f["junk"]], "is not an ONNX model"),
    ("no weights", lambda f, m: ["inspect", f["int_input"]], "has no floating-point weights that the logits"),
    ("output not [N, K]", lambda f, m: ["inspect", f["rank3"]], r"no output is shaped \[N, K\]"),
    ("missing data", lambda f, m: ["audit", m, "--data", "missing.npz"], "does not exist"),
    ("data shape", lambda f, m: ["audit", m, "--data", f["shape"]], r"sample shape \(5,\)"),
    ("label range", lambda f, m: ["audit", m, "--data", f["labels"]],
     r"data has 12 of 48 labels outside 0\.\.3 \(first: 7 at sample 36\); the model has 4 classes, so labels must be "
     r"0\.\.3$"),
    ("nan in data", lambda f, m: ["audit", m, "--data", f["nan"]], "non-finite"),
    ("custom op", lambda f, m: ["audit", f["custom"], "--data", f["good"]], r"com\.example\.Mystery.*cannot be differentiated"),
    ("bad normalization", lambda f, m: ["audit", m, "--data", f["good"], "--normalization", "fancy"],
     "unknown normalization 'fancy'"),
    ("bad alphas", lambda f, m: ["audit", m, "--data", f["good"], "--alphas", "0.1,0.2"], "must contain 0"),
    ("bad device", lambda f, m: ["audit", m, "--data", f["good"], "--device", "tpu"], "unknown provider 'tpu'"),
    ("bad gate", lambda f, m: ["audit", m, "--data", f["good"], "--gate", "speed=1:2"], "unknown gate check 'speed'"),
    ("missing results", lambda f, m: ["report", "nowhere/results.json"], "does not exist"),
]


@pytest.mark.parametrize(("case", "args", "message"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(case: str, args, message: str, small_mlp: dict, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    files = _bad_files(tmp_path, small_mlp)
    result = _invoke(*args(files, small_mlp["path"]), "--out", tmp_path / "o") if args(files, small_mlp["path"])[0] == "audit" \
        else _invoke(*args(files, small_mlp["path"]))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    import re

    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "results.json").exists()


def test_cuda_request_on_a_cpu_host_is_a_clear_error(small_mlp: dict, mlp_files: dict) -> None:
    from auditor.runtime import _cuda_works

    if _cuda_works():
        pytest.skip("this host has a working CUDA provider; the error path cannot be reached here")
    result = _invoke(*_audit_args(mlp_files, "--device", "cuda"))
    assert result.exit_code == 2 and "CUDA provider does not work" in result.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _invoke("inspect", tmp_path / "missing.onnx", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_outputs_are_written_with_ordinary_permissions(mlp_files: dict) -> None:
    import os
    import stat

    assert _invoke(*_audit_args(mlp_files, "--gate", "worst_class_accuracy=0:0")).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.json", "report.html"):
        mode = stat.S_IMODE((mlp_files["out"] / name).stat().st_mode)
        assert mode == 0o666 & ~umask, oct(mode)
