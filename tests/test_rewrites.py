"""Graph rewrites: outputs unchanged (ONNX Runtime, original vs rewritten) and exact gradients.

Every rewritten node sits deep in a small network (Conv -> Tanh -> rewritten op -> Conv ->
head), so the gradient of the first Conv's weight flows *through* it. Gradients of standard
ops are checked against float64 central differences of the original graph
(``tests/reference.py``, onnx's ReferenceEvaluator); ONNX Runtime's contrib ops, which the
reference evaluator cannot run, against differences of the rewritten float64 graph, the
rewritten graph being tied to ONNX Runtime's own kernel by the outputs check. Depthwise
convolutions are also checked against PyTorch autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor import graph as G
from auditor.errors import UnsupportedNodeError
from auditor.rewrites import REWRITES, apply_rewrites, needed_rewrites
from auditor.runtime import make_session

from . import reference

MS = "com.microsoft"


def _init(rng: np.random.Generator, name: str, shape: Sequence[int], scale: float = 0.5) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def cnn(middle: list[onnx.NodeProto], inits: list[onnx.TensorProto], *, c_in: int, c_mid: int, c_out: int,
        hw: int, k: int = 3, seed: int = 0, opset: int = 17, first: int = 3) -> onnx.ModelProto:
    """x -> Conv w1 -> Tanh "a" -> ``middle`` ("a" -> "m", ``c_out`` channels) -> 3x3 Conv w2 -> Tanh -> GAP -> Gemm.

    Tanh keeps the loss smooth for finite differences; the 3x3 Conv before the pooling keeps
    the loss sensitive to where each value sits (a 1x1 Conv and GAP would not see a flip).
    """
    rng = np.random.default_rng(seed)
    inits = [*inits, _init(rng, "w1", [c_mid, c_in, first, first]), _init(rng, "w2", [4, c_out, 3, 3]),
             _init(rng, "fc", [k, 4], 1.0)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h1"], pads=[first // 2] * 4, name="conv1"),
             helper.make_node("Tanh", ["h1"], ["a"]),
             *middle,
             helper.make_node("Conv", ["m", "w2"], ["h2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Tanh", ["h2"], ["t2"]),
             helper.make_node("GlobalAveragePool", ["t2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["z"], transB=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, hw, hw])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", k])], inits)
    domains = {n.domain for n in middle if n.domain}
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                             + [helper.make_opsetid(d, 1) for d in domains], ir_version=8)


def rewritten(proto: onnx.ModelProto, params: Sequence[str], batch: int | None) -> onnx.ModelProto:
    """``proto`` with every rewrite applied (weights stay initializers).

    With a ``batch``, the batch axis is fixed first (the rewrites that need static shapes
    run); without, it stays dynamic and only the others run (a graph for any batch size).
    """
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for v in m.graph.input:
        if batch and v.type.tensor_type.shape.dim and not v.type.tensor_type.shape.dim[0].HasField("dim_value"):
            v.type.tensor_type.shape.dim[0].dim_value = batch
    m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    apply_rewrites(m, set(params), static_shapes=batch is not None)
    del m.graph.value_info[:]
    return m


def ort_outputs(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(o) for o in make_session(proto, "cpu").run(None, feeds)]


def check_outputs(proto: onnx.ModelProto, params: Sequence[str], feeds: dict[str, np.ndarray],
                  gone: Sequence[str] = ()) -> onnx.ModelProto:
    """The rewritten graph gives ONNX Runtime's outputs of the original; no op in ``gone`` is left."""
    batch = next(iter(feeds.values())).shape[0]
    new = rewritten(proto, params, batch)
    left = {f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in new.graph.node}
    assert not left & set(gone), left & set(gone)
    for before, after in zip(ort_outputs(proto, feeds), ort_outputs(new, feeds), strict=True):
        np.testing.assert_allclose(after, before, rtol=2e-5, atol=2e-6 * max(1.0, np.abs(before).max()))
    return new


def check_gradients(tmp_path: Path, proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray,
                    names: Sequence[str], *, fd_model: onnx.ModelProto | None = None,
                    rtol: float = 1e-4) -> auditor.ClassGradients:
    """Auditor gradients of class 0 equal float64 central differences (of ``fd_model`` if given)."""
    path = tmp_path / "model.onnx"
    onnx.save(proto, path)
    model = auditor.load_model(path)
    G.check_gradient_support(model)  # the early check lets every rewritten op through
    data = auditor.Dataset(x, y)
    grads = auditor.class_gradients(model, data, batch_size=len(x) // 2)
    for name in names:
        got = grads[0][name].reshape(-1)
        idx = np.unique([0, got.size // 3, got.size - 1, int(np.argmax(np.abs(got)))])
        fd = reference.finite_difference_gradient(fd_model or proto, x, y, 0, name, "z", "logits", indices=idx)
        np.testing.assert_allclose(got[idx], fd, rtol=rtol, atol=rtol * np.abs(got).max(), err_msg=name)
    return grads


def data(shape: Sequence[int], n: int = 6, k: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), np.arange(n) % k


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
    return cnn(middle, [_init(rng, "dw", [c * mult, 1, k, k]), _init(rng, "dwb", [c * mult], 0.2)],
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
    proto = cnn(middle, [_init(rng, "gw", [c_out, c_mid // groups, kernel, kernel]), _init(rng, "gb", [c_out], 0.2)],
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
    proto = cnn(middle, [_init(np.random.default_rng(kernel), "wm", [3, 3, kernel, kernel])], c_in=2, c_mid=3,
                c_out=3, hw=8)
    x, y = data((2, 8, 8))
    check_outputs(proto, ["w1", "wm", "fc"], {"x": x})
    # only the middle Conv needs the explicit padding (the others are padded symmetrically)
    assert [(r.name, r.count) for r in needed_rewrites(proto, {"w1", "wm", "fc"})] == [("conv-padding", 1)]
    check_gradients(tmp_path, proto, x, y, ["w1", "wm"])


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
        G.check_gradient_support(model)


def test_registry_order_and_names() -> None:
    names = [r.name for r in REWRITES]
    assert names == ["ort-fused-activations", "ort-fused-linear", "ort-fused-normalization", "lrn", "strided-slice",
                     "depthwise-conv", "grouped-conv", "conv-padding"]
    assert [r.static_shapes for r in REWRITES] == [False] * 4 + [True] * 4
