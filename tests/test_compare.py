"""`auditor.compare`: every reported number against an independent computation.

References: logits from float64 numpy (tests/numpy_mlp.py) or from a plain
onnxruntime.InferenceSession on the original files; accuracies, confusions, losses, flips
and agreement in numpy written here; McNemar from scipy.stats.binomtest; Holm and the paired
interval from the hand-written references of tests/test_compare_stats.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from scipy.stats import binomtest

import auditor
from auditor.comparison import CompareOptions, CompareResult, compare
from auditor.demo import demo_paths
from auditor.errors import ModelError
from auditor.gate import COMPARE_QUANTITIES, Check, evaluate_gate
from tests import numpy_mlp
from tests.compare_models import FIXTURES, degraded, demo_data, demo_weights, old_style_mlp
from tests.test_compare_stats import holm_by_hand, newcombe_reference

DEGRADED_CLASS, DELTA = 5, 3.0
Z95 = 1.959963984540054


def reference(y: np.ndarray, zb: np.ndarray, zc: np.ndarray, k: int, alpha: float = 0.05) -> dict[str, Any]:
    """Every number of a comparison, from labels and two logit arrays, in plain numpy and scipy."""
    zb, zc = zb.astype(np.float64), zc.astype(np.float64)
    pb, pc = zb.argmax(1), zc.argmax(1)

    def ce(z: np.ndarray) -> np.ndarray:
        return np.array([math.log(np.exp(row - row.max()).sum()) + row.max() - row[t] for row, t in zip(z, y)])

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    lb, lc = ce(zb), ce(zc)
    out: dict[str, Any] = {"acc_b": [], "acc_c": [], "loss_b": [], "loss_c": [], "b": [], "c": [], "p": [],
                           "interval": [], "count": []}
    for cls in range(k):
        idx = np.flatnonzero(y == cls)
        out["count"].append(len(idx))
        if not len(idx):  # a class without samples: undefined, and not one of the tests Holm corrects
            for key in ("acc_b", "acc_c", "loss_b", "loss_c", "p"):
                out[key].append(math.nan)
            out["b"].append(0)
            out["c"].append(0)
            out["interval"].append((math.nan, math.nan))
            continue
        rb, rc = pb[idx] == cls, pc[idx] == cls
        b, c = int(np.sum(rb & ~rc)), int(np.sum(~rb & rc))
        out["acc_b"].append(rb.mean())
        out["acc_c"].append(rc.mean())
        out["loss_b"].append(lb[idx].mean())
        out["loss_c"].append(lc[idx].mean())
        out["b"].append(b)
        out["c"].append(c)
        out["p"].append(binomtest(b, b + c, 0.5).pvalue if b + c else 1.0)
        out["interval"].append(newcombe_reference(int(np.sum(rb & rc)), c, b, int(np.sum(~rb & ~rc)), Z95))
    out = {key: np.array(v) for key, v in out.items()}
    out["p_holm"] = np.array(holm_by_hand(list(out["p"])))
    change = out["acc_c"] - out["acc_b"]
    out["change"] = change
    out["regressed"] = [cls for cls in range(k) if out["p_holm"][cls] < alpha and change[cls] < 0]
    out["improved"] = [cls for cls in range(k) if out["p_holm"][cls] < alpha and change[cls] > 0]
    cb, cc = np.zeros((k, k), int), np.zeros((k, k), int)
    for t, u, v in zip(y, pb, pc):
        cb[t, u] += 1
        cc[t, v] += 1
    out["confusion_b"], out["confusion_c"] = cb, cc
    gained = {}
    for a in range(k):
        for b2 in range(a + 1, k):
            before, after = cb[a, b2] + cb[b2, a], cc[a, b2] + cc[b2, a]
            if after > before:
                gained[(a, b2)] = (before, after, after - before)
    out["gained"] = gained
    flips: dict[tuple[int, int], list[int]] = {}
    for i in range(len(y)):
        if pb[i] == y[i] and pc[i] != y[i]:
            flips.setdefault((int(y[i]), int(pc[i])), []).append(i)
    out["flips"] = flips
    sb, sc = softmax(zb), softmax(zc)
    kl = np.array([sum(p * (math.log(p) - math.log(q)) for p, q in zip(rb, rc)) for rb, rc in zip(sb, sc)])
    diff = np.abs(zc - zb)
    present = [cls for cls in range(k) if np.any(y == cls)]

    def per_class(values: Any) -> np.ndarray:
        return np.array([values(y == cls) if cls in present else math.nan for cls in range(k)])

    out["agreement"] = {
        "top1": per_class(lambda m: np.mean(pb[m] == pc[m])), "mean_abs": per_class(lambda m: diff[m].mean()),
        "max_abs": per_class(lambda m: diff[m].max()), "kl": per_class(lambda m: kl[m].mean()),
        "overall": (np.mean(pb == pc), diff.mean(), diff.max(), kl.mean())}
    rb, rc = pb == y, pc == y
    b, c = int(np.sum(rb & ~rc)), int(np.sum(~rb & rc))
    out["overall"] = {"acc_b": rb.mean(), "acc_c": rc.mean(), "b": b, "c": c,
                      "p": binomtest(b, b + c, 0.5).pvalue if b + c else 1.0,
                      "interval": newcombe_reference(int(np.sum(rb & rc)), c, b, int(np.sum(~rb & ~rc)), Z95),
                      "loss_b": lb.mean(), "loss_c": lc.mean()}
    return out


def check_against(result: CompareResult, ref: dict[str, Any], *, loss_rtol: float = 1e-5) -> None:
    """Every number of ``result`` equals the reference (exactly where the inputs are counts)."""
    cl = result.classes
    np.testing.assert_array_equal(cl.count, ref["count"])
    np.testing.assert_array_equal(cl.accuracy_baseline, ref["acc_b"])
    np.testing.assert_array_equal(cl.accuracy_candidate, ref["acc_c"])
    np.testing.assert_allclose(cl.accuracy_change, ref["change"], atol=1e-15)
    np.testing.assert_array_equal(cl.only_baseline, ref["b"])
    np.testing.assert_array_equal(cl.only_candidate, ref["c"])
    np.testing.assert_allclose(cl.p_value, ref["p"], rtol=1e-9)
    np.testing.assert_allclose(cl.p_holm, ref["p_holm"], rtol=1e-9)
    np.testing.assert_allclose(np.stack([cl.interval_low, cl.interval_high], 1), ref["interval"], atol=1e-7)
    np.testing.assert_allclose(cl.loss_baseline, ref["loss_b"], rtol=loss_rtol)
    np.testing.assert_allclose(cl.loss_candidate, ref["loss_c"], rtol=loss_rtol)
    assert list(np.flatnonzero(cl.regressed)) == ref["regressed"]
    assert list(np.flatnonzero(cl.improved)) == ref["improved"]
    np.testing.assert_array_equal(result.confusion_baseline, ref["confusion_b"])
    np.testing.assert_array_equal(result.confusion_candidate, ref["confusion_c"])
    assert {(a, b): (pb, pc, d) for a, b, pb, pc, d in result.pairs_gained(None)} == ref["gained"]
    assert {(g.true, g.predicted): g.indices.tolist() for g in result.flips} == ref["flips"]
    counts = [g.count for g in result.flips]
    assert counts == sorted(counts, reverse=True)
    ag, ra = result.agreement, ref["agreement"]
    np.testing.assert_allclose(ag.top1, ra["top1"], atol=1e-15)
    np.testing.assert_allclose(ag.mean_abs_logit_difference, ra["mean_abs"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ag.max_abs_logit_difference, ra["max_abs"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ag.mean_kl, ra["kl"], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose([ag.overall_top1, ag.overall_mean_abs_logit_difference,
                                ag.overall_max_abs_logit_difference, ag.overall_mean_kl], ra["overall"],
                               rtol=1e-3, atol=1e-6)
    o, ro = result.overall, ref["overall"]
    assert (o.accuracy_baseline, o.accuracy_candidate, o.only_baseline, o.only_candidate) == \
        (ro["acc_b"], ro["acc_c"], ro["b"], ro["c"])
    assert o.p_value == pytest.approx(ro["p"], rel=1e-9)
    np.testing.assert_allclose((o.interval_low, o.interval_high), ro["interval"], atol=1e-7)
    np.testing.assert_allclose((o.loss_baseline, o.loss_candidate), (ro["loss_b"], ro["loss_c"]), rtol=loss_rtol)


def check_json(result: CompareResult) -> None:
    """results.json holds the same numbers as the typed result, and reads back to it."""
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    again = CompareResult.from_dict(d)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)
    pc = d["per_class"]
    for key in ("accuracy_change", "p_value", "p_holm", "interval_low", "interval_high", "loss_baseline"):
        np.testing.assert_array_equal(np.array(pc[key], dtype=float), getattr(result.classes, key))
    assert pc["regressed"] == result.classes.regressed.tolist()
    assert d["confusion"]["change"] == result.confusion_change.tolist()
    assert [tuple(p) for p in d["pairs_gained"]] == result.pairs_gained(None)
    assert d["agreement"]["overall"]["top1"] == result.agreement.overall_top1
    assert d["gate"] == (None if result.gate is None else result.gate.to_dict())


@pytest.fixture(scope="module")
def degraded_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Baseline: the demo model (TorchScript export, dynamic batch). Candidate: the same weights with class 5's
    output bias lowered, exported model-zoo style (opset 9, IR 3, batch fixed at 1, input renamed)."""
    tmp = tmp_path_factory.mktemp("degraded")
    x, y, names = demo_data()
    weights = demo_weights()
    bad = degraded(weights, DEGRADED_CLASS, DELTA)
    candidate = old_style_mlp(tmp / "old_degraded.onnx", bad)
    flat = x.reshape(len(x), -1)
    return {"candidate": candidate, "y": y, "names": names,
            "zb": numpy_mlp.logits(weights, flat), "zc": numpy_mlp.logits(bad, flat),
            "result": compare(demo_paths().model, candidate, demo_paths().data)}


def test_the_degraded_class_and_only_it_is_found(degraded_pair: dict[str, Any]) -> None:
    result = degraded_pair["result"]
    ref = reference(degraded_pair["y"], degraded_pair["zb"], degraded_pair["zc"], 10)
    assert ref["regressed"] == [DEGRADED_CLASS]  # the fixture does what it claims
    check_against(result, ref)
    assert result.regressed_classes() == [DEGRADED_CLASS]
    assert result.class_names == degraded_pair["names"]
    assert result.max_class_accuracy_drop == pytest.approx(-ref["change"][DEGRADED_CLASS])
    assert result.inputs.pairs == (("image", "data"),)
    assert result.inputs.differences == ("input 'image' is 'data' in the candidate",
                                         "the candidate's batch is fixed at 1")
    assert result.candidate["fixed_batch"] == 1 and result.baseline["fixed_batch"] is None
    check_json(result)


def test_default_gate_fails_on_the_regression(degraded_pair: dict[str, Any]) -> None:
    gate = degraded_pair["result"].gate
    checks = {c.name: c for c in gate.checks}
    assert gate.verdict == "fail"
    assert checks["regressed_classes"].value == 1 and checks["regressed_classes"].status == "fail"
    ref = reference(degraded_pair["y"], degraded_pair["zb"], degraded_pair["zc"], 10)
    assert checks["agreement"].value == pytest.approx(ref["agreement"]["overall"][0])
    loose = evaluate_gate(degraded_pair["result"], [Check("regressed_classes", 1, 2),
                                                    Check("max_class_accuracy_drop", 0.5, 0.6),
                                                    Check("overall_accuracy_drop", 0.5, 0.6),
                                                    Check("max_pair_score_increase", 1, 2)], COMPARE_QUANTITIES)
    assert [c.status for c in loose.checks] == ["pass", "pass", "pass", "skipped"]
    overall = next(c for c in loose.checks if c.name == "overall_accuracy_drop")
    assert overall.value == pytest.approx(ref["overall"]["acc_b"] - ref["overall"]["acc_c"])


def session_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits straight from onnxruntime on the original file (no auditor graph handling)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    return np.asarray(session.run(None, {name: x.astype(dtype)})[0], dtype=np.float64)


def test_fp32_against_int8_qdq() -> None:
    x, y, _ = demo_data()
    int8 = FIXTURES / "digits_int8.onnx"
    result = compare(demo_paths().model, int8, demo_paths().data)
    ref = reference(y, session_logits(demo_paths().model, x), session_logits(int8, x), 10)
    check_against(result, ref)
    check_json(result)
    assert result.inputs.differences == ()
    assert result.regressed_classes() == []
    assert 0.98 < result.agreement.overall_top1 < 1.0  # quantisation moves a few predictions, not many
    assert "QuantizeLinear" in result.candidate["op_types"]


def test_fp32_against_fp16_weights_with_float32_inputs() -> None:
    x, y, _ = demo_data()
    fp16 = FIXTURES / "digits_fp16_io32.onnx"
    result = compare(demo_paths().model, fp16, demo_paths().data)
    ref = reference(y, session_logits(demo_paths().model, x), session_logits(fp16, x), 10)
    check_against(result, ref, loss_rtol=1e-4)
    assert result.inputs.differences == () and "Cast" in result.candidate["op_types"]
    assert result.agreement.overall_top1 > 0.99 and result.regressed_classes() == []


def test_fp32_against_fp16() -> None:
    x, y, _ = demo_data()
    fp16 = FIXTURES / "digits_fp16.onnx"
    result = compare(demo_paths().model, fp16, demo_paths().data)
    ref = reference(y, session_logits(demo_paths().model, x), session_logits(fp16, x), 10)
    check_against(result, ref, loss_rtol=1e-3)
    assert "float16" in result.inputs.line and result.agreement.overall_top1 > 0.99


def test_identical_weights_from_another_exporter_agree(tmp_path: Path) -> None:
    same = old_style_mlp(tmp_path / "old.onnx", demo_weights())
    result = compare(demo_paths().model, same, demo_paths().data)
    assert result.agreement.overall_top1 == 1.0 and result.agreement.overall_max_abs_logit_difference < 1e-4
    assert not result.classes.significant.any() and result.flips == () and result.pairs_gained() == []
    np.testing.assert_array_equal(result.classes.p_value, np.ones(10))
    assert (result.classes.interval_low < 0).all() and (result.classes.interval_high > 0).all()
    assert result.gate.verdict == "pass"


def two_input_model(path: Path, names: tuple[str, str], w: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Concat", list(names), ["cat"], axis=1),
             helper.make_node("Gemm", ["cat", "w"], ["z"], transB=1)]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, ["N", 3]),
                                             helper.make_tensor_value_info(names[1], TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_inputs_with_other_names_are_matched_by_role_and_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 5))
    base = two_input_model(tmp_path / "a.onnx", ("left", "right"), w)
    cand = two_input_model(tmp_path / "b.onnx", ("input_1", "input_2"), w)
    left, right = rng.standard_normal((60, 3)), rng.standard_normal((60, 2))
    y = (np.hstack([left, right]) @ w.T).argmax(1)
    data = auditor.Dataset({"left": left, "right": right}, y)  # named after the baseline's inputs
    result = compare(base, cand, data)
    assert result.inputs.pairs == (("left", "input_1"), ("right", "input_2"))
    assert "input 'left' is 'input_1' in the candidate" in result.inputs.line
    assert result.agreement.overall_top1 == 1.0 and result.overall.accuracy_baseline == 1.0


def test_max_per_class_compares_the_same_samples() -> None:
    result = compare(demo_paths().model, demo_paths().candidate, demo_paths().data,
                     CompareOptions(max_per_class=20), gate=None)
    assert result.classes.count.tolist() == [20] * 10 and result.gate is None
    assert result.data["n_samples"] == 200


def test_the_demo_candidate_regresses_digit_3_while_overall_accuracy_rises() -> None:
    result = auditor.compare(demo_paths().model, demo_paths().candidate, demo_paths().data)
    assert [result.class_names[c] for c in result.regressed_classes()] == ["digit 3"]
    assert result.overall.accuracy_change > 0
    assert result.inputs.line == "input 'image' is 'input' in the candidate"
    group = result.flips[0]
    assert (group.true, group.count) == (3, max(g.count for g in result.flips))
    thumb = group.examples[0].thumbnail
    x, _, _ = demo_data()
    sample = x[group.examples[0].index, 0]
    expected = np.rint((sample - sample.min()) / (sample.max() - sample.min()) * 255).astype(np.uint8)
    np.testing.assert_array_equal(thumb, expected)
    probs = [e.candidate_probability for e in group.examples]
    assert probs == sorted(probs, reverse=True)


def test_interference_runs_the_audits_of_both_models(tmp_path: Path) -> None:
    data = auditor.load_data(demo_paths().data).stratified(15)
    result = compare(demo_paths().model, demo_paths().candidate, data, CompareOptions(interference=True), gate=None)
    change = result.interference
    assert change is not None and "pair score" in change.description
    options = auditor.AuditOptions(pairs=0)
    for model, scores in ((demo_paths().model, change.baseline), (demo_paths().candidate, change.candidate)):
        audit = auditor.run_audit(auditor.load_model(model), data, options, gate=None)
        np.testing.assert_array_equal(scores, audit.interference.pair_score)
    delta = change.candidate - change.baseline
    a, b = np.triu_indices(10, 1)
    finite = np.isfinite(delta[a, b]) & (delta[a, b] > 0)
    want = sorted(((float(delta[i, j]), int(i), int(j)) for i, j, ok in zip(a, b, finite) if ok), reverse=True)[:10]
    assert [(round(d, 12), i, j) for i, j, _, _, d in change.rose()] == [(round(d, 12), i, j) for d, i, j in want]
    assert change.max_increase == pytest.approx(np.nanmax(delta[a, b]))
    check_json(result)
    from auditor.report import render_compare_report

    html = render_compare_report(result, tmp_path / "r.html").read_text()
    top = change.rose(1)[0]
    assert "Pair score change" in html and f"{result.class_names[top[0]]} / {result.class_names[top[1]]}" in html


def test_thumbnails_by_layout() -> None:
    from auditor.examples import THUMBNAIL_SIDE, thumbnail

    rng = np.random.default_rng(1)
    chw = rng.standard_normal((3, 130, 70))
    got = thumbnail(chw, "NCHW")
    factor = math.ceil(130 / THUMBNAIL_SIDE)  # 3: block means of 3x3 pixels
    hwc = np.moveaxis(chw, 0, -1)[:129, :69]
    blocks = hwc.reshape(43, 3, 23, 3, 3).mean(axis=(1, 3))
    want = np.rint((blocks - blocks.min()) / (blocks.max() - blocks.min()) * 255).astype(np.uint8)
    assert factor == 3 and got.shape == (43, 23, 3)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(thumbnail(np.moveaxis(chw, 0, -1), "NHWC"), want)
    gray = thumbnail(np.arange(64.0).reshape(8, 8), "other")
    assert gray.shape == (8, 8) and gray.min() == 0 and gray.max() == 255
    assert thumbnail(np.zeros((1, 8, 8)), "NCHW").max() == 0  # a constant image is black, not NaN
    assert thumbnail(np.zeros(64), "features") is None
    assert thumbnail(np.zeros((4, 8, 8)), "NCHW").shape == (8, 8, 3)  # RGBA: the alpha channel is dropped
    assert thumbnail(np.zeros((8, 8)), "tokens") is None


def test_flips_of_text_data_carry_the_texts() -> None:
    from auditor.comparison.analysis import flip_groups

    y = np.array([0, 0, 1, 1, 2])
    zb = np.eye(3)[[0, 0, 1, 1, 2]] * 4.0
    zc = np.eye(3)[[2, 1, 1, 0, 2]] * np.array([[3.0], [5.0], [4.0], [2.0], [4.0]])
    texts = ["a cat", "a dog", "a fox", "an owl", "a hen"]
    groups = flip_groups(y, zb, zc, texts=texts, n_examples=2)
    assert [(g.true, g.predicted, g.indices.tolist()) for g in groups] == [(0, 1, [1]), (0, 2, [0]), (1, 0, [3])]
    assert [e.text for g in groups for e in g.examples] == ["a dog", "a cat", "an owl"]
    assert all(e.thumbnail is None for g in groups for e in g.examples)
    assert groups[0].examples[0].candidate_probability == pytest.approx(np.exp(5) / (np.exp(5) + 2))
    assert flip_groups(y, zb, zc, n_groups=1)[1].examples == ()  # only the largest groups get examples


def test_class_names_in_model_metadata_must_agree(tmp_path: Path) -> None:
    import onnx

    from auditor.comparison import match_models, model_class_names

    paths = []
    for i, names in enumerate((json.dumps([f"digit {c}" for c in range(10)]), "zero,one,two,three,four,five,six,"
                                                                               "seven,eight,nine")):
        m = onnx.load(demo_paths().model)
        m.metadata_props.add(key="class_names", value=names)
        paths.append(tmp_path / f"m{i}.onnx")
        onnx.save(m, paths[-1])
    a, b = (auditor.load_model(p) for p in paths)
    assert model_class_names(a)[3] == "digit 3" and model_class_names(b)[3] == "three"
    with pytest.raises(ModelError, match="name class 0 differently .baseline 'digit 0', candidate 'zero'"):
        match_models(a, b)
    match_models(a, auditor.load_model(demo_paths().candidate))  # names on one side only: nothing to compare


def test_a_class_without_samples_is_undefined_not_tested(tmp_path: Path) -> None:
    data = auditor.load_data(demo_paths().data)
    data = data.subset(data.y != 3)
    result = compare(demo_paths().model, demo_paths().candidate, data)
    cl = result.classes
    assert cl.count[3] == 0 and math.isnan(cl.p_value[3]) and math.isnan(cl.accuracy_change[3])
    assert math.isnan(cl.interval_low[3]) and not cl.regressed[3] and math.isnan(result.agreement.top1[3])
    x, y, _ = demo_data()
    keep = y != 3
    check_against(result, reference(y[keep], session_logits(demo_paths().model, x[keep]),
                                    session_logits(demo_paths().candidate, x[keep]), 10))
    d = result.to_dict()
    assert d["per_class"]["p_value"][3] is None and d["per_class"]["count"][3] == 0
    from auditor.report import render_compare_report

    assert "no samples" in render_compare_report(result, tmp_path / "r.html").read_text()
