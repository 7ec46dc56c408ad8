"""Integer-quantised weights -> float θ: fold every constant ``DequantizeLinear`` into a float32 initializer.

A weight ``W_q`` (int8, uint8, int4, int16 or an int32 bias) read by ``DequantizeLinear`` with
constant scale ``s``, zero point ``z`` and, per channel, an ``axis`` (or a ``block_size``) is
replaced by one float32 initializer holding ``s · (W_q − z)``, computed the way ONNX Runtime's
kernel does (the integer difference first, then one float32 product), so the twin's weights
are the deployed graph's dequantised values bit for bit. The same holds for a float weight
quantised inside the graph (``W → QuantizeLinear → DequantizeLinear``, as quantisation-aware
training exports write it): the twin holds the values the deployed graph computes.

``DequantizeLinear`` nodes are first moved above the data-movement ops between them and
their quantised source (``Gather`` of an int8 embedding table, a ``MaxPool`` or ``Reshape``
on int8 activations in QOperator graphs), which is exact for a per-tensor scale: these ops
pick or rearrange values, and ``v ↦ s · (v − z)`` is increasing.

Activation ``QuantizeLinear → DequantizeLinear`` pairs stay in the graph; the gradient
graph differentiates them straight through (:mod:`auditor.rewrites.fake_quant`). Every
integer tensor left on the way to the logits must then go from a ``QuantizeLinear`` straight
into ``DequantizeLinear``s, or gradients would silently stop there: anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from auditor.errors import ModelError

from ._edit import GraphEdit, attributes, is_standard

__all__ = ["FoldedWeight", "fold_quantized_weights", "lift_dequantize", "check_integer_paths",
           "dequantize_array", "quantize_array", "qrange", "INTEGER_TYPES"]

INTEGER_TYPES = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8", TensorProto.INT16: "int16",
                 TensorProto.UINT16: "uint16", TensorProto.INT32: "int32", TensorProto.INT4: "int4",
                 TensorProto.UINT4: "uint4"}
# Ops that only pick or rearrange values: DequantizeLinear (per-tensor) commutes with them.
_MOVEMENT = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Gather", "GatherElements",
             "GatherND", "Slice", "MaxPool", "Expand", "Tile", "DepthToSpace", "SpaceToDepth"}
_SUFFIXES = ("_quantized",)  # what onnxruntime.quantization appends to a weight's name


@dataclass(frozen=True)
class FoldedWeight:
    """One float θ tensor made from a quantised constant (see :class:`auditor.twin.WeightRecord`)."""

    name: str
    sources: tuple[str, ...]
    dtype: str
    scheme: str
    axis: int | None


def qrange(dtype: np.dtype) -> tuple[int, int]:
    """The integer range ``[qmin, qmax]`` of a quantised type (int4/uint4 included)."""
    name = str(np.dtype(dtype))
    if name in ("int4", "uint4"):
        return (-8, 7) if name == "int4" else (0, 15)
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def _broadcast(param: np.ndarray, shape: tuple[int, ...], axis: int | None, block_size: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against a tensor of ``shape``."""
    if param.size == 1 and not block_size:
        return param.reshape(())
    assert axis is not None
    axis %= len(shape)
    if block_size:
        param = np.repeat(param, block_size, axis=axis)
        return np.take(param, np.arange(shape[axis]), axis=axis)
    return param.reshape([-1 if a == axis else 1 for a in range(len(shape))])


def dequantize_array(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None = 1,
                     block_size: int = 0) -> np.ndarray:
    """``scale · (q − zero_point)`` in float32 as ONNX Runtime computes it (integer difference, one product)."""
    shape = q.shape
    s = _broadcast(np.asarray(scale, np.float32), shape, axis, block_size)
    z = 0 if zero_point is None else _broadcast(np.asarray(zero_point).astype(np.int64), shape, axis, block_size)
    values: np.ndarray = ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)
    return values


def quantize_array(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None = 1,
                   block_size: int = 0, dtype: np.dtype | None = None) -> np.ndarray:
    """``saturate(round_half_even(x / scale) + zero_point)``, the QuantizeLinear formula."""
    target = np.dtype(dtype if dtype is not None else (zero_point.dtype if zero_point is not None else np.uint8))
    s = _broadcast(np.asarray(scale, np.float32), x.shape, axis, block_size)
    z = 0 if zero_point is None else _broadcast(np.asarray(zero_point).astype(np.int64), x.shape, axis, block_size)
    lo, hi = qrange(target)
    q: np.ndarray = np.clip(np.rint(x.astype(np.float32) / s).astype(np.int64) + z, lo, hi).astype(target)
    return q


def _scheme(scale: np.ndarray, attrs: dict[str, object]) -> tuple[str, int | None]:
    if int(attrs.get("block_size", 0) or 0):  # type: ignore[call-overload]
        return "blocked", int(attrs.get("axis", 1))  # type: ignore[call-overload]
    if scale.size == 1:
        return "per-tensor", None
    return "per-channel", int(attrs.get("axis", 1))  # type: ignore[call-overload]


def _quantised_source(edit: GraphEdit, name: str, producers: dict[str, onnx.NodeProto]) -> bool:
    """True when ``name`` is a constant or a QuantizeLinear output, possibly through movement ops."""
    while True:
        if edit.constant(name, producers) is not None:
            return True
        node = producers.get(name)
        if node is None or not is_standard(node):
            return False
        if node.op_type == "QuantizeLinear":
            return True
        if node.op_type not in _MOVEMENT:
            return False
        name = node.input[0]


def lift_dequantize(edit: GraphEdit) -> int:
    """Move per-tensor DequantizeLinear nodes above the movement ops under them; return the count."""
    count = 0
    while True:
        producers = edit.producers()
        nodes: list[onnx.NodeProto] = []
        lifted = 0
        for dq in edit.nodes:
            replacement = _lift_one(edit, dq, producers)
            nodes.extend(replacement if replacement is not None else [dq])
            lifted += replacement is not None
        edit.nodes = nodes
        count += lifted
        if not lifted:
            return count


def _lift_one(edit: GraphEdit, dq: onnx.NodeProto, producers: dict[str, onnx.NodeProto]
              ) -> list[onnx.NodeProto] | None:
    """``DQ(M(q))`` as ``M(DQ(q))`` for a movement op M and a per-tensor scale; None when not applicable."""
    if dq.op_type != "DequantizeLinear" or not is_standard(dq):
        return None
    mover = producers.get(dq.input[0])
    if mover is None or not is_standard(mover) or mover.op_type not in _MOVEMENT:
        return None
    scale = edit.constant(dq.input[1], producers)
    if scale is None or scale.size != 1 or not _quantised_source(edit, mover.input[0], producers):
        return None
    source = edit.fresh(f"{mover.input[0]}_dequantized")
    new_dq = GraphEdit.node("DequantizeLinear", [mover.input[0], *dq.input[1:]], [source],
                            name=f"{dq.name or dq.output[0]}/lifted", **attributes(dq))
    moved = onnx.NodeProto()
    moved.CopyFrom(mover)
    moved.input[0] = source
    del moved.output[:]
    moved.output.append(dq.output[0])
    moved.name = f"{mover.name or mover.op_type}/float"
    return [new_dq, moved]


def _candidate_name(source: str) -> str:
    for suffix in _SUFFIXES:
        if source.endswith(suffix):
            return source[: -len(suffix)]
    return source


def fold_quantized_weights(edit: GraphEdit) -> list[FoldedWeight]:
    """Replace every constant ``DequantizeLinear`` (and constant Q→DQ chain) by a float32 initializer."""
    producers = edit.producers()
    consumers = edit.consumers()
    outputs = {o.name for o in edit.graph.output}
    folded: list[FoldedWeight] = []
    keep: list[onnx.NodeProto] = []
    renames: dict[str, str] = {}
    for dq in edit.nodes:
        result = _fold_one(edit, dq, producers) if dq.op_type == "DequantizeLinear" and is_standard(dq) else None
        if result is None:
            keep.append(dq)
            continue
        values, sources, dtype, scheme, axis = result
        name = _weight_name(edit, dq, sources[0], producers, consumers, outputs)
        if name in edit.initializers:  # a float weight quantised in the graph: its name now holds θ
            del edit.initializers[name]
            kept = [t for t in edit.graph.initializer if t.name != name]
            del edit.graph.initializer[:]
            edit.graph.initializer.extend(kept)
        edit.add_initializer(values, name)
        if name != dq.output[0]:
            renames[dq.output[0]] = name
        folded.append(FoldedWeight(name, sources, dtype, scheme, axis))
    edit.nodes = keep
    for old, new in renames.items():
        edit.rename_input(old, new)
    return folded


def _weight_name(edit: GraphEdit, dq: onnx.NodeProto, source: str, producers: dict[str, onnx.NodeProto],
                 consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> str:
    """The original weight's name where it is recoverable and free, else the DequantizeLinear output's."""
    out = str(dq.output[0])
    if out in outputs:
        return out
    candidate = _candidate_name(source)
    if candidate != source:  # onnxruntime's "<weight>_quantized"
        return candidate if candidate == out or edit.is_free(candidate) else out
    quant = producers.get(dq.input[0])
    in_graph = (quant is not None and quant.op_type == "QuantizeLinear" and quant.input[0] == source
                and [n.output[0] for n in consumers.get(source, [])] == [quant.output[0]]
                and [n.output[0] for n in consumers.get(quant.output[0], [])] == [out])
    return source if in_graph and source in edit.initializers else out


def _fold_one(edit: GraphEdit, dq: onnx.NodeProto, producers: dict[str, onnx.NodeProto]
              ) -> tuple[np.ndarray, tuple[str, ...], str, str, int | None] | None:
    attrs = attributes(dq)
    scale = edit.constant(dq.input[1], producers)
    zero = edit.constant(dq.input[2], producers) if len(dq.input) > 2 and dq.input[2] else None
    if scale is None or (len(dq.input) > 2 and dq.input[2] and zero is None):
        return None
    axis = int(attrs.get("axis", 1))
    block = int(attrs.get("block_size", 0) or 0)
    q = edit.constant(dq.input[0], producers)
    sources: tuple[str, ...] = (dq.input[0],)
    if q is None:  # a float weight quantised in the graph: W -> QuantizeLinear -> DequantizeLinear
        quant = producers.get(dq.input[0])
        if quant is None or quant.op_type != "QuantizeLinear" or not is_standard(quant):
            return None
        w = edit.constant(quant.input[0], producers)
        q_scale = edit.constant(quant.input[1], producers)
        q_zero = edit.constant(quant.input[2], producers) if len(quant.input) > 2 and quant.input[2] else None
        if w is None or q_scale is None or w.dtype.kind != "f":
            return None
        q_attrs = attributes(quant)
        q = quantize_array(w, q_scale, q_zero, int(q_attrs.get("axis", 1)), int(q_attrs.get("block_size", 0) or 0),
                           _output_dtype(q_attrs, q_zero))
        sources = (quant.input[0],)
    if q.dtype.kind not in "iu" and str(q.dtype) not in ("int4", "uint4"):
        raise ModelError(f"DequantizeLinear {dq.name or dq.output[0]!r} reads {q.dtype} values; the auditor "
                         "handles integer quantisation (int4, int8, int16, int32 biases), not float8")
    values = dequantize_array(q, scale, zero, axis, block)
    scheme, scheme_axis = _scheme(scale, attrs)
    if scheme_axis is not None:
        scheme_axis %= max(q.ndim, 1)
    return values, sources, str(q.dtype), scheme, scheme_axis


def _output_dtype(attrs: dict[str, object], zero: np.ndarray | None) -> np.dtype:
    if zero is not None:
        return zero.dtype
    code = int(attrs.get("output_dtype", 0) or 0)  # type: ignore[call-overload]
    return np.dtype(helper.tensor_dtype_to_np_dtype(code)) if code else np.dtype(np.uint8)


def check_integer_paths(edit: GraphEdit, needed: set[str]) -> None:
    """Refuse integer activations that leave a QuantizeLinear for anything but a DequantizeLinear."""
    consumers = edit.consumers()
    for node in edit.nodes:
        if node.op_type != "QuantizeLinear" or not is_standard(node) or node.output[0] not in needed:
            continue
        for reader in consumers.get(node.output[0], []):
            if reader.op_type != "DequantizeLinear" or not is_standard(reader):
                domain = f"{reader.domain}." if reader.domain else ""
                raise ModelError(
                    f"node {reader.name or reader.output[0]!r} ({domain}{reader.op_type}) computes on the "
                    f"integer output of QuantizeLinear {node.name or node.output[0]!r}; the auditor follows "
                    "quantised activations only from a QuantizeLinear into a DequantizeLinear. Quantise in QDQ "
                    "format: onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)")
