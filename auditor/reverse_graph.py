"""Post-processing of the reverse graph onnx-ad emits, for ONNX Runtime.

The auditor runs the gradient graph with one seed, at θ* only. Knowing both makes the
graph cheaper without changing a value it computes:

- **seed_shape**: the seed input ``adj_<loss>`` gets the static shape ``[1]``, so shape
  inference knows every seed axis is 1; transposes that only move it become free
  reshapes (:func:`auditor.graph.simplify_transposes`) and ``Expand`` nodes that do not
  change a shape are dropped (ONNX Runtime would copy the tensor).
- **constant_weights**: θ* goes back into the graph as initializers, so ONNX Runtime folds
  everything computed from the weights alone (flipped kernels) and pre-packs the weights
  of every convolution, forward and reverse, as it does for plain inference. Not for
  quantised twins (a model with a ``session_config``): with per-channel int8 weights baked in,
  the straight-through gradients came out 1.5% off the reference while the loss stayed exact
  (ONNX Runtime optimises the baked graph differently; the cause is not isolated yet), so a
  twin keeps θ as graph inputs.

Each step can be switched off by name (:func:`auditor.reverse_rules.disabled`).
"""

from __future__ import annotations

from typing import Any

import onnx

from .reverse_rules import enabled

__all__ = ["finish_reverse_graph", "drop_noop_expands", "bake_weights"]


def finish_reverse_graph(reverse: onnx.ModelProto, model: Any, seed: str) -> onnx.ModelProto:
    """The reverse graph after the passes above (those enabled), with inferred shapes.

    ``model`` is the :class:`~auditor.model.Model` (its parameters and their values),
    ``seed`` the name of the seed input. When shape inference fails the graph is returned
    as onnx-ad made it (with the weights baked in, if enabled).
    """
    from .graph import simplify_transposes

    m = reverse
    if enabled("seed_shape"):
        _fix_seed_axis(m, seed)
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # shapes unknown: the graph stays as onnx-ad made it  # noqa: BLE001
        pass
    else:
        simplify_transposes(m)
        if enabled("seed_shape"):
            drop_noop_expands(m)
    if enabled("constant_weights") and not getattr(model, "session_config", None):
        bake_weights(m, model)
    return m


def _fix_seed_axis(m: onnx.ModelProto, seed: str) -> None:
    """Declare one seed: the seed input is ``[1]`` and every output's trailing seed axis is 1."""
    for value in m.graph.input:
        if value.name == seed:
            for dim in value.type.tensor_type.shape.dim:
                dim.Clear()
                dim.dim_value = 1
    for value in m.graph.output:
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[len(dims) - 1].HasField("dim_value"):
            dims[len(dims) - 1].Clear()
            dims[len(dims) - 1].dim_value = 1
    del m.graph.value_info[:]


def _static_shapes(m: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[v.name] = [d.dim_value for d in t.shape.dim]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def drop_noop_expands(m: onnx.ModelProto) -> int:
    """Remove every ``Expand`` whose input already has the output's static shape; returns the count."""
    shapes = _static_shapes(m)
    outputs = {o.name for o in m.graph.output}
    rename: dict[str, str] = {}
    kept = []
    for node in m.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        if (node.op_type == "Expand" and node.output[0] not in outputs
                and shapes.get(node.input[0]) is not None and shapes.get(node.input[0]) == shapes.get(node.output[0])):
            rename[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    del m.graph.node[:]
    m.graph.node.extend(kept)
    return len(rename)


def bake_weights(m: onnx.ModelProto, model: Any) -> int:
    """Turn the parameter inputs back into initializers holding θ*; returns how many."""
    names = set(model.parameter_names)
    values = {t.name: t for t in model.proto.graph.initializer if t.name in names}
    kept = [v for v in m.graph.input if v.name not in values]
    baked = len(m.graph.input) - len(kept)
    del m.graph.input[:]
    m.graph.input.extend(kept)
    m.graph.initializer.extend(values[n] for n in model.parameter_names if n in values)
    return baked
