"""Graph transforms: rewrites keep the model's outputs; gradient rules agree with each other."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor import graph as G
from auditor.errors import UnsupportedNodeError
from auditor.runtime import make_session


def _conv_model(stride: int, pad: int, dilation: int) -> onnx.ModelProto:
    rng = np.random.default_rng(stride * 10 + pad + dilation)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    fc = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[stride, stride], pads=[pad] * 4,
                              dilations=[dilation, dilation]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["z"], transB=1)]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 9])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], [w, fc])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(("stride", "pad", "dilation"), [(1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 2, 2), (1, 0, 1)])
def test_fast_conv_weight_rule_equals_onnx_ad_and_finite_differences(tmp_path, stride: int, pad: int,
                                                                     dilation: int) -> None:
    from . import reference

    path = tmp_path / "conv.onnx"
    onnx.save(_conv_model(stride, pad, dilation), path)
    model = auditor.load_model(path)
    rng = np.random.default_rng(0)
    data = auditor.Dataset(rng.standard_normal((12, 3, 9, 9)).astype(np.float32), np.arange(12) % 3)
    fast = auditor.class_gradients(model, data, batch_size=4)
    from auditor import reverse_rules

    with reverse_rules.disabled("conv_weight", "conv_input"):  # onnx-ad's own Conv rule
        slow = auditor.class_gradients(model, data, batch_size=4)
    np.testing.assert_allclose(fast.flat, slow.flat, rtol=1e-4, atol=1e-6 * np.abs(slow.flat).max())
    g = fast[1]["w"].reshape(-1)
    idx = np.array([0, 17, 50, int(np.argmax(np.abs(g)))])
    fd = reference.finite_difference_gradient(onnx.load(path), data.x, data.y, 1, "w", "z", "logits", indices=idx)
    np.testing.assert_allclose(g[idx], fd, rtol=1e-4, atol=1e-4 * np.abs(g).max())


def test_unsupported_node_is_named_before_work_starts(tmp_path) -> None:
    w = numpy_helper.from_array(np.ones((6, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                           helper.make_node("Mystery", ["h"], ["y"], domain="com.example", name="odd")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(m, tmp_path / "custom.onnx")
    model = auditor.load_model(tmp_path / "custom.onnx")
    with pytest.raises(UnsupportedNodeError, match=r"node 'odd' \(com\.example\.Mystery\) cannot be differentiated"):
        G.gradient_graph(model, 2, {"x": (6,)})


def test_training_mode_batchnorm_is_refused(tmp_path) -> None:
    c = 3
    inits = [numpy_helper.from_array(np.ones(c, np.float32), n) for n in ("s", "b", "m", "v")]
    inits.append(numpy_helper.from_array(np.ones((2, c * 4), np.float32), "fc"))
    g = helper.make_graph([
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1, name="bn1"),
        helper.make_node("Flatten", ["y"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["z"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, 2, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)]), tmp_path / "bn.onnx")
    model = auditor.load_model(tmp_path / "bn.onnx")
    with pytest.raises(UnsupportedNodeError, match="training_mode=1.*model.eval"):
        G.gradient_graph(model, 2, {"x": (c, 2, 2)})


def test_simplify_transposes_only_rewrites_size_one_moves() -> None:
    nodes = [helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1]),
             helper.make_node("Transpose", ["b"], ["c"], perm=[1, 0, 2])]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 1, 5])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    x = np.arange(20, dtype=np.float32).reshape(4, 1, 5)
    before = make_session(m, "cpu").run(None, {"a": x})[0]
    assert G.simplify_transposes(m) == 1  # [4,1,5] -> [4,5,1] is a view; [4,5,1] -> [5,4,1] is not
    assert [n.op_type for n in m.graph.node] == ["Reshape", "Transpose"]
    np.testing.assert_array_equal(make_session(m, "cpu").run(None, {"a": x})[0], before)
