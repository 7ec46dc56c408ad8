"""The deployed-model fixture zoo agrees with itself: manifest, graphs, data, reference logits and gradients.

These check the fixtures (tests/fixtures/make_deployed.py), not the auditor: every declared input is the
graph's, every data array fits it, ONNX Runtime reproduces the stored reference logits, and each stored
autograd gradient is the derivative of the ONNX graph's class loss with respect to the initializer it is
filed under (central differences in float64 through the ONNX reference evaluator, or through ONNX Runtime
where the graph holds ONNX Runtime contrib ops).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from . import reference
from .deployed import DEPLOYED, MANIFEST, deployed_entry, deployed_names

ALL = [e["name"] for e in MANIFEST]
TEXT = [e["name"] for e in MANIFEST if any(i["role"] == "attention_mask" for i in e["inputs"])]
DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64"}
ROLES = {"input_ids": "token_ids", "attention_mask": "attention_mask", "token_type_ids": "token_type_ids"}


def test_the_zoo_covers_the_families_and_formats() -> None:
    assert len(set(ALL)) == len(ALL) > 0
    families = {e["family"] for e in MANIFEST}
    assert {"mobilenetv2", "mobilenetv3", "efficientnet", "shufflenet", "alexnet", "googlenet", "bert",
            "distilbert", "vit"} <= families
    assert {e["exporter"] for e in MANIFEST} == {"torchscript", "dynamo", "onnx.helper", "ort-optimizer",
                                                 "onnxconverter-common", "ort-quantization"}
    assert {e["precision"] for e in MANIFEST} == {"float32", "float16", "float16-io32", "int8-qdq-per-tensor",
                                                  "int8-qdq-per-channel", "int8-qoperator", "int8-dynamic"}
    listed = {e["file"] for e in MANIFEST} | {e["data"] for e in MANIFEST} | {e["grads"] for e in MANIFEST} | {
        "deployed.json"}
    assert {p.name for p in DEPLOYED.iterdir()} == listed - {None}  # nothing missing, nothing stray


def _data_inputs(proto: onnx.ModelProto) -> list[dict[str, Any]]:
    inits = {t.name for t in proto.graph.initializer}
    return [{"name": v.name, "dtype": DTYPES[v.type.tensor_type.elem_type],
             "shape": [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim],
             "role": ROLES.get(v.name, "features")} for v in proto.graph.input if v.name not in inits]


@pytest.mark.parametrize("name", ALL)
def test_declared_inputs_and_logits_are_the_graphs(name: str) -> None:
    e = deployed_entry(name)
    proto = onnx.load(e["path"])
    assert e["inputs"] == _data_inputs(proto)
    produced = {o for n in proto.graph.node for o in n.output}
    assert e["logits"] in produced and e["logits"] not in {i["name"] for i in e["inputs"]}
    assert e["opset"] == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert e["contrib_ops"] == sorted({n.op_type for n in proto.graph.node if n.domain == "com.microsoft"})
    if e["batch_fixed"]:
        assert all(i["shape"][0] == e["batch_fixed"] for i in e["inputs"])
    else:
        assert all(isinstance(i["shape"][0], str) for i in e["inputs"])  # a symbolic batch axis


@pytest.mark.parametrize("name", ALL)
def test_data_fits_the_inputs_and_covers_every_class(name: str) -> None:
    e = deployed_entry(name)
    n, k = e["n_samples"], e["n_classes"]
    for spec in e["inputs"]:
        a = e["feeds"][spec["name"]]
        assert a.dtype == np.dtype(spec["dtype"]) and a.ndim == len(spec["shape"]) and len(a) == n, spec
        assert all(d == s for d, s in zip(a.shape[1:], spec["shape"][1:]) if isinstance(s, int)), (a.shape, spec)
    assert e["y"].dtype == np.int64 and e["y"].shape == (n,)
    assert np.bincount(e["y"], minlength=k).min() >= 4 and e["y"].max() == k - 1
    assert e["reference_logits"].dtype == np.float32 and e["reference_logits"].shape == (n, k)
    assert e["class_names"] is None or len(e["class_names"]) == k


@pytest.mark.parametrize("name", TEXT)
def test_token_data_is_padded_at_the_end_with_a_matching_mask(name: str) -> None:
    e = deployed_entry(name)
    mask = e["feeds"]["attention_mask"]
    assert set(np.unique(mask)) == {0, 1}
    assert np.all(np.diff(mask, axis=1) <= 0)  # ones, then padding to the end of the row
    assert 0 < np.mean(mask.min(axis=1) == 0) < 1  # some rows padded, some full
    if "input_ids" in e["feeds"]:
        ids = e["feeds"]["input_ids"]
        pad = np.unique(ids[mask == 0])
        assert pad.size == 1 and not np.any(ids[mask == 1] == pad[0])  # one padding id, used only there


def _ort_logits(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], logits: str,
                batch_fixed: int | None) -> np.ndarray:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    if logits not in {o.name for o in m.graph.output}:
        m.graph.output.append(helper.make_empty_tensor_value_info(logits))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    step = batch_fixed or n
    out = [sess.run([logits], {k: v[s:s + step] for k, v in feeds.items()})[0] for s in range(0, n, step)]
    return np.concatenate([o.reshape(o.shape[0], -1) for o in out]).astype(np.float64)


@pytest.mark.parametrize("name", ALL)
def test_onnxruntime_reproduces_the_stored_reference_logits(name: str) -> None:
    """float32: 1e-4 of the largest logit; float16: 1e-2; int8: the quantisation error stays under 10%."""
    e = deployed_entry(name)
    got = _ort_logits(onnx.load(e["path"]), e["feeds"], e["logits"], e["batch_fixed"])
    expected = e["reference_logits"].astype(np.float64)
    tol = {"float32": 1e-4, "float16": 1e-2, "float16-io32": 1e-2}.get(e["precision"], 0.1)
    assert e["check"]["tolerance"] == tol
    diff = np.abs(got - expected).max()
    assert diff <= tol * np.abs(expected).max(), f"{name}: max |difference| {diff:.3g}"
    assert e["check"]["max_abs_diff"] == pytest.approx(diff, rel=0.5, abs=1e-5)  # the manifest tells the truth


@pytest.mark.parametrize("name", deployed_names(reference="torch"))
def test_gradient_files_hold_every_class_and_matched_initializer(name: str) -> None:
    e = deployed_entry(name)
    inits = {t.name: t for t in onnx.load(e["path"]).graph.initializer}
    matched = [m["initializer"] for m in e["torch_params_matched"]]
    assert matched and len(set(matched)) == len(matched)
    assert {m["how"] for m in e["torch_params_matched"]} <= {"equal", "transposed", "bn-folded"}
    with np.load(DEPLOYED / e["grads"]) as g:
        expected_keys = {f"loss/{c}" for c in range(e["n_classes"])}
        expected_keys |= {f"{c}/{i}" for c in range(e["n_classes"]) for i in matched}
        assert set(g.files) == expected_keys
        for i in matched:
            assert all(g[f"{c}/{i}"].shape == tuple(inits[i].dims) for c in range(e["n_classes"]))
        losses = np.array([float(g[f"loss/{c}"]) for c in range(e["n_classes"])])
    # the stored losses are those of the stored logits: same data, same model
    np.testing.assert_allclose(losses, reference.class_losses(e["reference_logits"], e["y"], e["n_classes"]), rtol=1e-5)


@pytest.mark.parametrize("name", TEXT)
def test_text_models_take_any_batch_and_sequence_length(name: str) -> None:
    """Rows whose text fits in 11 tokens, cut to 11 positions: the same logits (dynamic axes, mask honoured)."""
    e = deployed_entry(name)
    assert all(i["shape"][:2] == ["batch", "sequence"] for i in e["inputs"])
    rows = e["feeds"]["attention_mask"].sum(axis=1) <= 11
    assert 2 <= rows.sum() < len(rows)
    feeds = {k: v[rows, :11] for k, v in e["feeds"].items()}
    got = _ort_logits(onnx.load(e["path"]), feeds, e["logits"], None)
    expected = e["reference_logits"][rows].astype(np.float64)
    assert np.abs(got - expected).max() <= e["check"]["tolerance"] * np.abs(e["reference_logits"]).max()


def _float64_logits(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], logits: str,
                    batch_fixed: int | None) -> np.ndarray:
    """Logits from the ONNX reference evaluator on a float64 copy of the model (any number of inputs)."""
    m = reference.float64_model(proto)
    del m.graph.output[:]
    m.graph.output.append(helper.make_empty_tensor_value_info(logits))
    inits = {t.name for t in m.graph.initializer}
    inputs = [v for v in m.graph.input if v.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(inputs)
    ev = reference.reference_evaluator(m)
    feeds = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    n = len(next(iter(feeds.values())))
    step = batch_fixed or n
    out = [np.asarray(ev.run(None, {k: v[s:s + step] for k, v in feeds.items()})[0]) for s in range(0, n, step)]
    return np.concatenate([o.reshape(o.shape[0], -1) for o in out])


def _class_loss(proto: onnx.ModelProto, e: dict[str, Any], c: int, name: str, value: np.ndarray) -> float:
    """L_c with one initializer replaced: float64 reference evaluator, or ORT (float32) for contrib ops."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value.astype(np.float64 if not e["contrib_ops"] else np.float32), name))
    idx = e["y"] == c
    feeds = {k: v[idx] for k, v in e["feeds"].items()}
    run = _ort_logits if e["contrib_ops"] else _float64_logits
    z = run(m, feeds, e["logits"], e["batch_fixed"])
    return float(reference.class_losses(z, e["y"][idx], e["n_classes"])[c])


@pytest.mark.parametrize("name", deployed_names(reference="torch"))
def test_autograd_gradients_are_the_graphs_derivatives(name: str) -> None:
    """Central differences of L_0 at the two largest gradient entries of the matched initializers nearest the
    input and nearest the logits and of the first one matched each way (equal, transposed, BatchNorm-folded):
    in float64 through the ONNX reference evaluator (step 1e-6, error < 1e-4 relative + 1e-8), or, for graphs
    with ONNX Runtime contrib ops, in float32 through ONNX Runtime (step 1e-2, < 3% + 1e-4). A gradient filed under the
    wrong initializer or class, transposed wrongly, or taken before BatchNorm folding fails."""
    e = deployed_entry(name)
    proto = onnx.load(e["path"])
    order = [i for n in proto.graph.node for i in n.input]
    ranked = sorted(e["torch_params_matched"], key=lambda m: order.index(m["initializer"]))
    first_of_kind = {m["how"]: m["initializer"] for m in reversed(ranked)}
    chosen = dict.fromkeys([ranked[0]["initializer"], ranked[-1]["initializer"], *first_of_kind.values()])
    eps, tol, floor = (1e-2, 0.03, 1e-4) if e["contrib_ops"] else (1e-6, 1e-4, 1e-8)
    with np.load(DEPLOYED / e["grads"]) as g:
        for init in chosen:
            value = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == init))
            value = value.astype(np.float64)
            grad = g[f"0/{init}"]
            for flat in np.argsort(-np.abs(grad).ravel())[:2]:
                step = np.zeros(value.size)
                step[flat] = eps
                step = step.reshape(value.shape)
                fd = (_class_loss(proto, e, 0, init, value + step) - _class_loss(proto, e, 0, init, value - step))
                fd /= 2 * eps
                got = grad.ravel()[flat]
                message = f"{init}[{flat}]: autograd {got:.6g}, differences {fd:.6g}"
                assert abs(fd - got) <= tol * abs(got) + floor, message


@pytest.mark.parametrize("name", [e["name"] for e in MANIFEST if e["fp32_source"]])
def test_reduced_precision_models_name_their_float32_source(name: str) -> None:
    e, src = deployed_entry(name), deployed_entry(deployed_entry(name)["fp32_source"])
    assert src["precision"] == "float32" and src["reference"] == "torch" and src["fp32_source"] is None
    assert e["n_classes"] == src["n_classes"] and np.array_equal(e["y"], src["y"])
    assert [i["name"] for i in e["inputs"]] == [i["name"] for i in src["inputs"]]
    for i in e["inputs"]:  # the same samples, in the model's own input precision
        np.testing.assert_allclose(e["feeds"][i["name"]].astype(np.float64),
                                   src["feeds"][i["name"]].astype(np.float64), rtol=1e-3)


def test_the_reference_lrn_follows_the_specification() -> None:
    """tests/reference.py replaces onnx 1.23's LRN (which loops over the batch axis): check it on N=1, C=7."""
    x = np.random.default_rng(0).standard_normal((1, 7, 3, 3)) * 3
    node = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.2, beta=0.75, bias=1.5)
    g = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, x.shape)],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, x.shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    got = reference.reference_evaluator(m).run(None, {"x": x})[0]
    expected = np.empty_like(x)
    for c in range(7):  # the formula of the ONNX operator documentation, one channel at a time
        window = (x[:, max(0, c - 1):min(7, c + 2)] ** 2).sum(axis=1)
        expected[:, c] = x[:, c] / (1.5 + 0.2 / 3 * window) ** 0.75
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # alpha, beta, bias are float32 attributes
