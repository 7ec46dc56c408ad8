"""The straight-through rewrite of activation QuantizeLinear/DequantizeLinear pairs (auditor.rewrites.fake_quant).

References: ONNX Runtime running the exported pair (forward values, bit for bit), and the
derivative of the clamp to the integer range written out in numpy (gradients, through
onnx-ad's reverse mode of the rewritten graph).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.twin import float_twin


def run(model: onnx.ModelProto, v: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, {"v": v}))



def _pair_model(shape: list[int], scale: np.ndarray, zero: np.ndarray, axis: int | None = None) -> onnx.ModelProto:
    """v -> QuantizeLinear -> DequantizeLinear -> y, the scale and zero point shared."""
    attrs = {} if axis is None else {"axis": axis}
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["v", "s", "z"], ["q"], **attrs),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)],
        "pair", [helper.make_tensor_value_info("v", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "z")])
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])


def _forward_and_gradient(model: onnx.ModelProto, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y of the exported pair, y of the rewritten graph, ∂Σy/∂v through onnx-ad on the rewritten graph)."""
    import onnx_ad

    from auditor.rewrites.fake_quant import straight_through_fake_quant

    exported = run(model, v)[0]
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert straight_through_fake_quant(rewritten, {"v"}) == 1
    reverse = onnx_ad.reverse(rewritten, inputs=["v"], outputs=["y"], layout="onnx")
    session = ort.InferenceSession(reverse.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {"v": v, "adj_y": np.ones((*v.shape, 1), np.float32)})))
    return exported, values["y"], values["adj_v"][..., 0]


@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quant_rewrite_keeps_values_and_passes_gradients_inside_the_range(per_channel: bool) -> None:
    """Forward: bit for bit the exported pair, ties and saturation included. Gradient: 1 strictly
    inside ``(scale · (qmin − zp), scale · (qmax − zp))`` and 0 outside, the clamp's derivative."""
    rng = np.random.default_rng(0)
    if per_channel:  # int8, one scale and zero point per column (axis 1)
        scale = np.array([0.05, 0.1, 0.013], np.float32)
        zero = np.array([-10, 0, 100], np.int8)
        lo, hi = (-128 - zero.astype(np.float64)) * scale, (127 - zero.astype(np.float64)) * scale
        model = _pair_model([400, 3], scale, zero, axis=1)
        v = (rng.uniform(-1.3, 1.3, (400, 3)) * (hi - lo) / 2 + (hi + lo) / 2).astype(np.float32)
    else:  # uint8, one scale
        scale, zero = np.array(0.1, np.float32), np.array(10, np.uint8)
        lo, hi = np.float64(-1.0), np.float64(24.5)
        model = _pair_model([1200], scale, zero)
        v = rng.uniform(-12, 36, 1200).astype(np.float32)
        v[:200] = ((np.arange(200) - 5 + 0.5) * scale).astype(np.float32)  # ties: half-way between two levels
    exported, rewritten, gradient = _forward_and_gradient(model, v)
    np.testing.assert_array_equal(rewritten, exported)
    inside = (v > lo) & (v < hi)
    assert 0.1 < inside.mean() < 0.9  # both cases are exercised
    # the rewrite rounds onnxruntime's own float32 quotient: no element falls back to the exported value
    np.testing.assert_array_equal(gradient, inside.astype(np.float32))


def test_fake_quant_rewrite_on_run_time_quantisation_is_the_identity() -> None:
    """DynamicQuantizeLinear's range covers the tensor: every element passes its gradient unchanged."""
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["v"], ["q", "s", "z"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "dynamic", [helper.make_tensor_value_info("v", TensorProto.FLOAT, [3, 500])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 500])])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    v = np.random.default_rng(1).normal(0.3, 2.0, (3, 500)).astype(np.float32)
    twin = float_twin(model)
    exported, rewritten, gradient = _forward_and_gradient(twin.proto, v)
    np.testing.assert_array_equal(exported, run(model, v)[0])  # the twin's DynamicQuantizeLinear is onnxruntime's
    np.testing.assert_array_equal(rewritten, exported)
    np.testing.assert_array_equal(gradient, np.ones_like(v))


def test_fake_quant_rewrite_refuses_a_pair_with_different_scales() -> None:
    from auditor.errors import UnsupportedNodeError
    from auditor.rewrites.fake_quant import straight_through_fake_quant

    model = _pair_model([4], np.array(0.1, np.float32), np.array(0, np.uint8))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.2, np.float32), "s2"))
    model.graph.node[1].input[1] = "s2"
    with pytest.raises(UnsupportedNodeError, match="^QuantizeLinear 'q' and DequantizeLinear 'y' use different "
                                                   "scales or zero points; .* as onnxruntime's quantizer writes it$"):
        straight_through_fake_quant(model, {"v"})
