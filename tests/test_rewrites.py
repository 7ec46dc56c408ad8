"""Rewrites of standard ops: outputs unchanged (ONNX Runtime, original vs rewritten) and exact gradients.

Every rewritten node sits deep in a small network (see ``tests/rewrite_cases.py``), so the
gradient of the first Conv's weight flows *through* it; gradients are checked against
float64 central differences of the original graph (of the rewritten one for LRN, where
onnx's reference evaluator disagrees with ONNX Runtime), depthwise convolutions also against
PyTorch autograd. ONNX Runtime's contrib ops are in ``test_rewrites_onnxruntime.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor import graph as G
from auditor.differentiable import check_gradient_support
from auditor.errors import UnsupportedNodeError
from auditor.rewrites import REWRITES, needed_rewrites
from auditor.runtime import make_session

from .rewrite_cases import check_gradients, check_outputs, cnn, data, init, ort_outputs, rewritten

# --------------------------------------------------------------------------- depthwise


DEPTHWISE = [  # kernel, stride, dilation, multiplier, pads (top, left, bottom, right) or auto_pad
    (3, 2, 1, 1, [1, 0, 2, 1]),
    (5, 2, 2, 2, [2, 3, 1, 2]),
    (3, 1, 2, 3, [2, 2, 2, 2]),
    (5, 2, 1, 1, "SAME_UPPER"),
]


def depthwise_net(k: int, stride: int, dilation: int, mult: int, pads: list[int] | str) -> onnx.ModelProto:
    c = 3
    rng = np.random.default_rng(k + stride + mult)
    pad_attr: dict[str, Any] = {"auto_pad": pads} if isinstance(pads, str) else {"pads": pads}
    middle = [helper.make_node("Conv", ["a", "dw", "dwb"], ["m"], group=c, strides=[stride] * 2,
                               dilations=[dilation] * 2, kernel_shape=[k, k], name="depthwise", **pad_attr)]
    return cnn(middle, [init(rng, "dw", [c * mult, 1, k, k]), init(rng, "dwb", [c * mult], 0.2)],
               c_in=2, c_mid=c, c_out=c * mult, hw=11)


def torch_depthwise_gradients(proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray, c: int, k: int, stride: int,
                              dilation: int, pads: list[int] | str) -> dict[str, np.ndarray]:
    """PyTorch autograd of L_c for :func:`depthwise_net`, from the ONNX weights."""
    torch = pytest.importorskip("torch", reason="PyTorch autograd is the independent reference here")
    f = torch.nn.functional
    w = {t.name: torch.tensor(numpy_helper.to_array(t).astype(np.float64), requires_grad=True)
         for t in proto.graph.initializer}
    xs = torch.tensor(x[y == c].astype(np.float64))
    a = torch.tanh(f.conv2d(xs, w["w1"], padding=1))
    if isinstance(pads, str):  # SAME_UPPER: total padding split with the extra at the end
        total = [max((-(-s // stride) - 1) * stride + (k - 1) * dilation + 1 - s, 0) for s in a.shape[2:]]
        pads = [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]
    a = f.pad(a, (pads[1], pads[3], pads[0], pads[2]))
    m = f.conv2d(a, w["dw"], w["dwb"], stride=stride, dilation=dilation, groups=a.shape[1])
    z = f.linear(torch.tanh(f.conv2d(m, w["w2"], padding=1)).mean(dim=(2, 3)), w["fc"])
    f.cross_entropy(z, torch.tensor(y[y == c])).backward()
    return {name: t.grad.numpy() for name, t in w.items() if t.grad is not None}


@pytest.mark.parametrize(("k", "stride", "dilation", "mult", "pads"), DEPTHWISE,
                         ids=[f"k{k}-s{s}-d{d}-m{m}-{p if isinstance(p, str) else 'asym'}"
                              for k, s, d, m, p in DEPTHWISE])
def test_depthwise_deep_in_a_net_matches_finite_differences_and_autograd(tmp_path, k, stride, dilation, mult,
                                                                        pads) -> None:
    proto = depthwise_net(k, stride, dilation, mult, pads)
    x, y = data((2, 11, 11))
    new = check_outputs(proto, ["w1", "dw", "dwb", "w2", "fc"], {"x": x})
    # the depthwise Conv is gone; the only grouped Conv left is the constant one-hot bank
    assert [n.name for n in new.graph.node if n.op_type == "Conv" and n.input[1] == "dw"] == []
    grads = check_gradients(tmp_path, proto, x, y, ["w1", "dw", "dwb"])
    expected = torch_depthwise_gradients(proto, x, y, 0, k, stride, dilation, pads)
    for name in ("w1", "dw", "dwb", "w2", "fc"):
        np.testing.assert_allclose(grads[0][name], expected[name], rtol=1e-4, atol=1e-5 * np.abs(expected[name]).max(),
                                   err_msg=name)


def test_depthwise_rewrite_leaves_constant_weights_and_plain_convs_alone() -> None:
    proto = depthwise_net(3, 2, 1, 1, [1, 1, 1, 1])
    m = rewritten(proto, ["w1", "fc"], 2)  # dw is not a parameter: onnx-ad needs only its input gradient
    assert any(n.name == "depthwise" for n in m.graph.node)
    assert [r.name for r in needed_rewrites(proto, {"w1", "dw", "fc"})] == ["depthwise-conv"]


# --------------------------------------------------------------------------- grouped convolutions


@pytest.mark.parametrize(("kernel", "stride", "groups"), [(1, 1, 3), (1, 2, 3), (3, 1, 2)],
                         ids=["pointwise", "pointwise-stride2", "per-group-3x3"])
def test_grouped_conv_deep_in_a_net_keeps_outputs_and_exact_gradients(tmp_path, kernel, stride, groups) -> None:
    rng = np.random.default_rng(kernel + stride)
    c_mid, c_out = 6, 6 if groups == 3 else 4
    middle = [helper.make_node("Conv", ["a", "gw", "gb"], ["m"], group=groups, strides=[stride] * 2,
                               pads=[kernel // 2] * 4, name="grouped")]
    proto = cnn(middle, [init(rng, "gw", [c_out, c_mid // groups, kernel, kernel]), init(rng, "gb", [c_out], 0.2)],
                c_in=2, c_mid=c_mid, c_out=c_out, hw=9)
    x, y = data((2, 9, 9))
    new = check_outputs(proto, ["w1", "gw", "gb", "fc"], {"x": x})
    grouped = [n for n in new.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1
                                                                          for a in n.attribute)]
    assert grouped == []
    assert any(n.op_type == "MatMul" for n in new.graph.node) == (kernel == 1)
    check_gradients(tmp_path, proto, x, y, ["w1", "gw", "gb"])


def test_grouped_conv_split_keeps_the_zoo_model_outputs() -> None:
    from .conftest import zoo_entry

    z = zoo_entry("depthwise")
    model = auditor.load_model(z["path"])
    m = G.evaluation_graph(model, with_loss=False)
    before = make_session(m, "cpu").run(None, {model.input_name: z["x"]})[0]
    new = rewritten(m, model.parameter_names, len(z["x"]))
    assert not any(n.op_type == "Conv" and n.input[1] in model.parameter_names
                   and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in new.graph.node)
    np.testing.assert_allclose(make_session(new, "cpu").run(None, {model.input_name: z["x"]})[0], before,
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- Conv padding

PADDINGS = [  # kernel, stride, pads or auto_pad on an 8x8 input
    (3, 2, [0, 0, 1, 1]),  # TensorFlow's SAME
    (3, 2, "SAME_UPPER"),
    (2, 2, [1, 1, 0, 0]),  # a leading pad only, one row unread
    (2, 3, [1, 1, 1, 1]),  # symmetric, two rows unread
]


@pytest.mark.parametrize(("kernel", "stride", "pads"), PADDINGS, ids=["tf-same", "same-upper", "leading", "unread"])
def test_conv_padding_deep_in_a_net_gives_exact_input_gradients(tmp_path, kernel, stride, pads) -> None:
    pad_attr: dict[str, Any] = {"auto_pad": pads} if isinstance(pads, str) else {"pads": pads}
    middle = [helper.make_node("Conv", ["a", "wm"], ["m"], strides=[stride] * 2, kernel_shape=[kernel] * 2,
                               name="padded", **pad_attr)]
    proto = cnn(middle, [init(np.random.default_rng(kernel), "wm", [3, 3, kernel, kernel])], c_in=2, c_mid=3,
                c_out=3, hw=8)
    x, y = data((2, 8, 8))
    check_outputs(proto, ["w1", "wm", "fc"], {"x": x})
    # only the middle Conv needs the explicit padding (the others are padded symmetrically)
    assert [(r.name, r.count) for r in needed_rewrites(proto, {"w1", "wm", "fc"})] == [("conv-padding", 1)]
    check_gradients(tmp_path, proto, x, y, ["w1", "wm"])


# --------------------------------------------------------------------------- pooling

POOLS = [  # op, attributes (on an 8x8 input; the ceil-mode sizes are the same in ONNX's shape inference)
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1], "count_include_pad": 0}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "count_include_pad": 1,
                     "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
]


@pytest.mark.parametrize(("op", "attrs"), POOLS, ids=["avg-tf-same", "avg-same-upper", "avg-ceil-include-pad",
                                                      "max-ceil", "max-same-lower"])
def test_pooling_deep_in_a_net_keeps_outputs_and_exact_gradients(tmp_path, op, attrs) -> None:
    proto = cnn([helper.make_node(op, ["a"], ["m"], name="pool", **attrs)], [], c_in=2, c_mid=3, c_out=3, hw=8)
    x, y = data((2, 8, 8))
    new = check_outputs(proto, ["w1", "w2", "fc"], {"x": x})
    pools = [n for n in new.graph.node if n.op_type == op]
    assert all({a.name for a in n.attribute}.isdisjoint({"ceil_mode", "auto_pad"}) for n in pools)
    check_gradients(tmp_path, proto, x, y, ["w1"])


# --------------------------------------------------------------------------- Clip, HardSigmoid, HardSwish

CLIPS = [  # op, Clip bounds (None: input left out) or the op's attributes
    ("Clip", (0.0, 6.0)),
    ("Clip", (-0.4, 0.3)),
    ("Clip", (-0.2, None)),
    ("HardSigmoid", {"alpha": 0.4, "beta": 0.45}),
    ("HardSwish", {}),
]


@pytest.mark.parametrize(("op", "setting"), CLIPS, ids=["relu6", "both-bounds", "min-only", "hardsigmoid",
                                                        "hardswish"])
def test_clip_family_deep_in_a_net_keeps_outputs_and_exact_gradients(tmp_path, op, setting) -> None:
    # Tanh's output times 8 reaches past both bounds of every case
    inits = [numpy_helper.from_array(np.array(8.0, np.float32), "eight")]
    middle = [helper.make_node("Mul", ["a", "eight"], ["wide"])]
    if op == "Clip":
        names = []
        for name, bound in zip(("low", "high"), setting):
            if bound is not None:
                inits.append(numpy_helper.from_array(np.array(bound, np.float32), name))
            names.append(name if bound is not None else "")
        middle.append(helper.make_node("Clip", ["wide", *names], ["m"], name="clip"))
    else:
        middle.append(helper.make_node(op, ["wide"], ["m"], name="clip", **setting))
    proto = cnn(middle, inits, c_in=2, c_mid=4, c_out=4, hw=6, seed=len(op))
    x, y = data((2, 6, 6))
    new = check_outputs(proto, ["w1", "w2", "fc"], {"x": x}, [op])
    assert not any(n.op_type == "Where" for n in new.graph.node)
    check_gradients(tmp_path, proto, x, y, ["w1", "w2"])


# --------------------------------------------------------------------------- strided Slice

SLICES = [  # starts, ends, axes, steps
    ([1], [100], [2], [2]),
    ([-1], [-100], [3], [-2]),
    ([0, 8], [6, 0], [1, 2], [2, -3]),
    ([-1, 1], [-100, 9], [-1, 2], [-1, 3]),
]


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), SLICES, ids=["step2", "step-2", "channels+neg3",
                                                                           "reverse+step3"])
def test_strided_slice_deep_in_a_net_keeps_outputs_and_exact_gradients(tmp_path, starts, ends, axes, steps) -> None:
    consts = [numpy_helper.from_array(np.array(v, np.int64), n)
              for v, n in ((starts, "st"), (ends, "en"), (axes, "ax"), (steps, "sp"))]
    index = [slice(None)] * 4
    for a, s, e, p in zip(axes, starts, ends, steps):
        index[a] = slice(s, e if -100 < e < 100 else None, p)
    c_out = np.empty((1, 6, 9, 9))[tuple(index)].shape[1]
    proto = cnn([helper.make_node("Slice", ["a", "st", "en", "ax", "sp"], ["m"], name="strided")], consts,
                c_in=2, c_mid=6, c_out=c_out, hw=9)
    x, y = data((2, 9, 9))
    new = check_outputs(proto, ["w1", "w2", "fc"], {"x": x})
    values = {t.name: numpy_helper.to_array(t) for t in new.graph.initializer}
    steps_left = [values[n.input[4]].tolist() for n in new.graph.node if n.op_type == "Slice" and len(n.input) > 4]
    assert all(s == 1 for steps_ in steps_left for s in steps_)
    check_gradients(tmp_path, proto, x, y, ["w1"])


# --------------------------------------------------------------------------- LRN


def numpy_lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """LRN as ONNX Runtime computes it: channel window [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    square_sum = np.zeros_like(x)
    for c in range(x.shape[1]):
        low, high = max(0, c - (size - 1) // 2), min(x.shape[1], c + size - (size - 1) // 2)
        square_sum[:, c] = (x[:, low:high] ** 2).sum(axis=1)
    return x / (bias + alpha / size * square_sum) ** beta


@pytest.mark.parametrize("size", [5, 3, 1])
def test_lrn_in_an_opset9_net_keeps_outputs_and_exact_gradients(tmp_path, size) -> None:
    # ONNX Runtime runs odd sizes only; onnx's reference evaluator disagrees with it on LRN, so
    # the gradients are checked on the rewritten graph, tied to ONNX Runtime and numpy here.
    attrs = {"size": size, "alpha": 0.3, "beta": 0.75, "bias": 1.5}
    a = np.random.default_rng(size).standard_normal((2, 6, 3, 3)).astype(np.float32) * 2
    single = helper.make_model(helper.make_graph(
        [helper.make_node("LRN", ["a"], ["m"], **attrs)], "lrn",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 6, 3, 3])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 13)],
        ir_version=8)
    np.testing.assert_allclose(ort_outputs(single, {"a": a})[0], numpy_lrn(a, **attrs), rtol=1e-5, atol=1e-6)
    proto = cnn([helper.make_node("LRN", ["a"], ["m"], name="lrn", **attrs)], [], c_in=2, c_mid=6, c_out=6, hw=7,
                opset=9, seed=size)
    proto.ir_version = 4
    x, y = data((2, 7, 7))
    x = x * 2.0  # the normalisation matters only when the squares are not small
    onnx.save(proto, tmp_path / "lrn.onnx")
    model = auditor.load_model(tmp_path / "lrn.onnx")  # canonical: converted to opset 17
    check_outputs(model.proto, model.parameter_names, {"x": x}, ["LRN"])
    check_gradients(tmp_path, proto, x, y, ["w1", "w2"], fd_model=rewritten(model.proto, model.parameter_names, None))


# --------------------------------------------------------------------------- support check and inspect


def test_a_node_nothing_rewrites_is_still_named_with_its_op(tmp_path) -> None:
    middle = [helper.make_node("Mystery", ["a"], ["m"], domain="com.example", name="odd")]
    path = tmp_path / "odd.onnx"
    onnx.save(cnn(middle, [], c_in=2, c_mid=3, c_out=3, hw=5), path)
    model = auditor.load_model(path)
    with pytest.raises(UnsupportedNodeError, match=r"^node 'odd' \(com\.example\.Mystery\) cannot be differentiated"):
        check_gradient_support(model)


def test_registry_order_and_names() -> None:
    names = [r.name for r in REWRITES]
    assert names == ["ort-fused-activations", "ort-fused-linear", "ort-fused-normalization", "clip-mask", "fake-quant",
                     "lrn", "strided-slice", "depthwise-conv", "grouped-conv", "conv-padding", "pool-padding"]
    assert [r.static_shapes for r in REWRITES] == [False] * 6 + [True] * 5
