"""Graph transforms: one ModelProto in, a new one out. Never opens a runtime session.

- :func:`canonicalize`: the one form every later stage sees (opset >= 16, weights as
  initializers, Constant nodes and constant subgraphs materialised, IR >= 4).
- :func:`evaluation_graph`: logits -> per-sample loss and prediction, weights as
  initializers (optionally left out, for sessions that receive them separately).
- :func:`perturbation_graph`: the same with ``θ* + Σ_j c_j d_j`` computed inside the
  graph, so directions stay on the device and only the scalars ``c_j`` change per step.
- :func:`gradient_graph`: weights promoted to inputs, a weighted cross-entropy loss head,
  static shapes, the rewrites of :mod:`auditor.rewrites` (grouped convolutions, strided
  slices, LRN, ONNX Runtime's fused ops), then reverse-mode differentiated by onnx-ad.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ModelError, UnsupportedNodeError
from .rewrites import apply_rewrites

__all__ = [
    "canonicalize",
    "evaluation_graph",
    "perturbation_graph",
    "gradient_graph",
    "LOGITS",
    "LABELS",
    "LOSS",
    "PREDICTION",
    "LOG_PROBABILITIES",
    "TARGET",
    "TOTAL_LOSS",
]

LOGITS = "auditor_logits"
LABELS = "auditor_labels"
LOSS = "auditor_loss"  # per-sample cross-entropy, [B]
PREDICTION = "auditor_prediction"  # argmax, ties to the lowest index, [B]
LOG_PROBABILITIES = "auditor_logp"  # log-softmax of LOGITS, [B, K]: computed for LOSS anyway
TARGET = "auditor_target"  # per-sample class weights for the gradient loss, [B, K]
TOTAL_LOSS = "auditor_total_loss"  # scalar, the differentiated loss
TARGET_OPSET = 17
MAX_IR_VERSION = 10  # read by every onnxruntime >= 1.20
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Bernoulli", "Multinomial"}
#: Element types of floating-point tensors (weights are θ only if one of these).
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})
# Attribute types holding subgraphs (If/Loop/Scan bodies): nodes with them are never folded.
_GRAPH_ATTRIBUTES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def opset_of(proto: onnx.ModelProto) -> int:
    """The model's default-domain opset (0 when it declares none)."""
    return next((int(i.version) for i in proto.opset_import if i.domain in ("", "ai.onnx")), 0)


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


# --------------------------------------------------------------------------- canonical form


def canonicalize(proto: onnx.ModelProto, *, logits_name: str) -> tuple[onnx.ModelProto, list[str], dict[str, str]]:
    """Bring an exported model into the canonical form (see the module docstring).

    Returns the new model, notes for the report (what was changed), and for each weight
    that was not an initializer in the file, where it came from ("constant" or "subgraph").
    """
    model = _copy(proto)
    notes: list[str] = []
    sources: dict[str, str] = {}
    graph = model.graph

    opset = opset_of(model)
    if opset < 16:
        # The converter handles old graphs only while initializers stay listed as inputs
        # (onnx's version converter refuses them otherwise), so list them for the conversion and drop them after.
        inputs = {v.name for v in graph.input}
        added = [t for t in graph.initializer if t.name not in inputs]
        for t in added:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        try:
            converted = onnx.version_converter.convert_version(model, TARGET_OPSET)
            model = converted
            graph = model.graph
            notes.append(f"converted from opset {opset} to {TARGET_OPSET} for differentiation")
        except Exception as err:  # the converter raises bare RuntimeErrors
            notes.append(f"opset {opset} kept: conversion to {TARGET_OPSET} failed ({err})")

    # Constant nodes -> initializers named after their output.
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            tensor = _constant_value(node)
            if tensor is not None:
                graph.initializer.append(tensor)
                if tensor.data_type in FLOAT_TYPES and _size(tensor) >= 2:
                    sources[tensor.name] = "constant"
                continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)

    sources.update(_materialise_constant_subgraphs(model))

    # Initializers are no longer inputs (IR >= 4): the data input is the only one.
    inits = {t.name for t in graph.initializer}
    data_inputs = [v for v in graph.input if v.name not in inits]
    del graph.input[:]
    graph.input.extend(data_inputs)
    # IR >= 4 (initializers need not be inputs), and no newer than ONNX Runtime reads:
    # exporters stamp the newest IR onnx knows even when the graph uses nothing of it.
    required = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(required, 4, min(model.ir_version, MAX_IR_VERSION))
    del graph.value_info[:]  # stale after the edits; re-inferred where needed
    _prune(model, [o.name for o in graph.output] + [logits_name])
    _drop_unused_inputs(model)
    return model, notes, sources


def _drop_unused_inputs(model: onnx.ModelProto) -> None:
    """Inputs nothing reads (e.g. a token-type input the export ignores) need no data."""
    graph = model.graph
    read = {o.name for o in graph.output}
    for node in graph.node:
        read.update(node.input)
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                read.update(i for n in g.node for i in n.input)
    used = [v for v in graph.input if v.name in read]
    if len(used) < len(graph.input) and used:
        del graph.input[:]
        graph.input.extend(used)


def _size(t: TensorProto) -> int:
    return int(np.prod(list(t.dims), dtype=np.int64))


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    attr = {a.name: a for a in node.attribute}
    name = node.output[0]
    if "value" in attr:
        t = TensorProto()
        t.CopyFrom(attr["value"].t)
        t.name = name
        return t
    if "value_float" in attr:
        return numpy_helper.from_array(np.array(attr["value_float"].f, dtype=np.float32), name)
    if "value_floats" in attr:
        return numpy_helper.from_array(np.array(attr["value_floats"].floats, dtype=np.float32), name)
    if "value_int" in attr:
        return numpy_helper.from_array(np.array(attr["value_int"].i, dtype=np.int64), name)
    if "value_ints" in attr:
        return numpy_helper.from_array(np.array(attr["value_ints"].ints, dtype=np.int64), name)
    return None


def _materialise_constant_subgraphs(model: onnx.ModelProto) -> dict[str, str]:
    """Fold constant subgraphs that make a weight from no float weight (e.g. ConstantOfShape).

    A float tensor of >= 2 elements computed only from constants, with no float
    initializer of >= 2 elements among its ancestors, and read by a non-constant node is
    a parameter in its own right (docs/concepts.md, "Setting"): it becomes an initializer.
    Subgraphs that transform a real weight (W -> Transpose -> MatMul) are left alone, so
    the weight keeps its initializer name.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    constant: set[str] = set(inits)
    has_weight: dict[str, bool] = {n: (t.data_type in FLOAT_TYPES and _size(t) >= 2) for n, t in inits.items()}
    producer: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for o in node.output:
            producer[o] = node
        ins = [i for i in node.input if i]
        if (node.op_type not in _NONDETERMINISTIC and not any(a.type in _GRAPH_ATTRIBUTES for a in node.attribute)
                and all(i in constant for i in ins)):
            for o in node.output:
                constant.add(o)
                has_weight[o] = any(has_weight.get(i, False) for i in ins)
    frontier = []
    for node in graph.node:
        if all(o in constant for o in node.output):
            continue
        for i in node.input:
            if i in constant and i not in inits and not has_weight.get(i, False) and i not in frontier:
                frontier.append(i)
    if not frontier:
        return {}
    values = _evaluate_constants(model, frontier)
    out = {}
    for name, value in zip(frontier, values):
        if value.dtype.kind == "f" and value.size >= 2:
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            out[name] = "subgraph"
    if out:
        # Drop the producing nodes; _prune removes whatever else became unused.
        drop = {id(producer[n]) for n in out}
        kept = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(kept)
    return out


def _evaluate_constants(model: onnx.ModelProto, names: Sequence[str]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    sub = _copy(model)
    del sub.graph.output[:]
    sub.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    _prune(sub, list(names))
    del sub.graph.input[:]
    return list(ReferenceEvaluator(sub).run(None, {}))


def _prune(model: onnx.ModelProto, outputs: Iterable[str]) -> None:
    """Remove the nodes and initializers the given tensors do not depend on."""
    graph = model.graph
    needed = set(outputs)
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    needed.update(i for n in g.node for i in n.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# --------------------------------------------------------------------------- evaluation


def _logits_nodes(logits_name: str, logits_kind: str) -> list[onnx.NodeProto]:
    """Nodes that turn the model's tensor into ``[B, K]`` logits named LOGITS."""
    if logits_kind == "sigmoid":
        z = "auditor_z"
        return [
            helper.make_node("Flatten", [logits_name], [z], axis=1),
            helper.make_node("Sub", [z, z], ["auditor_zero"]),
            helper.make_node("Concat", ["auditor_zero", z], [LOGITS], axis=1),
        ]
    if logits_kind == "probabilities":
        return [
            helper.make_node("Flatten", [logits_name], ["auditor_p"], axis=1),
            helper.make_node("Max", ["auditor_p", "auditor_eps"], ["auditor_pc"]),
            helper.make_node("Log", ["auditor_pc"], [LOGITS]),
        ]
    return [helper.make_node("Flatten", [logits_name], [LOGITS], axis=1)]


def _with_logits(model: Any, *, keep_weights: bool = True) -> onnx.ModelProto:
    """The canonical graph with LOGITS as its only output, float32 throughout the head."""
    m = _copy(model.proto)
    g = m.graph
    g.node.extend(_logits_nodes(model.logits_name, model.logits_kind))
    if model.logits_kind == "probabilities":
        g.initializer.append(numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "auditor_eps"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, None))
    _prune(m, [LOGITS])
    if not keep_weights:
        names = set(model.parameter_names)
        inits = [t for t in g.initializer if t.name not in names]
        del g.initializer[:]
        g.initializer.extend(inits)
    return m


def _loss_nodes() -> list[onnx.NodeProto]:
    """Per-sample cross-entropy and argmax over LOGITS (opset >= 13 forms)."""
    return [
        helper.make_node("LogSoftmax", [LOGITS], [LOG_PROBABILITIES], axis=1),
        helper.make_node("Unsqueeze", [LABELS, "auditor_axis1"], ["auditor_labels2"]),
        helper.make_node("GatherElements", [LOG_PROBABILITIES, "auditor_labels2"], ["auditor_picked"], axis=1),
        helper.make_node("Neg", ["auditor_picked"], ["auditor_nll"]),
        helper.make_node("Squeeze", ["auditor_nll", "auditor_axis1"], [LOSS]),
        helper.make_node("ArgMax", [LOGITS], [PREDICTION], axis=1, keepdims=0, select_last_index=0),
    ]


def evaluation_graph(model: Any, *, keep_weights: bool = True, with_loss: bool = True) -> onnx.ModelProto:
    """Logits -> per-sample loss (LOSS) and prediction (PREDICTION), given LABELS.

    The log-probabilities the loss is computed from are a third output
    (LOG_PROBABILITIES), fetched only when asked for (the soft confusion of the
    unperturbed pass); leaving an output unbound costs no computation. With
    ``with_loss=False`` the only output is LOGITS. With ``keep_weights=False`` the
    parameter initializers are left out (a session gets them separately).
    """
    m = _with_logits(model, keep_weights=keep_weights)
    if not with_loss:
        return m
    g = m.graph
    g.node.extend(_loss_nodes())
    g.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "auditor_axis1"))
    g.input.append(helper.make_tensor_value_info(LABELS, TensorProto.INT64, [None]))
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(LOSS, TensorProto.FLOAT, None),
                     helper.make_tensor_value_info(PREDICTION, TensorProto.INT64, None),
                     helper.make_tensor_value_info(LOG_PROBABILITIES, TensorProto.FLOAT, None)])
    _cast_float_head(m, model)
    return m


def _cast_float_head(m: onnx.ModelProto, model: Any) -> None:
    """Models computing in float16/64 get their logits cast to float32 for the head."""
    float_input = model.input_dtype.kind == "f"
    if all(p.dtype == np.float32 for p in model.parameters) and (not float_input or model.input_dtype == np.float32):
        return
    for node in m.graph.node:
        if node.output and node.output[0] == LOGITS:
            node.output[0] = "auditor_logits_raw"
            m.graph.node.insert(list(m.graph.node).index(node) + 1, helper.make_node(
                "Cast", ["auditor_logits_raw"], [LOGITS], to=TensorProto.FLOAT))
            break


def direction_input(j: int, name: str) -> str:
    """Graph input holding direction ``j`` for parameter ``name``."""
    return f"auditor_dir{j}/{name}"


def coefficient_input(j: int) -> str:
    return f"auditor_coef{j}"


def perturbation_graph(model: Any, n_directions: int) -> onnx.ModelProto:
    """The evaluation graph at ``θ* + Σ_j coef_j · dir_j`` (docs/concepts.md, "Cross-class test").

    θ* stays an initializer; each parameter ``p`` gets inputs ``direction_input(j, p)``
    and the graph inputs ``coefficient_input(j)`` are scalars.
    """
    m = evaluation_graph(model)
    g = m.graph
    new_nodes: list[onnx.NodeProto] = []
    rename = {}
    for p in model.parameters:
        term = p.name
        for j in range(n_directions):
            d = direction_input(j, p.name)
            g.input.append(helper.make_tensor_value_info(d, TensorProto.FLOAT, list(p.shape)))
            scaled = f"auditor_scaled{j}/{p.name}"
            summed = f"auditor_pert{j}/{p.name}"
            new_nodes.append(helper.make_node("Mul", [d, coefficient_input(j)], [scaled]))
            new_nodes.append(helper.make_node("Add", [term, scaled], [summed]))
            term = summed
        rename[p.name] = term
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for j in range(n_directions):
        g.input.append(helper.make_tensor_value_info(coefficient_input(j), TensorProto.FLOAT, []))
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return m


# --------------------------------------------------------------------------- gradients


def forward_shapes(model: Any, batch: int, sample_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """The graph up to LOGITS with static input shapes ``[batch, *sample_shapes[name]]``, shapes inferred.

    Its ``value_info`` sizes a pass's activations without building the gradient graph (the
    gradient pass's largest tensors are these activations and shifted copies of them).
    """
    m = _with_logits(model)
    for v in m.graph.input:
        if v.name in sample_shapes:
            dims = v.type.tensor_type.shape.dim
            for d, size in zip(dims, [batch, *sample_shapes[v.name]]):
                d.Clear()
                d.dim_value = int(size)
    return _infer(m)


def gradient_graph(model: Any, batch: int, sample_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """The reverse-mode graph of the weighted cross-entropy with respect to θ.

    Inputs: the data inputs with a static batch ``batch`` and the sample shapes
    ``sample_shapes[name]`` (the data's, so dynamic axes become static), TARGET ``[batch, K]`` float32
    (``T[i, y_i]`` is sample i's weight, zero rows add nothing) and the seed
    ``adj_auditor_total_loss`` of shape ``[1]``. Outputs: TOTAL_LOSS and, for every
    parameter ``p``, ``adj_<p>`` of shape ``[1, *p.shape]``.

    Raises
    ------
    UnsupportedNodeError
        A node between θ and the loss has no reverse rule, or the graph is in training mode.
    """
    import onnx_ad
    from onnx_ad.rules import REVERSE

    m = _with_logits(model)
    g = m.graph
    names = model.parameter_names
    params = {p.name: p for p in model.parameters}
    # Promote the weights to inputs (onnx-ad differentiates with respect to inputs only).
    inits = []
    for t in g.initializer:
        if t.name in params:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            inits.append(t)
    del g.initializer[:]
    g.initializer.extend(inits)
    # Loss head: -Σ_i Σ_k T[i, k] log softmax(z_i)_k.
    g.node.extend([
        helper.make_node("LogSoftmax", [LOGITS], ["auditor_logp"], axis=1),
        helper.make_node("Mul", ["auditor_logp", TARGET], ["auditor_weighted"]),
        helper.make_node("ReduceSum", ["auditor_weighted"], ["auditor_sum"], keepdims=0),
        helper.make_node("Neg", ["auditor_sum"], [TOTAL_LOSS]),
    ])
    g.input.append(helper.make_tensor_value_info(TARGET, TensorProto.FLOAT, [batch, model.n_classes]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(TOTAL_LOSS, TensorProto.FLOAT, []))
    _cast_float_head(m, model)
    # Static shapes: Conv's reverse rule needs them.
    for v in g.input:
        if v.name in sample_shapes:
            dims = v.type.tensor_type.shape.dim
            for d, size in zip(dims, [batch, *sample_shapes[v.name]]):
                d.Clear()
                d.dim_value = int(size)
    from .differentiable import check_differentiable, check_training_mode

    check_training_mode(m)
    m = _infer(m)
    apply_rewrites(m, set(names))
    m = _infer(m)
    check_differentiable(m, names, REVERSE)
    from .reverse_graph import finish_reverse_graph
    from .reverse_rules import faster_reverse_rules

    try:
        with faster_reverse_rules(one_seed=True):
            reverse = onnx_ad.reverse(m, inputs=names, outputs=[TOTAL_LOSS], layout="onnx")
    except onnx_ad.UnsupportedOperator as err:
        raise UnsupportedNodeError(f"onnx-ad cannot differentiate this model: {err}; the auditor "
                                   "needs every op between the weights and the logits to be "
                                   "differentiable") from err
    m = finish_reverse_graph(reverse, model, seed=f"adj_{TOTAL_LOSS}")
    # onnx-ad also emits the adjoints of constants no output reads (a transformer's scalar
    # divisors, mask fills): ONNX Runtime would still run them, ~20% of a BERT's gradient pass
    _prune(m, [o.name for o in m.graph.output])
    return m


def _infer(m: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception as err:
        raise ModelError(f"shape inference failed on the gradient graph ({err}); the model may "
                         "use a shape the auditor cannot fix statically") from err


def simplify_transposes(m: onnx.ModelProto) -> int:
    """Replace every Transpose that only moves size-1 axes by a Reshape (a free view).

    onnx-ad moves the seed axis (size 1 here: one seed) to the front and back around
    convolutions; ONNX Runtime would copy the whole tensor each time. Needs inferred
    static shapes; Transposes of unknown shape are left alone. Returns the count.
    """
    shapes: dict[str, list[int]] = {}
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    nodes, count = [], 0
    for node in m.graph.node:
        shape = shapes.get(node.input[0]) if node.op_type == "Transpose" else None
        if shape is not None:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), list(range(len(shape)))[::-1])
            moved = [p for p in perm if shape[p] != 1]
            if moved == sorted(moved):
                target = f"{node.output[0]}/auditor_shape"
                m.graph.initializer.append(numpy_helper.from_array(
                    np.array([shape[p] for p in perm], dtype=np.int64), target))
                nodes.append(helper.make_node("Reshape", [node.input[0], target], list(node.output),
                                              name=f"{node.name or node.output[0]}/as_reshape"))
                count += 1
                continue
        nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return count
