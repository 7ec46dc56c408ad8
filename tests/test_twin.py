"""The float32 twin of float16 and integer-quantised exports (auditor.twin), and straight-through
gradients through activation QuantizeLinear/DequantizeLinear pairs (auditor.rewrites.fake_quant).

References, each computed without the code under test:
- float16: ONNX Runtime on the original graph (outputs), the original initializers cast to
  float32 (weights), float64 finite differences on the twin (gradients, tests/reference.py).
- int8: ``scale · (q − zero point)`` in numpy from the original initializers (weights); ONNX
  Runtime on the deployed graph (outputs, bit for bit with graph optimisations off);
  PyTorch autograd of the float network at the deployed graph's own quantised activations
  (gradients, see :func:`straight_through_reference`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.twin import Twin, WeightRecord, float_twin

from . import lowp_models
from .lowp_models import N_CLASSES

PARAMETERS = ["c1.weight", "c1.bias", "c2.weight", "c2.bias", "c3.weight", "c3.bias", "fc.weight", "fc.bias"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch", reason="the reduced-precision exports are made by PyTorch (auditor[torch])")
    pytest.importorskip("onnxconverter_common", reason="float16 conversion needs onnxconverter-common (test extra)")
    return lowp_models.build(tmp_path_factory.mktemp("lowp"))


def run(model: onnx.ModelProto | Path, x: np.ndarray, *, optimized: bool = True,
        outputs: list[str] | None = None, config: Mapping[str, str] | None = None) -> list[np.ndarray]:
    """ONNX Runtime on CPU, the input cast to the model's own input type."""
    proto = onnx.load(model) if isinstance(model, Path) else model
    options = ort.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if outputs is not None:
        proto = _with_outputs(proto, outputs)
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    return list(session.run(None, {feed.name: x.astype(dtype)}))


def _with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return m


def class_losses(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return np.array([-logp[y == c, c].mean() for c in range(N_CLASSES)])


def saved(tmp_path: Path, twin: Twin, name: str = "twin.onnx") -> Path:
    onnx.save(twin.proto, tmp_path / name)
    return tmp_path / name


# --------------------------------------------------------------------------- float32 and records


def test_a_float32_model_is_its_own_twin(exports: dict[str, Path]) -> None:
    proto = onnx.load(exports["fp32"])
    twin = float_twin(proto)
    assert twin.proto is proto
    assert (twin.kind, twin.changed, twin.weights, twin.notes, twin.session_config) == ("float32", False, (), (), {})
    assert twin.input_types == {"input": "float"}


def test_weight_records_round_trip() -> None:
    record = WeightRecord("c1.weight", ("c1.weight_quantized",), "int8", "per-channel", 0)
    assert WeightRecord.from_dict(record.to_dict()) == record
    assert record.to_dict() == {"name": "c1.weight", "sources": ["c1.weight_quantized"], "dtype": "int8",
                                "scheme": "per-channel", "axis": 0}


# --------------------------------------------------------------------------- float16


def float16_tensors(proto: onnx.ModelProto) -> list[str]:
    """Every place a float16 element type is left: initializers, declared types, attributes, casts."""
    found = []
    graphs = [proto.graph]
    while graphs:
        g = graphs.pop()
        found += [f"initializer {t.name}" for t in g.initializer if t.data_type == TensorProto.FLOAT16]
        found += [f"type of {v.name}" for v in [*g.input, *g.output, *g.value_info]
                  if v.type.tensor_type.elem_type == TensorProto.FLOAT16]
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                    found.append(f"attribute {a.name} of {node.name}")
                if a.type == onnx.AttributeProto.INT and a.name in ("to", "dtype") and a.i == TensorProto.FLOAT16:
                    found.append(f"{node.op_type} {node.name} to float16")
                graphs += [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
    return found


FLOAT16 = {"half": "float16", "fp16": "float16", "fp16_io32": "float16-io32"}


@pytest.mark.parametrize("name", list(FLOAT16))
def test_float16_twin_is_float32_with_the_exported_weights(exports: dict[str, Path], name: str) -> None:
    original = onnx.load(exports[name])
    assert float16_tensors(original), "the fixture should hold float16 tensors"
    twin = float_twin(original)
    assert twin.kind == FLOAT16[name]
    assert float16_tensors(twin.proto) == []
    onnx.checker.check_model(twin.proto, full_check=True)
    before = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in twin.proto.graph.initializer}
    assert set(PARAMETERS) <= set(after)
    for p in PARAMETERS:
        assert after[p].dtype == np.float32
        np.testing.assert_array_equal(after[p], before[p].astype(np.float32))
    assert {r.name for r in twin.weights} == set(PARAMETERS)
    assert {(r.dtype, r.scheme) for r in twin.weights} == {("float16", "float16")}
    assert twin.input_types == {"input": "float16" if name != "fp16_io32" else "float"}


@pytest.mark.parametrize("name", list(FLOAT16))
def test_float16_twin_computes_what_the_original_computes(exports: dict[str, Path], name: str) -> None:
    _, x, _ = lowp_models.data()
    original = run(exports[name], x)[0].astype(np.float32)
    twin = run(float_twin(onnx.load(exports[name])).proto, x)[0]
    assert twin.dtype == np.float32
    scale = np.abs(original).max()
    # float16 keeps 11 significant bits: the original's rounding, not the twin's, sets the tolerance
    np.testing.assert_allclose(twin, original, atol=4e-3 * scale, rtol=0)
    assert np.array_equal(twin.argmax(1), original.argmax(1))


@pytest.mark.parametrize("name", ["half", "fp16_io32"])
def test_float16_twin_gradients_match_finite_differences(exports: dict[str, Path], tmp_path: Path, name: str) -> None:
    from . import reference

    _, x, y = lowp_models.data()
    path = saved(tmp_path, float_twin(onnx.load(exports[name])))
    model = auditor.load_model(path)
    assert model.input_dtype == np.float32 and set(model.parameter_names) == set(PARAMETERS)
    grads = auditor.class_gradients(model, auditor.Dataset(x, y), batch_size=8)
    proto = onnx.load(path)
    for c in (0, 3):
        for p in ("c1.weight", "c3.bias", "fc.weight"):  # c1: the gradient crosses every layer
            got = grads[c][p].reshape(-1)
            idx = np.unique([int(np.argmax(np.abs(got))), 0, got.size // 2, got.size - 1])
            fd = reference.finite_difference_gradient(proto, x, y, c, p, "logits", "logits", indices=idx)
            err = np.abs(got[idx] - fd).max() / np.abs(got).max()
            assert err <= 1e-4, f"class {c}, {p}: relative error {err:.2e}"


# --------------------------------------------------------------------------- int8, QDQ


def dequantised_reference(original: onnx.ModelProto, weight: str) -> np.ndarray:
    """``scale · (q − zero point)`` from onnxruntime's ``<weight>_quantized`` and its DequantizeLinear, in numpy."""
    inits = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    node = next(n for n in original.graph.node if n.op_type == "DequantizeLinear"
                and n.input[0] == f"{weight}_quantized")
    q, scale = inits[node.input[0]].astype(np.int64), inits[node.input[1]].astype(np.float32)
    zero = inits[node.input[2]].astype(np.int64) if len(node.input) > 2 else np.zeros_like(scale, np.int64)
    if scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [-1 if k == axis else 1 for k in range(q.ndim)]
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero).astype(np.float32) * scale.reshape(scale.shape if scale.size > 1 else ())


QDQ = ["qdq_s8", "qdq_u8", "qdq_u8_pc"]


@pytest.mark.parametrize("name", QDQ)
def test_qdq_twin_weights_are_the_dequantised_values_under_their_own_names(exports: dict[str, Path],
                                                                           name: str) -> None:
    original = onnx.load(exports[name])
    twin = float_twin(original)
    assert twin.kind == "int8-qdq"
    values = {t.name: numpy_helper.to_array(t) for t in twin.proto.graph.initializer}
    for p in PARAMETERS:  # the float model's names, recovered from "<name>_quantized"
        np.testing.assert_array_equal(values[p], dequantised_reference(original, p), err_msg=p)
    records = {r.name: r for r in twin.weights}
    assert set(records) == set(PARAMETERS)
    per_channel = lowp_models.STATIC[name][1]
    assert records["c2.weight"].dtype == "int8" and records["c2.bias"].dtype == "int32"
    assert records["c2.weight"].scheme == ("per-channel" if per_channel else "per-tensor")
    assert records["c2.weight"].axis == (0 if per_channel else None)
    assert records["c2.weight"].sources == ("c2.weight_quantized",)
    assert not any(t.data_type in (TensorProto.INT8, TensorProto.INT32) and t.name in values and values[t.name].size > 1
                   for t in twin.proto.graph.initializer)
    assert any("straight through" in note for note in twin.notes)


@pytest.mark.parametrize("name", QDQ)
def test_qdq_twin_forward_is_the_deployed_graph(exports: dict[str, Path], name: str) -> None:
    _, x, _ = lowp_models.data()
    twin = float_twin(onnx.load(exports[name]))
    assert twin.session_config == {"session.disable_quant_qdq": "1"}
    # Without graph optimisations ONNX Runtime runs the QDQ graph op by op: DequantizeLinear,
    # float Conv, QuantizeLinear. The twin computes the same ops on the same float values, with
    # optimisations on too under its session config.
    op_by_op = run(exports[name], x, optimized=False)[0]
    np.testing.assert_array_equal(run(twin.proto, x, optimized=False)[0], op_by_op)
    np.testing.assert_array_equal(run(twin.proto, x, config=twin.session_config)[0], op_by_op)
    # Optimised, the deployed graph runs fused integer kernels (fixed-point requantisation):
    # its logits may differ by a quantisation step of the logits.
    deployed = run(exports[name], x)[0]
    original = onnx.load(exports[name])
    step = float(next(numpy_helper.to_array(t) for t in original.graph.initializer if t.name == "logits_scale"))
    assert np.abs(run(twin.proto, x, config=twin.session_config)[0] - deployed).max() <= 2 * step + 1e-6


def test_onnxruntime_requantises_float_weights_after_a_dequantize_linear(exports: dict[str, Path]) -> None:
    """Why the twin carries a session config: ONNX Runtime's own QDQ transformers (on by default)
    quantise the twin's float weights again, per tensor, so the session would not run θ."""
    _, x, _ = lowp_models.data()
    twin = float_twin(onnx.load(exports["qdq_u8_pc"]))
    op_by_op = run(twin.proto, x, optimized=False)[0]
    assert not np.array_equal(run(twin.proto, x)[0], op_by_op)
    np.testing.assert_array_equal(run(twin.proto, x, config=twin.session_config)[0], op_by_op)


def straight_through_reference(original: onnx.ModelProto, weights: Mapping[str, np.ndarray], x: np.ndarray,
                               y: np.ndarray) -> tuple[dict[int, dict[str, np.ndarray]], np.ndarray]:
    """Class gradients of the straight-through estimator, by PyTorch autograd in float64.

    The float network (the same Conv/ReLU/mean/Linear as the export, with the twin's float θ)
    is evaluated at the quantised activations the deployed graph computes: every quantised
    tensor is ``c + (a − c).detach()`` with ``a`` the deployed graph's DequantizeLinear output
    (from ONNX Runtime, no graph optimisations) and ``c = clamp(z, lo, hi)`` the float value
    clipped to the range the integer type covers, ``lo, hi = scale · (qmin − zp), scale ·
    (qmax − zp)``. So the forward values are the deployed ones, and the derivative of each
    quantisation is that of the clamp: rounding passes gradients unchanged. Nothing of the
    twin or the rewrite is used but θ's values.
    """
    import torch
    import torch.nn.functional as F

    inits = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    producers = {o: n for n in original.graph.node for o in n.output}
    taps = [n for n in original.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in producers
            and producers[n.input[0]].op_type == "QuantizeLinear"]
    assert len(taps) == 6  # input, three ReLUs (the quantiser folds them into the ranges), mean, logits
    acts = run(original, x, optimized=False, outputs=[t.output[0] for t in taps])
    w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in weights.items()}

    def fake_quant(z: torch.Tensor, k: int) -> torch.Tensor:
        node = taps[k]
        scale, zero = float(inits[node.input[1]]), inits[node.input[2]]
        info = np.iinfo(zero.dtype)
        c = torch.clamp(z, (info.min - float(zero)) * scale, (info.max - float(zero)) * scale)
        return c + (torch.tensor(acts[k], dtype=torch.float64) - c).detach()

    h = torch.tensor(acts[0], dtype=torch.float64)
    h = fake_quant(torch.relu(F.conv2d(h, w["c1.weight"], w["c1.bias"], padding=1)), 1)
    h = fake_quant(torch.relu(F.conv2d(h, w["c2.weight"], w["c2.bias"], padding=1)), 2)
    h = fake_quant(torch.relu(F.conv2d(h, w["c3.weight"], w["c3.bias"], padding=1, stride=2)), 3)
    h = fake_quant(h.mean((2, 3)), 4)
    logits = fake_quant(h @ w["fc.weight"].T + w["fc.bias"], 5)
    grads, losses = {}, np.zeros(N_CLASSES)
    labels = torch.tensor(y)
    for c in range(N_CLASSES):
        loss = F.cross_entropy(logits[labels == c], labels[labels == c])
        values = torch.autograd.grad(loss, [w[p] for p in PARAMETERS], retain_graph=True)
        grads[c] = {p: v.numpy() for p, v in zip(PARAMETERS, values)}
        losses[c] = float(loss.detach())
    return grads, losses


@pytest.mark.parametrize("name", QDQ)
def test_qdq_straight_through_gradients(exports: dict[str, Path], tmp_path: Path,
                                        name: str) -> None:
    _, x, y = lowp_models.data()
    model = auditor.load_model(saved(tmp_path, float_twin(onnx.load(exports[name]))))
    grads = auditor.class_gradients(model, auditor.Dataset(x, y), batch_size=8)
    expected, losses = straight_through_reference(onnx.load(exports[name]), model.weights(), x, y)
    # the gradient graph's own forward pass is the deployed graph's (same quantised activations)
    np.testing.assert_allclose(grads.losses, losses, rtol=1e-6)
    np.testing.assert_allclose(grads.losses, class_losses(run(exports[name], x, optimized=False)[0], y), rtol=1e-6)
    for c in range(N_CLASSES):
        for p in PARAMETERS:
            ref = expected[c][p]
            err = np.abs(grads[c][p] - ref).max() / np.abs(ref).max()
            assert err <= 1e-5, f"class {c}, {p}: relative error {err:.2e}"
    assert np.abs(expected[0]["c1.weight"]).max() > 0  # the first layer's gradient crossed five quantisations


# --------------------------------------------------------------------------- int8, QOperator and dynamic


@pytest.mark.parametrize(("qoperator", "qdq"), [("qop_u8", "qdq_u8"), ("qop_u8_pc", "qdq_u8_pc")])
def test_qoperator_twin_is_the_qdq_twin(exports: dict[str, Path], tmp_path: Path,
                                        qoperator: str, qdq: str) -> None:
    """The same network quantised with the same calibration in both formats: the QOperator model
    written in QDQ form must be the QDQ model's twin, weights, logits and gradients alike."""
    _, x, y = lowp_models.data()
    twins = {name: float_twin(onnx.load(exports[name])) for name in (qoperator, qdq)}
    assert twins[qoperator].kind == "int8-qoperator"
    assert twins[qoperator].rewritten == {"QLinearConv": 3, "QGemm": 1}
    weights = [{t.name: numpy_helper.to_array(t) for t in twins[n].proto.graph.initializer} for n in (qoperator, qdq)]
    for p in PARAMETERS:
        np.testing.assert_array_equal(weights[0][p], weights[1][p], err_msg=p)
    config = twins[qdq].session_config
    np.testing.assert_array_equal(run(twins[qoperator].proto, x, config=config)[0],
                                  run(twins[qdq].proto, x, config=config)[0])
    grads = []
    for name, twin in twins.items():
        model = auditor.load_model(saved(tmp_path, twin, f"{name}.onnx"))
        grads.append(auditor.class_gradients(model, auditor.Dataset(x, y), batch_size=8))
    for c in range(N_CLASSES):
        for p in PARAMETERS:
            np.testing.assert_allclose(grads[0][c][p], grads[1][c][p], rtol=1e-6, atol=1e-9, err_msg=f"{c} {p}")


@pytest.mark.parametrize("name", ["qop_u8", "qop_u8_pc"])
def test_qoperator_twin_forward_is_the_integer_kernels_within_a_step(exports: dict[str, Path], name: str) -> None:
    _, x, _ = lowp_models.data()
    original = onnx.load(exports[name])
    step = float(next(numpy_helper.to_array(t) for t in original.graph.initializer if t.name == "logits_scale"))
    deployed = run(original, x)[0]
    twin = float_twin(original)
    assert np.abs(run(twin.proto, x, config=twin.session_config)[0] - deployed).max() <= 2 * step + 1e-6


def dynamic_reference(original: onnx.ModelProto, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                      batch: int) -> dict[int, dict[str, np.ndarray]]:
    """Straight-through class gradients of the dynamically quantised network, by PyTorch autograd in float64.

    Each DynamicQuantizeLinear's outputs (q, scale, zero point) are read from ONNX Runtime running the
    original graph on the very batch the gradient pass runs (one class per batch); the quantised value
    ``(q − zp) · scale`` replaces the float one in the forward pass, and passes gradients unchanged
    (a range computed from the batch clips nothing).
    """
    import torch
    import torch.nn.functional as F

    dynamic = [n for n in original.graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert len(dynamic) == 4  # input, two ReLUs before a ConvInteger, the mean before MatMulInteger
    w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in weights.items()}
    out = {}
    for c in range(N_CLASSES):
        xc = x[y == c]
        assert len(xc) == batch
        taps = run(original, xc, outputs=[o for n in dynamic for o in n.output])

        def fake_quant(z: torch.Tensor, k: int) -> torch.Tensor:
            q, scale, zero = taps[3 * k: 3 * k + 3]  # noqa: B023 (used within the iteration)
            a = (q.astype(np.float32) - np.float32(zero)) * np.float32(scale)
            return z + (torch.tensor(a, dtype=torch.float64) - z).detach()

        h = fake_quant(torch.tensor(xc, dtype=torch.float64), 0)
        h = fake_quant(torch.relu(F.conv2d(h, w["c1.weight"], w["c1.bias"], padding=1)), 1)
        h = fake_quant(torch.relu(F.conv2d(h, w["c2.weight"], w["c2.bias"], padding=1)), 2)
        h = fake_quant(torch.relu(F.conv2d(h, w["c3.weight"], w["c3.bias"], padding=1, stride=2)).mean((2, 3)), 3)
        logits = h @ w["fc.weight"] + w["fc.bias"]  # quantize_dynamic stores the Linear weight as MatMul's [in, out]
        loss = F.cross_entropy(logits, torch.tensor(y[y == c]))
        out[c] = {p: v.numpy() for p, v in zip(PARAMETERS, torch.autograd.grad(loss, [w[p] for p in PARAMETERS]))}
    return out


def test_dynamic_quantisation_twin(exports: dict[str, Path], tmp_path: Path) -> None:
    _, x, y = lowp_models.data()
    original = onnx.load(exports["dynamic"])
    twin = float_twin(original)
    assert twin.kind == "int8-dynamic"
    assert twin.rewritten == {"DynamicQuantizeLinear": 4, "ConvInteger": 3, "MatMulInteger": 1}
    assert {r.name for r in twin.weights} == {"c1.weight", "c2.weight", "c3.weight", "fc.weight"}
    # the batch's scale and zero point are onnxruntime's: the twin's logits are the integer kernels' but
    # for float rounding (int32 accumulation there, float32 here)
    np.testing.assert_allclose(run(twin.proto, x, config=twin.session_config)[0], run(original, x)[0], rtol=0,
                               atol=1e-5)
    batch = int(np.bincount(y).max())
    model = auditor.load_model(saved(tmp_path, twin))
    grads = auditor.class_gradients(model, auditor.Dataset(x, y), batch_size=batch)
    expected = dynamic_reference(original, model.weights(), x, y, batch)
    for c in range(N_CLASSES):
        for p in PARAMETERS:
            ref = expected[c][p]
            err = np.abs(grads[c][p] - ref).max() / np.abs(ref).max()
            assert err <= 1e-5, f"class {c}, {p}: relative error {err:.2e}"


# --------------------------------------------------------------------------- weight-only, in-graph quantisation, movement


def _weight_only_mlp() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> MatMul(DQ(w1_quantized), per column) + b1 -> Relu -> MatMul(DQ(Q(w2))) + b2: int8 weights, float activations.

    ``w2`` is a float weight quantised inside the graph, as quantisation-aware training exports write it.
    """
    rng = np.random.default_rng(11)
    w1q = rng.integers(-127, 128, (6, 8)).astype(np.int8)
    w1s = rng.uniform(0.005, 0.02, 8).astype(np.float32)
    w1z = rng.integers(-3, 4, 8).astype(np.int8)
    w2 = rng.normal(0, 0.5, (8, 3)).astype(np.float32)
    values = {"w1_quantized": w1q, "w1_scale": w1s, "w1_zero": w1z, "b1": rng.normal(0, 0.1, 8).astype(np.float32),
              "w2": w2, "w2_scale": np.array(0.01, np.float32), "w2_zero": np.array(3, np.int8),
              "b2": rng.normal(0, 0.1, 3).astype(np.float32)}
    graph = helper.make_graph([
        helper.make_node("DequantizeLinear", ["w1_quantized", "w1_scale", "w1_zero"], ["w1_dq"], axis=1),
        helper.make_node("MatMul", ["x", "w1_dq"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("QuantizeLinear", ["w2", "w2_scale", "w2_zero"], ["w2_q"]),
        helper.make_node("DequantizeLinear", ["w2_q", "w2_scale", "w2_zero"], ["w2_dq"]),
        helper.make_node("MatMul", ["h2", "w2_dq"], ["h3"]), helper.make_node("Add", ["h3", "b2"], ["logits"])],
        "weight_only", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in values.items()])
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), values


def test_weight_only_and_in_graph_quantised_weights(tmp_path: Path) -> None:
    from . import reference

    model, values = _weight_only_mlp()
    twin = float_twin(model)
    assert twin.kind == "int8-weight-only"
    weights = {t.name: numpy_helper.to_array(t) for t in twin.proto.graph.initializer}
    expected_w1 = (values["w1_quantized"].astype(np.int64) - values["w1_zero"]).astype(np.float32) * values["w1_scale"]
    q2 = np.clip(np.rint(values["w2"] / values["w2_scale"]) + 3, -128, 127)  # QuantizeLinear: round half to even
    expected_w2 = ((q2 - 3) * values["w2_scale"]).astype(np.float32)
    np.testing.assert_array_equal(weights["w1"], expected_w1)
    np.testing.assert_array_equal(weights["w2"], expected_w2)  # the float weight's name now holds the deployed values
    assert not np.array_equal(weights["w2"], values["w2"])
    records = {r.name: r for r in twin.weights}
    assert (records["w1"].scheme, records["w1"].axis, records["w1"].dtype) == ("per-channel", 1, "int8")
    assert (records["w2"].scheme, records["w2"].sources) == ("per-tensor", ("w2",))
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in twin.proto.graph.node)
    x = np.random.default_rng(12).normal(0, 1, (30, 6)).astype(np.float32)
    y = np.arange(30) % 3
    np.testing.assert_allclose(run(twin.proto, x)[0], run(model, x, optimized=False)[0], rtol=1e-6, atol=1e-6)
    # no activation is quantised: the twin is smooth in θ, and finite differences are a reference
    path = saved(tmp_path, twin)
    loaded = auditor.load_model(path)
    assert set(loaded.parameter_names) == {"w1", "b1", "w2", "b2"}
    grads = auditor.class_gradients(loaded, auditor.Dataset(x, y), batch_size=10)
    for c in (0, 2):
        for p in ("w1", "w2"):
            got = grads[c][p].reshape(-1)
            idx = np.unique([int(np.argmax(np.abs(got))), 0, got.size // 2, got.size - 1])
            fd = reference.finite_difference_gradient(onnx.load(path), x, y, c, p, "logits", "logits", indices=idx)
            assert np.abs(got[idx] - fd).max() / np.abs(got).max() <= 1e-4, (c, p)


def test_dequantize_linear_moves_above_gathers_and_pools_to_its_quantised_source() -> None:
    """An int8 embedding table read by Gather (quantize_dynamic), and a MaxPool on int8 activations
    (QOperator): the dequantisation commutes with both, so the table becomes float θ and the
    activation's QuantizeLinear feeds its DequantizeLinear directly."""
    rng = np.random.default_rng(13)
    table = rng.integers(-127, 128, (10, 4)).astype(np.int8)
    graph = helper.make_graph([
        helper.make_node("Gather", ["emb_quantized", "ids"], ["picked_q"]),
        helper.make_node("DequantizeLinear", ["picked_q", "emb_scale", "emb_zero"], ["picked"]),
        helper.make_node("ReduceMean", ["picked"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("QuantizeLinear", ["pooled", "act_scale", "act_zero"], ["pooled_q"]),
        helper.make_node("Unsqueeze", ["pooled_q", "axes"], ["pooled_q3"]),
        helper.make_node("MaxPool", ["pooled_q3"], ["max_q"], kernel_shape=[2], strides=[2]),
        helper.make_node("DequantizeLinear", ["max_q", "act_scale", "act_zero"], ["y"])],
        "movement", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "emb_quantized"), numpy_helper.from_array(np.array(0.02, np.float32), "emb_scale"),
         numpy_helper.from_array(np.array(-2, np.int8), "emb_zero"),
         numpy_helper.from_array(np.array(0.01, np.float32), "act_scale"),
         numpy_helper.from_array(np.array(128, np.uint8), "act_zero"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    twin = float_twin(model)
    nodes = {n.op_type: n for n in twin.proto.graph.node}
    weights = {t.name: numpy_helper.to_array(t) for t in twin.proto.graph.initializer}
    np.testing.assert_array_equal(weights["emb"], ((table.astype(np.int64) + 2) * np.float32(0.02)).astype(np.float32))
    assert nodes["Gather"].input[0] == "emb"
    quant = nodes["QuantizeLinear"]
    assert nodes["DequantizeLinear"].input[0] == quant.output[0]  # the pair is adjacent: straight-through applies
    assert [n.op_type for n in twin.proto.graph.node][-3:] == ["DequantizeLinear", "Unsqueeze", "MaxPool"]
    ids = rng.integers(0, 10, (7, 5)).astype(np.int64)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (model, twin.proto)]
    np.testing.assert_array_equal(*(s.run(None, {"ids": ids})[0] for s in sessions))
