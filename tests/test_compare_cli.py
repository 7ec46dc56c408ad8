"""`auditor compare` on the command line: files, exit codes, one-line errors; the report renders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import auditor
from auditor.cli import app
from auditor.comparison import CompareResult, compare
from auditor.demo import demo_paths
from auditor.report.compare import COMPARE_SECTIONS, render_compare_report
from tests.compare_models import demo_weights
from tests.conftest import make_mlp

runner = CliRunner()
DEMO = demo_paths()


def _invoke(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def _compare_args(out: Path, *extra: object) -> list[object]:
    return ["compare", DEMO.model, DEMO.candidate, "--data", DEMO.data, "--out", out, "--quiet", *extra]


def test_compare_writes_results_and_report(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = _invoke(*_compare_args(out))
    assert result.exit_code == 1, result.output  # the default gate fails: digit 3 regressed
    assert "REGRESSED" in result.output and "digit 3" in result.output and "gate: FAIL" in result.output
    data = json.loads((out / "results.json").read_text())
    assert data["kind"] == "compare" and data["schema_version"] == "1.0"
    for key in ("baseline", "candidate", "inputs", "data", "options", "per_class", "overall", "confusion",
                "pairs_gained", "flips", "agreement", "interference", "gate", "versions", "timings", "provider"):
        assert key in data, key
    assert data["per_class"]["regressed"] == [c == 3 for c in range(10)]
    api = compare(DEMO.model, DEMO.candidate, DEMO.data)
    from_json = CompareResult.from_dict(data)
    for name in ("accuracy_change", "p_holm", "interval_low", "interval_high", "loss_candidate"):
        np.testing.assert_array_equal(getattr(from_json.classes, name), getattr(api.classes, name))
    assert from_json.agreement.overall_mean_kl == api.agreement.overall_mean_kl
    html = (out / "report.html").read_text()
    for sid in COMPARE_SECTIONS:
        assert f'<section id="{sid}"' in html
    assert "digit 3" in html and html.count("data:image/png;base64,") >= 3 + 4
    # re-render from results.json alone: the same page
    again = _invoke("report", out / "results.json", "--out", tmp_path / "again.html")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.html").read_text() == html


@pytest.mark.parametrize(("gates", "code", "verdict"), [
    (["regressed_classes=1:2", "max_class_accuracy_drop=0.5:0.6", "agreement=0.5:0.4"], 0, "PASS"),
    (["regressed_classes=0:2"], 0, "WARN"),
    (["regressed_classes=0:0"], 1, "FAIL"),
    (["agreement=0.99:0.95"], 1, "FAIL"),
    (["max_pair_score_increase=1:2", "agreement=0.5:0.4"], 0, "PASS"),  # skipped without --interference
])
def test_gate_exit_codes(tmp_path: Path, gates: list[str], code: int, verdict: str) -> None:
    args = [a for g in gates for a in ("--gate", g)]
    result = _invoke(*_compare_args(tmp_path / "o", "--no-report", *args))
    assert result.exit_code == code, result.output
    assert f"gate: {verdict}" in result.output
    assert not (tmp_path / "o" / "report.html").exists()


def test_gate_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("[gate.regressed_classes]\nwarn = 1\nfail = 2\n")
    result = _invoke(*_compare_args(tmp_path / "o", "--no-report", "--gate-config", config))
    assert result.exit_code == 0 and "gate: PASS" in result.output, result.output


def test_demo_compare(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _invoke("demo", "--compare", "--out", out)
    assert result.exit_code == 0, result.output  # a demo shows the failed gate but does not fail
    assert f"report: {(out / 'report.html').resolve()}" in result.output
    assert "input 'image' is 'input' in the candidate" in result.output
    assert json.loads((out / "results.json").read_text())["gate"]["verdict"] == "fail"


def _bad(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    nine = [(w, b) for w, b in demo_weights()]
    nine[1] = (nine[1][0][:9], nine[1][1][:9])
    flat = make_mlp(tmp_path / "flat.onnx", demo_weights())  # takes (64,) vectors, not (1, 8, 8) images
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    wrong_shape = tmp_path / "wrong.npz"
    np.savez(wrong_shape, x=rng.standard_normal((20, 5)).astype(np.float32), y=np.arange(20) % 10)
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=rng.standard_normal((20, 1, 8, 8)).astype(np.float32), y=np.arange(20) % 12)
    return {"nine": make_mlp(tmp_path / "nine.onnx", nine), "flat": flat, "garbage": garbage,
            "wrong_shape": wrong_shape, "labels": labels, "missing": tmp_path / "missing.onnx"}


@pytest.mark.parametrize(("args", "message"), [
    (lambda f, o: ["compare", DEMO.model, f["nine"], "--data", DEMO.data, "--out", o],
     r"the baseline has 10 classes but the candidate has 9; compare two models of the same classes"),
    (lambda f, o: ["compare", DEMO.model, DEMO.candidate, "--data", f["wrong_shape"], "--out", o],
     r"data x has sample shape \(5,\), model input 'image' expects \(1, 8, 8\)"),
    (lambda f, o: ["compare", DEMO.model, f["garbage"], "--data", DEMO.data, "--out", o],
     r"candidate model: '.*garbage.onnx' is not an ONNX model"),
    (lambda f, o: ["compare", f["missing"], DEMO.candidate, "--data", DEMO.data, "--out", o],
     r"baseline model: model file '.*missing.onnx' does not exist"),
    (lambda f, o: ["compare", DEMO.model, f["flat"], "--data", DEMO.data, "--out", o],
     r"baseline input 'image' takes samples shaped \(1, 8, 8\) but candidate input 'x' takes \(64,\)"),
    (lambda f, o: ["compare", DEMO.model, DEMO.candidate, "--data", f["labels"], "--out", o],
     r"labels outside 0..9"),
    (lambda f, o: ["compare", DEMO.model, DEMO.candidate, "--data", DEMO.data, "--out", o, "--alpha", "1.5"],
     r"--alpha must be between 0 and 1"),
    (lambda f, o: ["compare", DEMO.model, DEMO.candidate, "--data", DEMO.data, "--out", o, "--gate", "worst:1:2"],
     r"expected NAME=WARN:FAIL"),
    (lambda f, o: ["compare", DEMO.model, DEMO.candidate, "--data", DEMO.data, "--out", o, "--gate",
                   "worst_class_accuracy=0.9:0.8"],
     r"unknown gate check 'worst_class_accuracy'; choose from max_class_accuracy_drop, regressed_classes"),
    (lambda f, o: ["compare", DEMO.model, DEMO.candidate, "--data", DEMO.data, "--out", o, "--interference",
                   "--normalization", "sideways"],
     r"unknown normalization 'sideways'"),
])
def test_bad_inputs_give_one_line_and_exit_2(tmp_path: Path, args, message: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "o"
    result = _invoke(*args(_bad(tmp_path), out))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert not (out / "results.json").exists()


def test_interference_needs_differentiable_models(tmp_path: Path) -> None:
    model = onnx.load(DEMO.model)
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "ScaledTanh"  # ONNX Runtime runs it; no reverse rule and no rewrite
    onnx.save(model, tmp_path / "lrn.onnx")
    result = _invoke("compare", DEMO.model, tmp_path / "lrn.onnx", "--data", DEMO.data, "--out", tmp_path / "o",
                     "--interference")
    assert result.exit_code == 2, result.output
    assert "--interference needs the gradients of both models, and the candidate's graph cannot be differentiated" \
        in result.output


def test_report_renders_without_flips_or_interference(tmp_path: Path) -> None:
    result = compare(DEMO.model, DEMO.model, DEMO.data, gate=None)
    html = render_compare_report(result, tmp_path / "same.html").read_text()
    assert "No sample flipped from right to wrong." in html and "no pair gained errors" in html
    assert "Not computed." in html and "No gate configured." in html


def _renamed_text_model(path: Path, weights: dict[str, np.ndarray]) -> Path:
    """The text model of tests/text_model.py with its inputs named as another exporter names them."""
    from tests import text_model as tm

    model = onnx.load(tm.save_model(path, weights))
    names = dict(zip(tm.NAMES, ("ids", "mask", "segment_ids")))
    for value in model.graph.input:
        value.name = names.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
    onnx.save(model, path)
    return path


def test_compare_text_models_from_csv(tmp_path: Path) -> None:
    from tests import text_model as tm
    from tests.test_compare import check_against, reference
    from tests.test_text import ROWS, _csv

    rows = ROWS * 3
    data, tok = _csv(tmp_path / "reviews.csv", rows), tm.save_tokenizer(tmp_path / "tokenizer.json")
    base = tm.save_model(tmp_path / "base.onnx", tm.weights(seed=0))
    cand = _renamed_text_model(tmp_path / "cand.onnx", tm.weights(seed=1))
    out = tmp_path / "cmp"
    result = _invoke("compare", base, cand, "--data", data, "--text-column", "text", "--tokenizer", tok, "--out",
                     out, "--gate", "agreement=0:0")
    assert result.exit_code == 0, result.output
    assert "input 'input_ids' is 'ids' in the candidate" in result.output
    loaded = CompareResult.load(out / "results.json")
    assert loaded.class_names == ["neg", "neu", "pos"]
    checked = auditor.load_data(data, text_column="text", tokenizer=tok)
    ids, mask, types = (checked.features[n] for n in tm.NAMES)
    ref = reference(checked.y, tm.logits(tm.weights(seed=0), ids, mask, types),
                    tm.logits(tm.weights(seed=1), ids, mask, types), 3)
    check_against(loaded, ref)
    texts = [t for t, _ in rows]
    examples = [e for g in loaded.flips for e in g.examples]
    assert examples and all(e.text == texts[e.index] and e.thumbnail is None for e in examples)
    html = (out / "report.html").read_text()
    assert examples[0].text in html


def test_large_k_report_focuses_on_the_changed_classes(tmp_path: Path) -> None:
    from tests.conftest import random_mlp_weights

    k = 40
    weights = random_mlp_weights(6, 12, k, seed=2)
    base = make_mlp(tmp_path / "a.onnx", weights)
    moved = [(w.copy(), b.copy()) for w, b in weights]
    moved[1][1][7] -= 4.0  # class 7 loses its samples to its neighbours
    cand = make_mlp(tmp_path / "b.onnx", moved)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 6)).astype(np.float32)
    from tests import numpy_mlp

    y = numpy_mlp.logits(weights, x).argmax(1)  # the baseline is right everywhere
    result = compare(base, cand, auditor.Dataset(x, y), gate=None)
    assert result.regressed_classes() == [7]
    html = render_compare_report(result, tmp_path / "large.html").read_text()
    assert "Showing" in html and "of 40 classes" in html
    assert html.count('<tr class="hl">') == 1  # the regressed class, once, in the per-class table
