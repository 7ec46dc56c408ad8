"""QOperator ops in float form (auditor.twin): each integer kernel as DequantizeLinear -> float op -> QuantizeLinear.

One node per graph, random integer data: the twin's output against ONNX Runtime running the
integer kernel itself (one quantisation step apart at most, since the kernel requantises with a
fixed-point multiplier), and the one-line refusals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import ModelError
from auditor.twin import float_twin


def _quantised_graph(op: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                     inputs: list[str]) -> onnx.ModelProto:
    """Float inputs -> QuantizeLinear -> ``nodes`` (integer) -> DequantizeLinear -> float output ``y``."""
    graph = helper.make_graph(
        [*(helper.make_node("QuantizeLinear", [f"{i}", f"{i}_s", f"{i}_z"], [f"{i}_q"]) for i in inputs), *nodes,
         helper.make_node("DequantizeLinear", ["out_q", "out_s", "out_z"], ["y"])],
        op, [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2, 4, 6, 6] if op != "mm" else [2, 6])
             for i in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, ir_version=8,
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _scale(name: str, value: float, zero: int) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.array(value, np.float32), f"{name}_s"),
            numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_z")]


def _single_op(op: str) -> onnx.ModelProto:
    ms = "com.microsoft"
    inits = _scale("a", 0.02, 128) + _scale("b", 0.03, 120) + _scale("out", 0.025, 110)
    if op in ("QLinearAdd", "QLinearMul"):
        node = helper.make_node(op, ["a_q", "a_s", "a_z", "b_q", "b_s", "b_z", "out_s", "out_z"], ["out_q"], domain=ms)
        return _quantised_graph(op, [node], inits, ["a", "b"])
    if op == "QLinearConcat":
        node = helper.make_node(op, ["out_s", "out_z", "a_q", "a_s", "a_z", "b_q", "b_s", "b_z"], ["out_q"],
                                domain=ms, axis=1)
        return _quantised_graph(op, [node], inits, ["a", "b"])
    attrs: dict[str, Any] = {"LeakyRelu": {"alpha": 0.1}, "AveragePool": {"kernel_shape": [2, 2], "strides": [2, 2]},
                             "GlobalAveragePool": {}, "Sigmoid": {}}[op.removeprefix("QLinear")]
    if op.startswith("QLinear") and op != "QLinearConv":
        node = helper.make_node(op, ["a_q", "a_s", "a_z", "out_s", "out_z"], ["out_q"], domain=ms, **attrs)
        return _quantised_graph(op, [node], inits, ["a"])
    raise AssertionError(op)


def _weighted_op(op: str) -> onnx.ModelProto:
    """QLinearConv, QLinearMatMul and com.microsoft QGemm with int8 per-channel weights and an int32 bias."""
    rng = np.random.default_rng(6)
    inits = _scale("a", 0.02, 128) + _scale("out", 0.05, 100)
    if op == "QLinearConv":
        w = rng.integers(-63, 64, (5, 4, 3, 3)).astype(np.int8)  # 7 bits: x86 u8s8 kernels saturate beyond
        w_s = (rng.uniform(0.5, 1.5, 5) * 0.01).astype(np.float32)
        bias = rng.integers(-2000, 2000, 5).astype(np.int32)
        inputs = ["a_q", "a_s", "a_z", "w", "w_s", "w_z", "out_s", "out_z", "bias"]
        node = helper.make_node(op, inputs, ["out_q"], pads=[1, 1, 1, 1], strides=[2, 2], kernel_shape=[3, 3])
    else:
        w = rng.integers(-127, 128, (6, 5) if op == "QLinearMatMul" else (5, 6)).astype(np.int8)
        w_s = (rng.uniform(0.5, 1.5, 5) * 0.01).astype(np.float32)
        bias = rng.integers(-2000, 2000, 5).astype(np.int32)
        if op == "QLinearMatMul":
            node = helper.make_node(op, ["a_q", "a_s", "a_z", "w", "w_s", "w_z", "out_s", "out_z"], ["out_q"])
        else:  # QGemm with a float output: no output scale, no output DequantizeLinear
            node = helper.make_node("QGemm", ["a_q", "a_s", "a_z", "w", "w_s", "w_z", "bias"], ["y"],
                                    domain="com.microsoft", transB=1, alpha=1.0)
    inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_s, "w_s"),
              numpy_helper.from_array(np.zeros(5, np.int8), "w_z"), numpy_helper.from_array(bias, "bias")]
    model = _quantised_graph("mm" if op != "QLinearConv" else op, [node], inits, ["a"])
    if op == "QGemm":  # the op writes y itself
        nodes = [n for n in model.graph.node if n.op_type != "DequantizeLinear"]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
                                "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConv", "QLinearMatMul",
                                "QGemm"])
def test_qoperator_ops_become_their_float_op_between_dq_and_q(op: str) -> None:
    model = _weighted_op(op) if op in ("QLinearConv", "QLinearMatMul", "QGemm") else _single_op(op)
    twin = float_twin(model)
    assert twin.kind == "int8-qoperator" and twin.rewritten == {op: 1}
    assert not any(n.domain == "com.microsoft" or n.op_type.startswith("QLinear") for n in twin.proto.graph.node)
    rng = np.random.default_rng(8)
    feeds = {v.name: rng.uniform(-2, 2, [d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
             for v in model.graph.input}
    options = ort.SessionOptions()
    for key, value in twin.session_config.items():
        options.add_session_config_entry(key, value)
    deployed = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    float_form = ort.InferenceSession(twin.proto.SerializeToString(), options,
                                      providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    step = 0.025 if op not in ("QLinearConv", "QLinearMatMul") else 0.05  # the output scale
    if op == "QGemm":  # float output: the integer kernel's accumulation and the float op agree to rounding
        np.testing.assert_allclose(float_form, deployed, rtol=1e-5, atol=1e-5)
    else:  # requantised with a fixed-point multiplier there, rounded from float here: one step at most
        assert np.abs(float_form - deployed).max() <= step * 1.001
        assert np.mean(float_form == deployed) > 0.95


def test_unsupported_integer_op_is_refused_in_one_line() -> None:
    model = _single_op("QLinearSigmoid")
    model.graph.node[1].op_type = "QLinearSoftmax"
    model.graph.node[1].name = "softmax"
    with pytest.raises(ModelError) as err:
        float_twin(model)
    assert str(err.value) == (
        "node 'softmax' (com.microsoft.QLinearSoftmax) is a quantised operator the auditor cannot turn into float "
        "form; it reads QDQ models (QuantizeLinear/DequantizeLinear), the QOperator ops QLinearConv, QLinearMatMul, "
        "QGemm, QLinearConcat, QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool, "
        "QLinearAveragePool and quantize_dynamic's MatMulInteger/ConvInteger. Quantise in QDQ format instead: "
        "onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)")
    assert "\n" not in str(err.value)


def test_integer_activation_read_by_a_float_op_is_refused_in_one_line() -> None:
    model = _single_op("QLinearSigmoid")
    del model.graph.node[1:]  # the integer activation dequantised by hand: Cast to float, then scale
    model.graph.node.extend([helper.make_node("Cast", ["a_q"], ["a_f"], to=TensorProto.FLOAT, name="manual"),
                             helper.make_node("Mul", ["a_f", "a_s"], ["y"])])
    with pytest.raises(ModelError, match=r"^node 'manual' \(Cast\) computes on the integer output of QuantizeLinear "
                                         r"'a_q'; .* quant_format=QuantFormat.QDQ\)$"):
        float_twin(model)

