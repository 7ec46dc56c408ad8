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
        G.check_gradient_support(model)


def test_registry_order_and_names() -> None:
    names = [r.name for r in REWRITES]
    assert names == ["ort-fused-activations", "ort-fused-linear", "ort-fused-normalization", "clip-mask", "lrn",
                     "strided-slice", "depthwise-conv", "grouped-conv", "conv-padding", "pool-padding"]
    assert [r.static_shapes for r in REWRITES] == [False] * 5 + [True] * 5


# --------------------------------------------------------------------------- ONNX Runtime contrib ops


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
    inits = [_init(rng, "words", [10, 8]), _init(rng, "positions", [7, 8]), _init(rng, "segment_table", [2, 8]),
             _init(rng, "gamma", [8]), _init(rng, "beta", [8])]
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
    inits = [_init(rng, n, s, 0.4 if len(s) > 1 else 0.3) for n, s in shapes.items()]
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
    proto = cnn(middle, [_init(rng, "fw", [3, 1, 3, 3]), _init(rng, "fb", [3], 0.2)], c_in=2, c_mid=3, c_out=3, hw=8)
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
        G.check_gradient_support(model)
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
            G.check_gradient_support(auditor.load_model(path))


def test_standard_attention_of_opset_23_needs_no_rewrite_and_gets_exact_gradients(tmp_path) -> None:
    # torch's dynamo exporter writes this op for scaled_dot_product_attention at opset 23;
    # onnx-ad expands it from the specification's own function body
    rng = np.random.default_rng(10)
    inits = [_init(rng, n, s, 0.5) for n, s in (("wq", [8, 8]), ("wk", [8, 8]), ("wv", [8, 8]), ("fc", [3, 8]))]
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
