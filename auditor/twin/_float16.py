"""float16 -> float32: the twin of a ``.half()`` export or an ``onnxconverter_common.float16`` conversion.

Every place a graph can hold the element type FLOAT16 is rewritten to FLOAT: initializers,
tensor attributes (``Constant``, ``ConstantOfShape``), the ``to`` of ``Cast`` and the ``dtype``
of ops that make tensors (``EyeLike``, ``RandomNormal``, ...), graph inputs, outputs and
``value_info``, and the same inside subgraphs (``If``, ``Loop``, ``Scan``). float16 values
convert to float32 exactly, so the twin holds the exported weights bit for bit and differs
from the original only in the rounding of what it computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

__all__ = ["has_float16", "float16_to_float32", "Float16Result"]

_HALF = TensorProto.FLOAT16
_TYPE_ATTRIBUTES = ("to", "dtype")  # Cast's target; the element type of EyeLike, Random*, ...


@dataclass
class Float16Result:
    """What :func:`float16_to_float32` changed: converted initializers, float16 graph inputs/outputs, casts."""

    initializers: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    casts: int = 0


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _value_infos(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def _tensor_type_is_half(value: onnx.ValueInfoProto) -> bool:
    return value.type.HasField("tensor_type") and value.type.tensor_type.elem_type == _HALF


def has_float16(proto: onnx.ModelProto) -> bool:
    """True when any tensor, attribute or declared type of the model is float16."""
    for graph in _graphs(proto.graph):
        if any(t.data_type == _HALF for t in graph.initializer):
            return True
        if any(_tensor_type_is_half(v) for v in _value_infos(graph)):
            return True
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR and attr.t.data_type == _HALF:
                    return True
                if attr.type == AttributeProto.INT and attr.name in _TYPE_ATTRIBUTES and attr.i == _HALF:
                    return True
    return False


def _to32(t: TensorProto) -> TensorProto:
    out = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
    out.doc_string = t.doc_string
    return out


def float16_to_float32(proto: onnx.ModelProto) -> Float16Result:
    """Rewrite every float16 element type of ``proto`` (edited in place) to float32.

    Returns what changed; only the top-level graph's initializers and inputs/outputs are
    listed (subgraphs are converted too).
    """
    result = Float16Result()
    top = proto.graph
    result.inputs = [v.name for v in top.input if _tensor_type_is_half(v)]
    result.outputs = [v.name for v in top.output if _tensor_type_is_half(v)]
    for graph in _graphs(top):
        for i, t in enumerate(graph.initializer):
            if t.data_type == _HALF:
                graph.initializer[i].CopyFrom(_to32(t))
                if graph is top:
                    result.initializers.append(t.name)
        for value in _value_infos(graph):
            if _tensor_type_is_half(value):
                value.type.tensor_type.elem_type = TensorProto.FLOAT
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR and attr.t.data_type == _HALF:
                    attr.t.CopyFrom(_to32(attr.t))
                elif attr.type == AttributeProto.TENSORS:
                    for k, t in enumerate(attr.tensors):
                        if t.data_type == _HALF:
                            attr.tensors[k].CopyFrom(_to32(t))
                elif attr.type == AttributeProto.INT and attr.name in _TYPE_ATTRIBUTES and attr.i == _HALF:
                    attr.i = TensorProto.FLOAT
                    result.casts += node.op_type in ("Cast", "CastLike")
    return result
