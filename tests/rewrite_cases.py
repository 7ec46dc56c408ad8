"""Shared pieces of the rewrite tests: small networks around a node, and the two checks.

Every rewritten node sits deep in a small network (Conv -> Tanh -> rewritten op -> 3x3 Conv ->
head), so the gradient of the first Conv's weight flows *through* it. :func:`check_outputs`
compares ONNX Runtime on the original and the rewritten graph; :func:`check_gradients`
compares the auditor's class gradients with float64 central differences
(``tests/reference.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.differentiable import check_gradient_support
from auditor.rewrites import apply_rewrites
from auditor.runtime import make_session

from . import reference

MS = "com.microsoft"


def init(rng: np.random.Generator, name: str, shape: Sequence[int], scale: float = 0.5) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def cnn(middle: list[onnx.NodeProto], inits: list[onnx.TensorProto], *, c_in: int, c_mid: int, c_out: int,
        hw: int, k: int = 3, seed: int = 0, opset: int = 17, first: int = 3) -> onnx.ModelProto:
    """x -> Conv w1 -> Tanh "a" -> ``middle`` ("a" -> "m", ``c_out`` channels) -> 3x3 Conv w2 -> Tanh -> GAP -> Gemm.

    Tanh keeps the loss smooth for finite differences; the 3x3 Conv before the pooling keeps
    the loss sensitive to where each value sits (a 1x1 Conv and GAP would not see a flip).
    """
    rng = np.random.default_rng(seed)
    inits = [*inits, init(rng, "w1", [c_mid, c_in, first, first]), init(rng, "w2", [4, c_out, 3, 3]),
             init(rng, "fc", [k, 4], 1.0)]
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
    check_gradient_support(model)  # the early check lets every rewritten op through
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


