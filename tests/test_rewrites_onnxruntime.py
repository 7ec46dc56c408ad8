"""ONNX Runtime's contrib ops (``com.microsoft``): decompositions equal ORT's kernels, gradients are exact.

Outputs (every declared output) are compared with ONNX Runtime's own contrib kernels; the
reference evaluator cannot run these ops, so gradients are compared with float64 central
differences of the *rewritten* graph, which the outputs check ties to the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.differentiable import check_gradient_support
from auditor.errors import UnsupportedNodeError
from auditor.rewrites import needed_rewrites

from . import reference
from .rewrite_cases import MS, check_gradients, check_outputs, cnn, data, init, ort_outputs, rewritten


def single_node(node: onnx.NodeProto, inputs: dict[str, np.ndarray], outputs: Sequence[str],
                inits: Sequence[onnx.TensorProto] = (), opset: int = 17) -> onnx.ModelProto:
    dtype = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}
    graph = helper.make_graph([node], "single", [helper.make_tensor_value_info(n, dtype[v.dtype], list(v.shape))
                                                 for n, v in inputs.items()],
                              [helper.make_empty_tensor_value_info(o) for o in outputs],
                              list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)],
                             ir_version=8)


def same_as_ort(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], params: Sequence[str] = ()) -> None:
    """Every output of the rewritten node equals ONNX Runtime's contrib kernel, and no contrib op is left."""
    check_outputs(proto, params or [v.name for v in proto.graph.input if v.name not in feeds] or list(feeds),
                  feeds, [f"{MS}.{n.op_type}" for n in proto.graph.node])


def check_weight_gradients(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], params: Sequence[str],
                           loss: str) -> None:
    """onnx-ad's gradient of the scalar ``loss`` w.r.t. the initializers ``params`` equals float64 differences.

    For graphs with several (integer) inputs, which the auditor's loader does not take.
    """
    import onnx_ad
    from onnx.reference import ReferenceEvaluator

    promoted = onnx.ModelProto()
    promoted.CopyFrom(proto)
    values = {t.name: numpy_helper.to_array(t) for t in promoted.graph.initializer if t.name in params}
    kept = [t for t in promoted.graph.initializer if t.name not in params]
    del promoted.graph.initializer[:]
    promoted.graph.initializer.extend(kept)
    promoted.graph.input.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape))
                                for n, v in values.items())
    promoted = onnx.shape_inference.infer_shapes(promoted)
    reverse = onnx_ad.reverse(promoted, inputs=list(params), outputs=[loss], layout="onnx")
    got = ort_outputs(reverse, {**feeds, **values, f"adj_{loss}": np.ones(1, np.float32)})[1:]
    evaluator = ReferenceEvaluator(reference.float64_model(promoted))
    wide = {n: v.astype(np.float64) for n, v in values.items()}

    def total(name: str, flat_index: int, step: float) -> float:
        moved = dict(wide)
        moved[name] = wide[name].copy()
        moved[name].reshape(-1)[flat_index] += step
        return float(evaluator.run(None, {**feeds, **moved})[0])

    for name, gradient in zip(params, got, strict=True):
        g = gradient.reshape(-1)
        for i in np.unique([0, g.size // 2, g.size - 1, int(np.argmax(np.abs(g)))]):
            fd = (total(name, int(i), 1e-6) - total(name, int(i), -1e-6)) / 2e-6
            np.testing.assert_allclose(g[i], fd, rtol=1e-4, atol=1e-4 * np.abs(g).max(), err_msg=name)


@pytest.mark.parametrize(("trans_batch", "trans"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_fused_matmul_equals_onnx_runtime(trans_batch, trans) -> None:
    rng = np.random.default_rng(trans_batch * 2 + trans)
    a_shape = [2, 3, 4, 5]
    a_eff = [3, 4, 2, 5] if trans_batch else a_shape  # the leading axis moves behind the batch axes
    rows, inner = (a_eff[-1], a_eff[-2]) if trans else (a_eff[-2], a_eff[-1])
    b = rng.standard_normal([*a_eff[:-2], 6, inner] if trans else [*a_eff[:-2], inner, 6]).astype(np.float32)
    del rows
    feeds = {"A": rng.standard_normal(a_shape).astype(np.float32), "B": b}
    node = helper.make_node("FusedMatMul", ["A", "B"], ["Y"], domain=MS, alpha=0.7, transA=trans, transB=trans,
                            transBatchA=trans_batch)
    same_as_ort(single_node(node, feeds, ["Y"]), feeds, ["A", "B"])


@pytest.mark.parametrize(("activation", "params"), [("Relu", []), ("LeakyRelu", [0.2]), ("Clip", [-0.5, 0.7]),
                                                    ("HardSigmoid", [0.3, 0.4]), ("Sigmoid", [])])
def test_fused_conv_and_gemm_equal_onnx_runtime(activation, params) -> None:
    rng = np.random.default_rng(len(activation))
    feeds = {"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32),
             "w": rng.standard_normal((6, 2, 3, 3)).astype(np.float32),
             "z": rng.standard_normal((2, 6, 3, 3)).astype(np.float32)}
    conv = helper.make_node("FusedConv", ["x", "w", "", "z"], ["y"], domain=MS, activation=activation,
                            group=2, strides=[2, 2], pads=[1, 1, 0, 0], **({"activation_params": params} if params else {}))
    same_as_ort(single_node(conv, feeds, ["y"]), feeds, ["w"])
    if activation == "Clip":
        return  # ONNX Runtime's FusedGemm has no Clip
    feeds = {"a": rng.standard_normal((5, 4)).astype(np.float32), "b": rng.standard_normal((3, 4)).astype(np.float32),
             "c": rng.standard_normal(3).astype(np.float32)}
    extra = dict(zip(("activation_alpha", "activation_beta"), params))
    gemm = helper.make_node("FusedGemm", ["a", "b", "c"], ["y"], domain=MS, activation=activation, transB=1,
                            alpha=0.5, beta=2.0, **extra)
    same_as_ort(single_node(gemm, feeds, ["y"]), feeds, ["b"])


def test_skip_layer_normalization_gives_every_output_onnx_runtime_gives() -> None:
    rng = np.random.default_rng(3)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in
             (("x", (2, 3, 8)), ("skip", (2, 3, 8)), ("gamma", (8,)), ("beta", (8,)), ("bias", (8,)))}
    node = helper.make_node("SkipLayerNormalization", list(feeds), ["y", "mean", "inv_std", "sum"], domain=MS,
                            epsilon=1e-3)
    same_as_ort(single_node(node, feeds, ["y", "mean", "inv_std", "sum"]), feeds, ["gamma"])
    simplified = helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma", "bias"],
                                  ["y", "", "inv_std", "sum"], domain=MS, epsilon=1e-3)
    same_as_ort(single_node(simplified, feeds, ["y", "inv_std", "sum"]), feeds, ["gamma"])


def test_embed_layer_normalization_equals_onnx_runtime_with_mask_index_and_sum() -> None:
    rng = np.random.default_rng(4)
    feeds = {"ids": rng.integers(0, 10, (2, 5)).astype(np.int32),
             "segments": (np.arange(5)[None] >= 3).repeat(2, 0).astype(np.int32),
             "mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)}
    inits = [init(rng, "words", [10, 8]), init(rng, "positions", [7, 8]), init(rng, "segment_table", [2, 8]),
             init(rng, "gamma", [8]), init(rng, "beta", [8])]
    node = helper.make_node("EmbedLayerNormalization", ["ids", "segments", "words", "positions", "segment_table",
                                                        "gamma", "beta", "mask"], ["y", "mask_index", "sum"],
                            domain=MS, epsilon=1e-5)
    proto = single_node(node, feeds, ["y", "mask_index", "sum"], inits)
    params = ["words", "positions", "segment_table", "gamma", "beta"]
    same_as_ort(proto, feeds, params)
    # gradients into the embedding tables (through the Gathers) against float64 differences
    new = rewritten(proto, params, None)
    weighting = numpy_helper.from_array(rng.standard_normal((2, 5, 8)).astype(np.float32), "weighting")
    new.graph.initializer.append(weighting)
    new.graph.node.extend([helper.make_node("Add", ["y", "sum"], ["both"]),
                           helper.make_node("Mul", ["both", "weighting"], ["weighted"]),
                           helper.make_node("ReduceSum", ["weighted"], ["loss"], keepdims=0)])
    del new.graph.output[:]
    new.graph.output.append(helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))
    check_weight_gradients(new, feeds, params, "loss")


def transformer_chain(*, attention: bool = False, opset: int = 17) -> onnx.ModelProto:
    """Features [N, 32] -> [N, 4, 8] -> MatMul -> the decomposed ONNX Runtime ops in turn -> mean -> Gemm.

    (BiasAdd has no CPU kernel in ONNX Runtime; it is checked against its formula instead.)

    With ``attention``, a fused ``com.microsoft.Attention`` sits in the middle instead. The
    default-domain ``LayerNormalization`` is ONNX Runtime's own schema below opset 17.
    """
    rng = np.random.default_rng(7)
    shapes = {"w1": [8, 16], "w3": [8, 8], "fc": [3, 8]}
    if attention:
        shapes |= {"qkv": [16, 24], "qkv_bias": [24]}
        middle = [helper.make_node("Attention", ["p1", "qkv", "qkv_bias"], ["ln"], domain=MS, num_heads=2,
                                   name="attn")]
    else:
        shapes |= {"b1": [16], "w2": [16, 8], "gamma1": [8], "beta1": [8], "bias2": [8], "fb": [8], "scale": [8],
                   "gamma2": [8], "bias3": [8], "gamma3": [8], "beta3": [8]}
        middle = [
            helper.make_node("BiasGelu", ["p1", "b1"], ["g1"], domain=MS),
            helper.make_node("MatMul", ["g1", "w2"], ["p2"]),
            helper.make_node("SkipLayerNormalization", ["p2", "h0", "gamma1", "beta1", "bias2"], ["s1"], domain=MS,
                             epsilon=1e-5),
            helper.make_node("FastGelu", ["s1", "fb"], ["f1"], domain=MS),
            helper.make_node("QuickGelu", ["f1"], ["q1"], domain=MS, alpha=1.5),
            helper.make_node("Gelu", ["q1"], ["e1"], domain=MS),
            helper.make_node("SimplifiedLayerNormalization", ["e1", "scale"], ["r1"], epsilon=1e-5),
            helper.make_node("SkipSimplifiedLayerNormalization", ["r1", "h0", "gamma2", "bias3"], ["r2"], domain=MS,
                             epsilon=1e-5),
            helper.make_node("LayerNormalization", ["r2", "gamma3", "beta3"], ["ln"], axis=-1, epsilon=1e-5)]
    inits = [init(rng, n, s, 0.4 if len(s) > 1 else 0.3) for n, s in shapes.items()]
    inits.append(numpy_helper.from_array(np.array([-1, 4, 8], np.int64), "tokens"))
    nodes = [helper.make_node("Reshape", ["x", "tokens"], ["h0"]),
             helper.make_node("MatMul", ["h0", "w1"], ["p1"], name="first"),
             *middle,
             helper.make_node("FusedMatMul", ["ln", "w3"], ["fm"], domain=MS, transB=1, alpha=0.5),
             helper.make_node("ReduceMean", ["fm"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("Gemm", ["pooled", "fc"], ["z"], transB=1)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)],
                             ir_version=8)


@pytest.mark.parametrize("opset", [17, 16])
def test_onnx_runtime_fused_ops_deep_in_a_chain_keep_outputs_and_exact_gradients(tmp_path, opset) -> None:
    proto = transformer_chain(opset=opset)
    x, y = data((32,), n=6)
    path = tmp_path / "chain.onnx"
    onnx.save(proto, path)
    model = auditor.load_model(path)
    ops = [f"{MS}.{op}" for op in ("BiasGelu", "SkipLayerNormalization", "FastGelu", "QuickGelu", "Gelu",
                                   "SkipSimplifiedLayerNormalization", "FusedMatMul")]
    check_outputs(model.proto, model.parameter_names, {"x": x}, [*ops, "SimplifiedLayerNormalization"])
    normalizations = 4 if opset < 17 else 3  # the standard LayerNormalization of opset 17 has a reverse rule
    assert [(r.name, r.count) for r in needed_rewrites(model.proto, set(model.parameter_names))] == [
        ("ort-fused-activations", 4), ("ort-fused-linear", 1), ("ort-fused-normalization", normalizations)]
    fd_model = rewritten(model.proto, model.parameter_names, None)
    check_gradients(tmp_path, proto, x, y, ["w1", "b1", "gamma1", "fb", "scale", "gamma2", "gamma3", "w3"],
                    fd_model=fd_model)


def test_bias_add_is_its_formula() -> None:
    # ONNX Runtime implements BiasAdd on CUDA only: x + bias + skip, from its contrib-op documentation
    rng = np.random.default_rng(9)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in (("x", (2, 3, 4)), ("b", (4,)), ("s", (2, 3, 4)))}
    new = rewritten(single_node(helper.make_node("BiasAdd", ["x", "b", "s"], ["y"], domain=MS), feeds, ["y"]),
                    ["b"], None)
    assert [n.domain for n in new.graph.node] == ["", ""]
    np.testing.assert_array_equal(ort_outputs(new, feeds)[0], feeds["x"] + feeds["b"] + feeds["s"])


def test_fused_conv_deep_in_a_net_gives_exact_gradients(tmp_path) -> None:
    rng = np.random.default_rng(8)
    middle = [helper.make_node("FusedConv", ["a", "fw", "fb"], ["m"], domain=MS, activation="LeakyRelu",
                               activation_params=[0.1], group=3, strides=[2, 2], pads=[0, 0, 1, 1], name="fused")]
    proto = cnn(middle, [init(rng, "fw", [3, 1, 3, 3]), init(rng, "fb", [3], 0.2)], c_in=2, c_mid=3, c_out=3, hw=8)
    x, y = data((2, 8, 8))
    path = tmp_path / "fused.onnx"
    onnx.save(proto, path)
    model = auditor.load_model(path)
    check_outputs(model.proto, model.parameter_names, {"x": x}, [f"{MS}.FusedConv"])
    # a depthwise FusedConv with TensorFlow-style padding: three rewrites in a row
    assert [r.name for r in needed_rewrites(model.proto, set(model.parameter_names))] == [
        "ort-fused-linear", "depthwise-conv", "conv-padding"]  # LeakyRelu needs no rewrite
    check_gradients(tmp_path, proto, x, y, ["w1", "fw", "fb"], fd_model=rewritten(model.proto, model.parameter_names,
                                                                                 None))


def test_fused_attention_is_refused_in_one_line_saying_how_to_export(tmp_path) -> None:
    path = tmp_path / "attention.onnx"
    onnx.save(transformer_chain(attention=True), path)
    model = auditor.load_model(path)
    with pytest.raises(UnsupportedNodeError) as err:
        check_gradient_support(model)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("node 'attn' (com.microsoft.Attention) is ONNX Runtime's fused attention")
    assert "options.enable_attention = False" in message


def test_other_contrib_ops_and_layout_ops_get_their_own_advice(tmp_path) -> None:
    for domain, op, expected in ((MS, "BiasSoftmax", "ONNX Runtime contrib op"),
                                 ("com.microsoft.nchwc", "ReorderOutput", "ORT_ENABLE_EXTENDED")):
        middle = [helper.make_node(op, ["a"], ["m"], domain=domain, name="odd")]
        path = tmp_path / f"{op}.onnx"
        onnx.save(cnn(middle, [], c_in=2, c_mid=3, c_out=3, hw=5), path)
        with pytest.raises(UnsupportedNodeError, match=rf"^node 'odd' \({domain}\.{op}\) .*{expected}"):
            check_gradient_support(auditor.load_model(path))


def test_standard_attention_of_opset_23_needs_no_rewrite_and_gets_exact_gradients(tmp_path) -> None:
    # torch's dynamo exporter writes this op for scaled_dot_product_attention at opset 23;
    # onnx-ad expands it from the specification's own function body
    rng = np.random.default_rng(10)
    inits = [init(rng, n, s, 0.5) for n, s in (("wq", [8, 8]), ("wk", [8, 8]), ("wv", [8, 8]), ("fc", [3, 8]))]
    inits.append(numpy_helper.from_array(np.array([-1, 4, 8], np.int64), "tokens"))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes = [helper.make_node("Reshape", ["x", "tokens"], ["h"]),
             *[helper.make_node("MatMul", ["h", f"w{k}"], [k]) for k in "qkv"],
             helper.make_node("Attention", ["q", "k", "v"], ["att"], q_num_heads=2, kv_num_heads=2, name="sdpa"),
             helper.make_node("ReduceMean", ["att", "axis1"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "fc"], ["z"], transB=1)]
    graph = helper.make_graph(nodes, "sdpa", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=11)
    x, y = data((32,), n=6)
    assert needed_rewrites(proto, {"wq", "wk", "wv", "fc"}) == []
    check_gradients(tmp_path, proto, x, y, ["wq", "wk", "wv"])
