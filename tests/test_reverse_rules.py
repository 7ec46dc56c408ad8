"""The faster reverse rules and graph passes: same gradients as onnx-ad's own rules, and as
float64 finite differences, with each rewritten op placed deep in a network."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor import graph as G
from auditor import reverse_rules as R

from . import reference


def _deep_model(stride: int, pads: list[int], dilation: int, kernel: tuple[int, int], pool: dict[str, list[int]],
                size: tuple[int, int], channels: tuple[int, int] = (4, 5)) -> onnx.ModelProto:
    """Conv -> Relu -> Conv under test -> Relu -> MaxPool -> Conv (1x1) -> GlobalAveragePool -> Gemm.

    The first Conv's weight gradient flows back through every rewritten rule: the input
    gradient of the Conv under test, both Relus, the MaxPool and the average pool.
    """
    rng = np.random.default_rng(stride * 100 + sum(pads) * 10 + dilation)
    kh, kw = kernel
    c1, c2 = channels
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * scale, name)
             for name, shape, scale in [("w1", (c1, 2, 3, 3), 0.4), ("b1", (c1,), 0.1),
                                        ("w2", (c2, c1, kh, kw), 0.3), ("b2", (c2,), 0.1),
                                        ("w3", (6, c2, 1, 1), 0.4), ("fc", (3, 6), 0.5), ("fcb", (3,), 0.1)]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[stride, stride], pads=pads,
                              dilations=[dilation, dilation]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["m"], **pool),
             helper.make_node("Conv", ["m", "w3"], ["c3"]),
             helper.make_node("GlobalAveragePool", ["c3"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["z"], transB=1)]
    g = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, *size])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


CASES = {
    # stride, pads (top, left, bottom, right), dilation, kernel, pool, input size
    "3x3 same": (1, [1, 1, 1, 1], 1, (3, 3), {"kernel_shape": [2, 2], "strides": [2, 2]}, (10, 12)),
    "asymmetric pads, rectangular kernel": (1, [2, 0, 1, 1], 1, (3, 2), {"kernel_shape": [2, 3], "strides": [2, 3]},
                                            (9, 11)),
    "dilation 2, no pad": (1, [0, 0, 0, 0], 2, (3, 3), {"kernel_shape": [2, 2], "strides": [2, 2]}, (11, 10)),
    "dilation 2, pad 2": (1, [2, 2, 2, 2], 2, (3, 3), {"kernel_shape": [2, 2], "strides": [2, 2]}, (10, 11)),
    "stride 2, pad 1": (2, [1, 1, 1, 1], 1, (3, 3), {"kernel_shape": [2, 2], "strides": [2, 2]}, (12, 13)),
    "stride 2, dilation 2": (2, [2, 2, 2, 2], 2, (3, 3), {"kernel_shape": [1, 1], "strides": [1, 1]}, (10, 9)),
    "1x1, overlapping pool": (1, [0, 0, 0, 0], 1, (1, 1), {"kernel_shape": [3, 3], "strides": [2, 2]}, (9, 9)),
    "pads beyond the kernel's reach": (1, [3, 0, 3, 1], 1, (3, 3), {"kernel_shape": [2, 2], "strides": [2, 2]},
                                       (8, 9)),
    "pool leaves rows unread": (1, [1, 1, 1, 1], 1, (3, 3), {"kernel_shape": [3, 3], "strides": [3, 3]}, (10, 11)),
    # channels in and out of the Conv under test: 2 -> 16 makes its weight gradient all windows
    "few input channels": (1, [1, 1, 1, 1], 1, (3, 3), {"kernel_shape": [2, 2], "strides": [2, 2]}, (10, 12), (2, 16)),
    "few input channels, dilation 2, asymmetric pads": (1, [2, 0, 1, 2], 2, (3, 2),
                                                        {"kernel_shape": [2, 2], "strides": [2, 2]}, (10, 11), (2, 16)),
}


def _gradients(path, data, off: tuple[str, ...] = ()) -> auditor.ClassGradients:
    model = auditor.load_model(path)
    with R.disabled(*off):
        return auditor.class_gradients(model, data, batch_size=4)


@pytest.mark.parametrize("case", list(CASES))
def test_rules_equal_onnx_ad_rules_and_finite_differences(tmp_path, case: str) -> None:
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES[case]), path)
    pads, size = CASES[case][1], CASES[case][5]
    rng = np.random.default_rng(1)
    data = auditor.Dataset(rng.standard_normal((10, 2, *size)).astype(np.float32), np.arange(10) % 3)
    fast = _gradients(path, data)
    slow = _gradients(path, data, off=tuple(R.OPTIMIZATIONS))
    # onnx-ad's input gradient is a ConvTranspose with output_shape, which makes ONNX
    # recompute the pads symmetrically: with asymmetric pads its gradients upstream of
    # that Conv are wrong, and only finite differences are the reference there.
    upstream = {"w1", "b1"} if pads[:2] != pads[2:] else set()
    for name in fast.names:
        if name not in upstream:
            got, want = fast[1][name], slow[1][name]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg=name)
    np.testing.assert_allclose(fast.losses, slow.losses, rtol=1e-6)
    for name in ("w1", "b1", "w2"):  # w1, b1: the gradient has come back through every rewritten rule
        g = fast[1][name].reshape(-1)
        idx = np.unique([0, g.size // 3, g.size - 1, int(np.argmax(np.abs(g)))])
        fd = reference.finite_difference_gradient(onnx.load(path), data.x, data.y, 1, name, "z", "logits",
                                                  indices=idx)
        np.testing.assert_allclose(g[idx], fd, rtol=1e-4, atol=1e-4 * np.abs(g).max(), err_msg=name)


@pytest.mark.parametrize("name", sorted(R.OPTIMIZATIONS))
def test_each_optimisation_alone_changes_nothing(tmp_path, name: str) -> None:
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    rng = np.random.default_rng(2)
    data = auditor.Dataset(rng.standard_normal((8, 2, 10, 12)).astype(np.float32), np.arange(8) % 3)
    everything = _gradients(path, data)
    without = _gradients(path, data, off=(name,))
    np.testing.assert_allclose(everything.flat, without.flat, rtol=1e-4, atol=1e-6 * np.abs(without.flat).max())


def _ops(case: str, tmp_path, off: tuple[str, ...] = ()) -> tuple[Counter[str], onnx.ModelProto]:
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES[case]), path)
    model = auditor.load_model(path)
    with R.disabled(*off):
        m = G.gradient_graph(model, 4, {model.input_name: (2, *CASES[case][5])})
    return Counter(n.op_type for n in m.graph.node), m


def test_rules_are_the_ones_in_the_graph(tmp_path) -> None:
    """The equality tests above compare different graphs: the faster rules really ran."""
    fast, m = _ops("3x3 same", tmp_path)
    slow, _ = _ops("3x3 same", tmp_path, off=tuple(R.OPTIMIZATIONS))
    assert fast["ConvTranspose"] == 0 and slow["ConvTranspose"] >= 1  # input gradient as Conv
    assert fast["MaxUnpool"] == 1 and fast["ScatterND"] == 0 and slow["ScatterND"] == 1
    assert fast["MaxPool"] == 1  # the forward MaxPool gives its indices; no second pooling
    assert fast["Gather"] >= 1  # the weight gradient's row shifts
    names = {"w1", "b1", "w2", "b2", "w3", "fc", "fcb"}
    assert not names & {v.name for v in m.graph.input}  # θ* baked in
    assert names <= {t.name for t in m.graph.initializer}
    seed = next(v for v in m.graph.input if v.name == f"adj_{G.TOTAL_LOSS}")
    assert [d.dim_value for d in seed.type.tensor_type.shape.dim] == [1]
    strided, _ = _ops("stride 2, pad 1", tmp_path)
    assert strided["ConvTranspose"] == 1  # stride 2 keeps the transposed convolution
    windows = {n.output[0] for n in m.graph.node if "im2col_stack" in n.output[0]}
    assert not windows  # four input channels: the weight gradients shift rows and columns
    few, m = _ops("few input channels", tmp_path)
    windows = {n.output[0] for n in m.graph.node if "im2col_stack" in n.output[0]}
    assert len(windows) == 1 and few["Gather"] == 1  # two input channels, 16 out: windows; the first Conv keeps its rows
    for case in ("1x1, overlapping pool", "pool leaves rows unread"):  # MaxUnpool would be wrong: onnx-ad's rule
        ops, _ = _ops(case, tmp_path)
        assert ops["ScatterND"] == 1 and ops["MaxUnpool"] == 0, case


def test_max_pool_ties_go_to_the_first_maximum_like_onnx_ad(tmp_path) -> None:
    """``MaxPool(x + b)`` with integer x and b = 0 ties in most windows; ``dL/db`` shows which
    element of each window got the adjoint: both rules pick the window's first maximum."""
    b = numpy_helper.from_array(np.zeros((1, 2, 6, 6), np.float32), "b")
    fc = numpy_helper.from_array(np.random.default_rng(4).standard_normal((3, 18)).astype(np.float32), "fc")
    nodes = [helper.make_node("Add", ["x", "b"], ["s"]),
             helper.make_node("MaxPool", ["s"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["z"], transB=1)]
    g = helper.make_graph(nodes, "ties", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], [b, fc])
    path = tmp_path / "ties.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    x = np.random.default_rng(3).integers(0, 2, size=(9, 2, 6, 6)).astype(np.float32)
    data = auditor.Dataset(x, np.arange(9) % 3)
    fast = _gradients(path, data)
    slow = _gradients(path, data, off=("max_pool",))
    assert np.count_nonzero(fast[0]["b"]) > 0
    np.testing.assert_allclose(fast.flat, slow.flat, rtol=1e-6, atol=1e-7 * np.abs(slow.flat).max())


def test_disabled_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown gradient optimisations"):
        with R.disabled("no_such_rule"):
            pass
    assert all(R.enabled(n) for n in R.OPTIMIZATIONS)


def test_gradient_session_config_keeps_the_model_entries_and_stops_spinning() -> None:
    base = {"session.disable_quant_qdq": "1"}
    config = R.gradient_session_config(base)
    assert config == {"session.disable_quant_qdq": "1", "session.intra_op.allow_spinning": "0"}
    assert base == {"session.disable_quant_qdq": "1"}  # the model's own mapping is not changed
    with R.disabled("no_spinning"):
        assert R.gradient_session_config(base) == base
    assert R.gradient_session_config({"session.intra_op.allow_spinning": "1"}) == {
        "session.intra_op.allow_spinning": "1"}  # an explicit setting of the model wins
