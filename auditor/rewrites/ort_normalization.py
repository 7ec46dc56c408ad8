"""ONNX Runtime's fused normalisations as reductions and elementwise ops.

Over the normalised axes (the last one, or ``axis`` onwards)::

    LayerNormalization:           y = (x - mean(x)) / sqrt(var(x) + eps) · gamma (+ beta)
    SimplifiedLayerNormalization: y = x / sqrt(mean(x²) + eps) · gamma             (RMS norm)
    Skip[Simplified]LayerNormalization: the same of s = input + skip (+ bias)
    EmbedLayerNormalization: LayerNormalization of word[ids] + position[pos] (+ segment[seg])

with every optional output the node declares (mean, inverse standard deviation, the sum ``s``,
the embedding sum, the mask index) computed where it is consumed. ``SimplifiedLayerNormalization``
(and ``LayerNormalization`` below opset 17) are ONNX Runtime schemas in the default domain; from
opset 17 on, the standard ``LayerNormalization`` has a reverse rule and is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import onnx
from onnx import TensorProto

from . import register
from ._edit import Edit, attributes, differentiated

__all__ = ["rewrite_ort_normalization"]

MS = "com.microsoft"


def _normalize(edit: Edit, s: str, axes: Sequence[int], eps: float, gamma: str, beta: str | None, *,
               simplified: bool, outputs: Sequence[str]) -> None:
    """(RMS-)normalise ``s`` over ``axes``; ``outputs`` = (y, mean or "", inv_std_dev or "")."""
    y, mean_out, inv_out = (list(outputs) + ["", "", ""])[:3]
    centred = s
    if not simplified:
        mean = edit.reduce_mean(s, axes, out=mean_out or None)
        centred = edit.op("Sub", [s, mean], hint="centred")
    variance = edit.reduce_mean(edit.op("Mul", [centred, centred], hint="square"), axes)
    std = edit.op("Sqrt", [edit.op("Add", [variance, edit.scalar(eps, s, "eps")], hint="var_eps")], hint="std")
    inv = edit.op("Reciprocal", [std], out=inv_out or None, hint="inv_std")
    scaled = edit.op("Mul", [edit.op("Mul", [centred, inv], hint="normed"), gamma], out=None if beta else y,
                     hint="scaled")
    if beta:
        edit.op("Add", [scaled, beta], out=y)


def _axes(edit: Edit, x: str, axis: int) -> list[int] | None:
    if axis == -1:
        return [-1]
    rank = edit.rank(x)
    if rank is None:
        return None
    return list(range(axis % rank, rank))


def _optional(node: onnx.NodeProto, index: int, consumed: Set[str]) -> str:
    """Output ``index`` if the node declares it and something reads it, else ""."""
    return node.output[index] if len(node.output) > index and node.output[index] in consumed else ""


def _input(node: onnx.NodeProto, index: int) -> str | None:
    return node.input[index] if len(node.input) > index and node.input[index] else None


def _skip(edit: Edit, node: onnx.NodeProto, consumed: Set[str], *, simplified: bool) -> bool:
    eps = attributes(node).get_float("epsilon", 1e-12)
    beta, bias = (None, _input(node, 3)) if simplified else (_input(node, 3), _input(node, 4))
    if simplified and _optional(node, 1, consumed):
        return False  # a "mean" of an RMS norm: not defined by the op's documentation
    total_out = _optional(node, 3, consumed)
    total = edit.op("Add", [node.input[0], node.input[1]], out=None if bias else total_out or None, hint="sum")
    if bias:
        total = edit.op("Add", [total, bias], out=total_out or None, hint="sum_bias")
    outputs = [node.output[0], "" if simplified else _optional(node, 1, consumed), _optional(node, 2, consumed)]
    _normalize(edit, total, [-1], eps, node.input[2], beta, simplified=simplified, outputs=outputs)
    return True


def _layer_norm(edit: Edit, node: onnx.NodeProto, consumed: Set[str], *, simplified: bool) -> bool:
    attrs = attributes(node)
    axes = _axes(edit, node.input[0], attrs.get_int("axis", -1))
    if axes is None:
        return False
    eps = attrs.get_float("epsilon", 1e-5)
    beta = None if simplified else _input(node, 2)
    outputs = [node.output[0]] + ([_optional(node, 1, consumed)] if simplified else
                                  [_optional(node, 1, consumed), _optional(node, 2, consumed)])
    if simplified:
        outputs = [outputs[0], "", outputs[1]]
    _normalize(edit, node.input[0], axes, eps, node.input[1], beta, simplified=simplified, outputs=outputs)
    return True


def _embed(edit: Edit, node: onnx.NodeProto, consumed: Set[str]) -> bool:
    ids, segments = node.input[0], _input(node, 1)
    words, positions, segment_table = node.input[2], node.input[3], _input(node, 4)
    mask, position_ids = _input(node, 7), _input(node, 8)
    if _optional(node, 1, consumed) and mask is None:
        return False  # a mask index without a mask: only a fused attention reads it, and that is refused anyway
    total = edit.op("Gather", [words, ids], axis=0, hint="words")
    if position_ids is None:  # positions 0..S-1, broadcast over the batch
        length = edit.op("Gather", [edit.op("Shape", [ids], hint="ids_shape"), edit.ints(1, "one")], axis=0,
                         hint="length")
        position_ids = edit.op("Range", [edit.ints(0, "zero"), length, edit.ints(1, "step")], hint="positions")
    total = edit.op("Add", [total, edit.op("Gather", [positions, position_ids], axis=0, hint="pos")], hint="sum")
    if segments is not None and segment_table is not None:
        total = edit.op("Add", [total, edit.op("Gather", [segment_table, segments], axis=0, hint="seg")],
                        hint="sum_seg")
    if _optional(node, 2, consumed):
        edit.op("Identity", [total], out=node.output[2])
    if _optional(node, 1, consumed) and mask is not None:
        count = edit.op("ReduceSum", [mask, edit.ints([1], "axis1")], keepdims=0, hint="mask_sum")
        edit.op("Cast", [count], out=node.output[1], to=TensorProto.INT32)
    eps = attributes(node).get_float("epsilon", 1e-12)
    _normalize(edit, total, [-1], eps, node.input[5], node.input[6], simplified=False, outputs=[node.output[0]])
    return True


@register("ort-fused-normalization", "ONNX Runtime (Skip/Embed/Simplified)LayerNormalization -> reductions and "
          "elementwise ops")
def rewrite_ort_normalization(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every fused ONNX Runtime normalisation between θ and the loss; return the count."""
    edit = Edit(model, "auditor_norm")
    path = differentiated(model, params)
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for node in edit.nodes:
        if not any(i in path for i in node.input):
            continue
        op, ms = node.op_type, node.domain == MS
        standard = node.domain in ("", "ai.onnx")
        if ms and op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
            done = _skip(edit, node, consumed, simplified=op.startswith("SkipSimplified"))
        elif op == "SimplifiedLayerNormalization" and (ms or standard):
            done = _layer_norm(edit, node, consumed, simplified=True)
        elif op == "LayerNormalization" and standard and edit.opset < 17:
            done = _layer_norm(edit, node, consumed, simplified=False)
        elif ms and op == "EmbedLayerNormalization":
            done = _embed(edit, node, consumed)
        else:
            continue
        if done:
            edit.replace(node)
        else:
            edit.discard()
    return edit.apply()
