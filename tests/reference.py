"""Independent float64 references for the tests. Does not import ``auditor``.

ONNX Runtime has no float64 Conv on CPU, so a float64 copy of the model runs through
``onnx.reference.ReferenceEvaluator``. Class losses follow docs/concepts.md:
mean cross-entropy over the samples of each class, logits as "Setting" defines them.

Three of onnx 1.23's reference operators are replaced (the class name selects the op it replaces):
``LRN`` loops over the batch axis instead of the channels (onnx/onnx#7805, fixed upstream after 1.23),
so with one sample it normalises channel 0 only; ``Erf`` (the GELU of BERT-style models) computes in
float32 whatever its input, which leaves float64 finite differences with float32 noise;
``GatherElements`` goes through ``numpy.choose``, which refuses more than 64 choices (a sequence axis
of 16 tokens over 64 positions in transformer exports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

__all__ = ["float64_model", "reference_evaluator", "reference_logits", "class_losses", "class_accuracies",
           "finite_difference_gradient"]


class LRN(OpRun):
    """LRN as specified: x / (bias + alpha / size * sum of x^2 over a window of channels) ** beta."""

    op_domain = ""

    def _run(self, x: np.ndarray, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0,
             size: int = 1) -> tuple[np.ndarray]:
        channels = x.shape[1]
        lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
        square = x.astype(np.float64) ** 2
        square_sum = np.stack([square[:, max(0, c - lo):min(channels, c + hi + 1)].sum(axis=1)
                               for c in range(channels)], axis=1)
        return ((x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype),)


class Erf(OpRun):
    """Erf in the input's precision."""

    op_domain = ""

    def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype),)


class GatherElements(OpRun):
    """GatherElements as specified (negative indices count from the end of the axis)."""

    op_domain = ""

    def _run(self, data: np.ndarray, indices: np.ndarray, axis: int = 0) -> tuple[np.ndarray]:
        indices = np.where(indices < 0, indices + data.shape[axis], indices)
        return (np.take_along_axis(data, indices, axis=axis),)


def reference_evaluator(m: onnx.ModelProto) -> ReferenceEvaluator:
    """``onnx.reference.ReferenceEvaluator`` with the operators this module corrects."""
    return ReferenceEvaluator(m, new_ops=[LRN, Erf, GatherElements])


def _to64(t: TensorProto) -> TensorProto:
    if t.data_type != TensorProto.FLOAT:
        return t
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)


def float64_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float64: initializers, Constant values, casts and I/O types."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    for i, t in enumerate(g.initializer):
        g.initializer[i].CopyFrom(_to64(t))
    for node in g.node:
        for a in node.attribute:
            if a.name in ("value",) and a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(_to64(a.t))
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if a.name == "value_float":
                a.CopyFrom(helper.make_attribute("value", numpy_helper.from_array(np.array(a.f, np.float64))))
            if a.name == "value_floats":
                a.CopyFrom(helper.make_attribute("value", numpy_helper.from_array(np.array(a.floats, np.float64))))
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE
    del g.value_info[:]
    return m


def _prune(m: onnx.ModelProto, outputs: Sequence[str]) -> None:
    needed = set(outputs)
    kept = []
    for node in reversed(m.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del m.graph.node[:]
    m.graph.node.extend(reversed(kept))


def _with_overrides(m: onnx.ModelProto, overrides: Mapping[str, np.ndarray]) -> None:
    g = m.graph
    names = set(overrides)
    inits = [t for t in g.initializer if t.name not in names]
    nodes = [n for n in g.node if not (set(n.output) & names)]  # Constant or subgraph output: now a given value
    del g.initializer[:]
    g.initializer.extend(inits)
    g.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float64), k) for k, v in overrides.items())
    del g.node[:]
    g.node.extend(nodes)
    inputs = [v for v in g.input if v.name not in names]
    del g.input[:]
    g.input.extend(inputs)


def _evaluator(proto: onnx.ModelProto, logits_name: str, logits_kind: str,
               overrides: Mapping[str, np.ndarray] | None) -> tuple[ReferenceEvaluator, str]:
    m = float64_model(proto)
    target = logits_name
    del m.graph.output[:]
    m.graph.output.append(helper.make_empty_tensor_value_info(target))
    if overrides:
        _with_overrides(m, overrides)
    _prune(m, [target])
    inits = {t.name for t in m.graph.initializer}
    data = [v for v in m.graph.input if v.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(data)
    return reference_evaluator(m), data[0].name


def reference_logits(proto: onnx.ModelProto, x: np.ndarray, logits_name: str, logits_kind: str,
                     overrides: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Logits ``[N, K]`` in float64 (probabilities: log max(p, 1e-12); sigmoid: [0, z])."""
    ev, input_name = _evaluator(proto, logits_name, logits_kind, overrides)
    dims = list(next(v for v in proto.graph.input if v.name == input_name).type.tensor_type.shape.dim)
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    x = np.asarray(x, dtype=np.float64)
    step = fixed if fixed > 0 else len(x)
    outs = [np.asarray(ev.run(None, {input_name: x[s:s + step]})[0]) for s in range(0, len(x), step)]
    z = np.concatenate([o.reshape(o.shape[0], -1) for o in outs])
    if logits_kind == "probabilities":
        return np.log(np.maximum(z, 1e-12))
    if logits_kind == "sigmoid":
        return np.concatenate([np.zeros_like(z), z], axis=1)
    return z


def class_losses(logits: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean cross-entropy per class (NaN for an absent class), stable log-softmax in float64."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(len(y)), y]
    return np.array([loss[y == c].mean() if np.any(y == c) else np.nan for c in range(n_classes)])


def class_accuracies(logits: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    pred = np.argmax(logits, axis=1)  # ties: lowest index
    return np.array([(pred[y == c] == c).mean() if np.any(y == c) else np.nan for c in range(n_classes)])


def _param_value(proto: onnx.ModelProto, name: str, x: np.ndarray, logits_name: str) -> np.ndarray:
    for t in proto.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t).astype(np.float64)
    # a Constant node or constant subgraph output: evaluate it
    m = float64_model(proto)
    del m.graph.output[:]
    m.graph.output.append(helper.make_empty_tensor_value_info(name))
    _prune(m, [name])
    inits = {t.name for t in m.graph.initializer}
    feeds = {v.name: np.asarray(x[:1], np.float64) for v in m.graph.input if v.name not in inits
             and any(v.name in n.input for n in m.graph.node)}
    keep = [v for v in m.graph.input if v.name in feeds or v.name in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    return np.asarray(reference_evaluator(m).run(None, feeds)[0], np.float64)


def finite_difference_gradient(proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray, c: int, param_name: str,
                               logits_name: str, logits_kind: str, indices: Sequence[int] | None = None,
                               eps: float = 1e-6) -> np.ndarray:
    """Central differences in float64 of L_c with respect to chosen flat entries of one parameter."""
    base = _param_value(proto, param_name, x, logits_name)
    flat = base.reshape(-1)
    if indices is None:
        indices = np.unique(np.concatenate([[int(np.argmax(np.abs(flat)))],
                                            np.linspace(0, flat.size - 1, 11).astype(int)]))
    xs, ys = np.asarray(x)[np.asarray(y) == c], np.asarray(y)[np.asarray(y) == c]
    n_classes = None
    out = []
    for i in indices:
        values = []
        for sign in (1.0, -1.0):
            p = flat.copy()
            p[int(i)] += sign * eps
            z = reference_logits(proto, xs, logits_name, logits_kind, {param_name: p.reshape(base.shape)})
            n_classes = z.shape[1]
            values.append(class_losses(z, ys, n_classes)[c])
        out.append((values[0] - values[1]) / (2 * eps))
    return np.asarray(out)
