"""The float32 twin of a reduced-precision export: what the auditor differentiates and perturbs.

float16 exports (``.half()`` models, ``onnxconverter_common.float16`` conversions with or
without float32 inputs/outputs) and integer-quantised exports (``onnxruntime.quantization``
in QDQ or QOperator format, static or dynamic) cannot take the auditor's float32 loss head,
and their weights are not float θ. :func:`float_twin` turns such a model into a plain float32
graph that computes the same function:

- float16: every float16 tensor, attribute and declared type becomes float32; weights are
  exact (see :mod:`auditor.twin._float16`).
- integer: every constant ``DequantizeLinear`` becomes the float32 initializer of its
  dequantised values, named after the original weight where the name is recoverable; QOperator
  and dynamic-quantisation nodes are first written in QDQ form; activation
  ``QuantizeLinear → DequantizeLinear`` pairs stay in the forward pass and are differentiated
  straight through by the gradient graph (:mod:`auditor.rewrites.fake_quant`).

The twin is a graph transform only: no session is opened. Base metrics belong to the original
graph as deployed; gradients and the cross-class test run on the twin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import TensorProto

from ._edit import GraphEdit, is_standard
from ._float16 import float16_to_float32, has_float16
from ._qoperator import expand_integer_ops, is_integer_op
from ._quantized import FoldedWeight, check_integer_paths, fold_quantized_weights, lift_dequantize

__all__ = ["Twin", "WeightRecord", "float_twin", "KINDS", "QDQ_SESSION_CONFIG"]

#: What the original model was, as :attr:`Twin.kind` reports it.
KINDS = ("float32", "float16", "float16-io32", "int8-qdq", "int8-weight-only", "int8-qoperator", "int8-dynamic")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
#: The ONNX Runtime session config entry that keeps QDQ graphs op by op (see :attr:`Twin.session_config`).
QDQ_SESSION_CONFIG = ("session.disable_quant_qdq", "1")
_DYNAMIC = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")


@dataclass(frozen=True)
class WeightRecord:
    """One float θ tensor of the twin and where it came from.

    Attributes
    ----------
    name : str
        The initializer in the twin (the original weight's name where it could be
        recovered, e.g. ``conv1.weight`` for onnxruntime's ``conv1.weight_quantized``).
    sources : tuple of str
        The original tensor(s) it was computed from: the quantised integer initializer, or
        the float16 initializer, or the float weight quantised inside the graph.
    dtype : str
        Their element type in the original: ``"float16"``, ``"int8"``, ``"uint8"``, ``"int32"``
        (biases), ``"int4"``, ...
    scheme : {"float16", "per-tensor", "per-channel", "blocked"}
        How it was stored: float16, or integer with one scale, one scale per channel along
        ``axis``, or one scale per block along ``axis``.
    axis : int or None
        The quantisation axis (per-channel and blocked schemes).
    """

    name: str
    sources: tuple[str, ...]
    dtype: str
    scheme: str
    axis: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sources": list(self.sources), "dtype": self.dtype, "scheme": self.scheme,
                "axis": self.axis}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WeightRecord:
        return cls(d["name"], tuple(d["sources"]), d["dtype"], d["scheme"], d.get("axis"))


@dataclass(frozen=True, eq=False)
class Twin:
    """A model and its float32 twin.

    Attributes
    ----------
    proto : onnx.ModelProto
        The float32 twin; the original proto itself when ``kind == "float32"``. Treat as
        read-only.
    kind : str
        The original's precision, one of :data:`KINDS`.
    weights : tuple of WeightRecord
        The twin's float θ tensors that were float16 or integer in the original. Float32
        weights the original already had (unquantised layers) are not listed.
    notes : tuple of str
        One sentence each, for the report's method section.
    input_types, output_types : mapping of str to str
        The original graph's data inputs and outputs with their element types (the twin's
        are all float32 where these are float16), so the original can be fed for its own
        base metrics.
    rewritten : mapping of str to int
        Integer op types written in QDQ form (QOperator and dynamic quantisation), with counts.
    session_config : mapping of str to str
        ONNX Runtime session config entries every session running the twin with θ as
        initializers must set (``SessionOptions.add_session_config_entry``). For integer kinds:
        ``{"session.disable_quant_qdq": "1"}``. With its QDQ transformers on, ONNX Runtime
        re-quantises a float Conv/Gemm weight whose input comes from a DequantizeLinear (int8,
        one scale per tensor: ``WeightBiasQuantization``, onnxruntime 1.31), so the session would
        run neither the deployed per-channel weights nor a perturbed θ. With them off, Q/DQ run
        as their own kernels and the twin's logits equal the deployed graph's as ONNX Runtime runs
        it op by op, bit for bit. Sessions with θ as graph inputs (the gradient graph, the
        perturbation graph) are not affected, but the entry does no harm there.
    """

    proto: onnx.ModelProto
    kind: str
    weights: tuple[WeightRecord, ...] = ()
    notes: tuple[str, ...] = ()
    input_types: Mapping[str, str] = field(default_factory=dict)
    output_types: Mapping[str, str] = field(default_factory=dict)
    rewritten: Mapping[str, int] = field(default_factory=dict)
    session_config: Mapping[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """True when the twin differs from the original (any kind but float32)."""
        return self.kind != "float32"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the graph)."""
        return {"kind": self.kind, "weights": [w.to_dict() for w in self.weights], "notes": list(self.notes),
                "input_types": dict(self.input_types), "output_types": dict(self.output_types),
                "rewritten": dict(self.rewritten), "session_config": dict(self.session_config)}


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"


def _io_types(proto: onnx.ModelProto) -> tuple[dict[str, str], dict[str, str]]:
    inits = {t.name for t in proto.graph.initializer}
    inputs = {v.name: _type_name(v.type.tensor_type.elem_type) for v in proto.graph.input if v.name not in inits}
    outputs = {v.name: _type_name(v.type.tensor_type.elem_type) for v in proto.graph.output}
    return inputs, outputs


def _is_quantised(node: onnx.NodeProto) -> bool:
    return is_integer_op(node) or (node.op_type in _QDQ and (is_standard(node) or node.domain == "com.microsoft"))


def float_twin(proto: onnx.ModelProto) -> Twin:
    """The float32 twin of ``proto`` (the model itself when it is float32 already).

    Parameters
    ----------
    proto : onnx.ModelProto
        The exported model, as loaded (not modified).

    Returns
    -------
    Twin

    Raises
    ------
    ModelError
        An integer op that has no float form here, or an integer activation read by an op
        other than DequantizeLinear (one line naming the node and saying how to re-quantise).

    Examples
    --------
    >>> from auditor.demo import demo_paths
    >>> twin = float_twin(onnx.load(demo_paths().model))
    >>> twin.kind, twin.changed
    ('float32', False)
    """
    inputs, outputs = _io_types(proto)
    ops = Counter(n.op_type for n in proto.graph.node if _is_quantised(n))
    half = has_float16(proto)
    if not half and not ops:
        return Twin(proto, "float32", input_types=inputs, output_types=outputs)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    records: list[WeightRecord] = []
    notes: list[str] = []
    if half:
        converted = float16_to_float32(model)
        records += [WeightRecord(n, (n,), "float16", "float16") for n in converted.initializers]
        kind = "float16" if converted.inputs or converted.outputs else "float16-io32"
        notes.append(_float16_note(kind))
    rewritten: Counter[str] = Counter()
    if ops:
        edit = GraphEdit(model)
        rewritten = expand_integer_ops(edit)
        lift_dequantize(edit)
        folded = fold_quantized_weights(edit)
        edit.commit()
        check_integer_paths(edit, _needed(edit))
        records = _float16_weights(records, edit) + [WeightRecord(f.name, f.sources, f.dtype, f.scheme, f.axis)
                                                     for f in folded]
        kind = _integer_kind(ops, any(n.op_type == "QuantizeLinear" for n in edit.nodes))
        notes += _integer_notes(kind, folded, rewritten, edit)
    config = {QDQ_SESSION_CONFIG[0]: QDQ_SESSION_CONFIG[1]} if ops else {}
    return Twin(model, kind, tuple(records), tuple(notes), inputs, outputs, dict(rewritten), config)


def _float16_weights(records: list[WeightRecord], edit: GraphEdit) -> list[WeightRecord]:
    """The float16 records still naming a weight once the quantised ones are folded (not scales)."""
    scales = {i for n in edit.nodes if n.op_type in _QDQ for i in n.input[1:]}
    return [r for r in records if r.name in edit.initializers and r.name not in scales]


def _needed(edit: GraphEdit) -> set[str]:
    needed = {o.name for o in edit.graph.output}
    for node in reversed(edit.nodes):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
    return needed


def _integer_kind(ops: Counter[str], activations: bool) -> str:
    """The original's format; ``activations``: quantised activations remain once the weights are folded."""
    if any(op in ops for op in _DYNAMIC):
        return "int8-dynamic"
    if any(op not in _QDQ for op in ops):
        return "int8-qoperator"
    return "int8-qdq" if activations else "int8-weight-only"


def _float16_note(kind: str) -> str:
    edges = " (with float32 inputs and outputs)" if kind == "float16-io32" else ""
    return (f"The model computes in float16{edges}; gradients and the cross-class test run on a float32 twin "
            "holding the same weights (float16 converts to float32 exactly), which differs from the original only "
            "in the rounding of its arithmetic.")


def _integer_notes(kind: str, folded: list[FoldedWeight], rewritten: Counter[str], edit: GraphEdit) -> list[str]:
    schemes = sorted({f.scheme for f in folded})
    dtypes = sorted({f.dtype for f in folded})
    notes = []
    if folded:
        notes.append(f"The {len(folded)} integer weight tensors ({', '.join(dtypes)}; {', '.join(schemes)}) are "
                     "audited as float θ holding their dequantised values scale·(q − zero point), the values the "
                     "deployed graph computes with; a step along an ego direction moves them in float, without "
                     "re-quantising.")
    if rewritten:
        ops = ", ".join(f"{op} ×{n}" for op, n in sorted(rewritten.items()))
        notes.append(f"Integer operators ({ops}) were written as DequantizeLinear → float op → QuantizeLinear; an "
                     "output may differ from the integer kernel's by one quantisation step.")
    if kind == "int8-dynamic":
        notes.append("Activations quantised at run time (DynamicQuantizeLinear, a scale per batch) stay quantised in "
                     "the forward pass and are differentiated straight through, rounding as the identity and the "
                     "scale as a constant; like the deployed model's outputs, results depend on the batch.")
    elif any(n.op_type == "QuantizeLinear" for n in edit.nodes):
        notes.append("Activation QuantizeLinear/DequantizeLinear pairs stay in the forward pass and are "
                     "differentiated straight through: rounding counts as the identity, and the gradient is zero "
                     "where an activation saturates at an end of its integer range.")
    return notes
