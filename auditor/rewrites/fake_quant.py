"""Straight-through gradients for activation ``QuantizeLinear → DequantizeLinear`` pairs (int8 models).

onnx-ad gives ``QuantizeLinear`` a zero derivative (``onnx_ad.rules.ZERO_DERIVATIVE``), which is
the true derivative of rounding almost everywhere: through a quantised activation no gradient
would reach any earlier weight. Quantisation-aware training uses the straight-through
estimator instead (PyTorch's ``FakeQuantize``): rounding counts as the identity, clipping to
the integer range keeps its derivative. This rewrite gives onnx-ad that rule with standard
ops, and keeps the forward values bit for bit::

    t     = clip(float64(x / s) + z, qmin, qmax)               x / s in float32, the rest exact in float64
    r     = float32(t + M) − M                                 M = 1.5·2²³: float32 rounds to integers there
    y_ste = (r − z) · s                                        (DequantizeLinear's own formula)
    y     = y_ste where y_ste == DQ(Q(x)) else DQ(Q(x))

onnx-ad carries a derivative unchanged through a float-to-float Cast (its rule for Cast), so
rounding counts as the identity while the clip keeps its own derivative: ``∂y/∂x = 1`` where
``qmin < x/s + z < qmax`` and 0 where the activation saturates. A pair whose range starts at 0
is how onnxruntime's quantizer writes a ReLU it removed, and this gives the ReLU's derivative
back. (PyTorch's ``FakeQuantize`` passes the gradient wherever the *rounded* value is in range,
half a step further.) ``float32(t + M)`` rounds half to even, and the division is onnxruntime's
own (float32, then clip, round, add the zero point: MLAS's ``MlasQuantizeLinear``), so ``y_ste``
is the exported pair's value bit for bit; the ``where`` only guards a runtime that divides
differently (it then keeps the exported value, with no gradient at that element).

Scales and zero points computed at run time (dynamic quantisation) are held fixed like
calibrated ones (no derivative through them); their range covers the batch by construction,
so the batch's extreme values, which sit on the range's ends, are not clipped and nothing
masks the gradient: the identity.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import UnsupportedNodeError

from . import register

__all__ = ["straight_through_fake_quant"]

_MAGIC = 1.5 * 2.0**23  # float32 has spacing 1 on [2^23, 2^24)
_RANGES: dict[int, tuple[int, int]] = {
    TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127), TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767), TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7)}


def _types_and_ranks(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    types: dict[str, int] = {}
    ranks: dict[str, int] = {}
    g = model.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        t = v.type.tensor_type
        if t.elem_type:
            types[v.name] = t.elem_type
        if t.HasField("shape"):
            ranks[v.name] = len(t.shape.dim)
    for init in g.initializer:
        types[init.name] = init.data_type
        ranks[init.name] = len(init.dims)
    for node in g.node:  # Constant nodes (the canonical graph has none, a raw one may)
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
                ranks[node.output[0]] = len(value.dims)
    return types, ranks


def _same_constant(model: onnx.ModelProto, a: str, b: str) -> bool:
    if a == b:
        return True
    inits = {t.name: t for t in model.graph.initializer}
    if a in inits and b in inits:
        return bool(np.array_equal(numpy_helper.to_array(inits[a]), numpy_helper.to_array(inits[b])))
    return not a and not b


class _Builder:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes: list[onnx.NodeProto] = []
        self.taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
        self.taken |= {v.name for v in model.graph.input}

    def name(self, stem: str) -> str:
        name, k = stem, 1
        while name in self.taken:
            name, k = f"{stem}_{k}", k + 1
        self.taken.add(name)
        return name

    def const(self, value: np.ndarray, stem: str) -> str:
        name = self.name(stem)
        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str, out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(stem)
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _broadcastable(b: _Builder, name: str, axis: int | None, rank: int | None, stem: str) -> str:
    """A per-axis scale or zero point reshaped to broadcast against the activation."""
    if axis is None:
        return name
    # a negative axis counts from the back: broadcasting aligns trailing axes, so no rank is needed
    shape = [-1] + [1] * (-axis - 1) if axis < 0 else [-1 if a == axis else 1 for a in range(rank or 0)]
    return b.op("Reshape", [name, b.const(np.array(shape, dtype=np.int64), f"{stem}/shape")], f"{stem}/broadcast")


def _constant_copy(b: _Builder, name: str, stem: str) -> str:
    """The same positive float32 values with no derivative (a scale computed at run time, held fixed).

    Through an int64 Cast (onnx-ad carries nothing through an integer): ``s · P`` is an integer
    below 2⁶³ for ``P = 2⁶²`` when ``2⁻³⁹ ≤ s < 1`` and ``P = 2⁴⁰`` when ``1 ≤ s < 2²³``, so the
    round trip is exact over every scale an activation has.
    """
    big = b.op("GreaterOrEqual", [name, b.const(np.array(1.0, np.float32), f"{stem}/one")], f"{stem}/large")
    factor = b.op("Where", [big, b.const(np.array(2.0**40, np.float32), f"{stem}/p40"),
                            b.const(np.array(2.0**62, np.float32), f"{stem}/p62")], f"{stem}/factor")
    integer = b.op("Cast", [b.op("Mul", [name, factor], f"{stem}/scaled")], f"{stem}/integer", to=TensorProto.INT64)
    return b.op("Div", [b.op("Cast", [integer], f"{stem}/back", to=TensorProto.FLOAT), factor], stem)


def _pair(b: _Builder, quant: onnx.NodeProto, dq: onnx.NodeProto, zero_type: int, axis: int | None,
          rank: int | None) -> None:
    """Replace ``dq`` (reading ``quant``) by the straight-through subgraph; ``dq`` keeps computing the exact value."""
    x, scale = quant.input[0], quant.input[1]
    zero = quant.input[2] if len(quant.input) > 2 else ""
    qmin, qmax = _RANGES[zero_type]
    stem = f"{dq.output[0]}/auditor_ste"
    dynamic = not any(t.name == scale for t in b.model.graph.initializer)
    if dynamic:
        scale = _constant_copy(b, scale, f"{stem}/scale_held")
    s = _broadcastable(b, scale, axis, rank, f"{stem}/scale")
    # x / s in float32, as onnxruntime's QuantizeLinear divides (MLAS); the rest in float64, exactly
    t = b.op("Cast", [b.op("Div", [x, s], f"{stem}/ratio")], f"{stem}/ratio64", to=TensorProto.DOUBLE)
    z32 = ""
    if zero:
        z = _broadcastable(b, zero, axis, rank, f"{stem}/zero")
        t = b.op("Add", [t, b.op("Cast", [z], f"{stem}/zero64", to=TensorProto.DOUBLE)], f"{stem}/shifted")
        z32 = b.op("Cast", [z], f"{stem}/zero32", to=TensorProto.FLOAT)
    if not dynamic:  # a range computed from the batch covers it: nothing is clipped
        bounds = [b.const(np.array(v, dtype=np.float64), f"{stem}/{k}") for k, v in (("qmin", qmin), ("qmax", qmax))]
        t = b.op("Clip", [t, *bounds], f"{stem}/clipped")
    magic64 = b.const(np.array(_MAGIC, dtype=np.float64), f"{stem}/magic64")
    magic32 = b.const(np.array(_MAGIC, dtype=np.float32), f"{stem}/magic32")
    lifted = b.op("Cast", [b.op("Add", [t, magic64], f"{stem}/lifted64")], f"{stem}/rounded32", to=TensorProto.FLOAT)
    level = b.op("Sub", [lifted, magic32], f"{stem}/level")
    if z32:
        level = b.op("Sub", [level, z32], f"{stem}/centred")
    y_ste = b.op("Mul", [level, s], f"{stem}/value")
    exact = b.name(f"{dq.output[0]}/auditor_exact")
    out = dq.output[0]
    dq.output[0] = exact
    same = b.op("Equal", [y_ste, exact], f"{stem}/agrees")
    b.op("Where", [same, y_ste, exact], stem, out=out)


@register("fake-quant", "activation QuantizeLinear -> DequantizeLinear pairs -> straight-through fake quantisation "
                        "(same values; gradient 1 inside the integer range, 0 where clipped)")
def straight_through_fake_quant(model: onnx.ModelProto, params: Set[str]) -> int:
    """Give every activation Q→DQ pair between θ and the loss a straight-through derivative; return the count."""
    pairs = _pairs(model, params)
    if not pairs:
        return 0
    b = _Builder(model)
    after: dict[int, list[onnx.NodeProto]] = {}
    for index, quant, dq, zero_type, axis, rank in pairs:
        start = len(b.nodes)
        _pair(b, quant, dq, zero_type, axis, rank)
        after[index] = b.nodes[start:]
    nodes = []
    for index, node in enumerate(model.graph.node):
        nodes.append(node)
        nodes.extend(after.get(index, []))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(pairs)


_Pair = tuple[int, onnx.NodeProto, onnx.NodeProto, int, int | None, int | None]


def _pairs(model: onnx.ModelProto, params: Set[str]) -> list[_Pair]:
    """(index of the DequantizeLinear, QuantizeLinear, DequantizeLinear, zero-point type, axis, rank) per pair."""
    depends = set(params)
    producers: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for o in node.output:
            producers[o] = node
        if any(i in depends for i in node.input):
            depends.update(node.output)
    types, ranks = _types_and_ranks(model)
    pairs: list[_Pair] = []
    for index, dq in enumerate(model.graph.node):
        quant = producers.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if quant is None or quant.op_type != "QuantizeLinear" or quant.input[0] not in depends:
            continue
        if dq.domain not in ("", "ai.onnx") or quant.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in quant.attribute}
        dq_zero = dq.input[2] if len(dq.input) > 2 else ""
        q_zero = quant.input[2] if len(quant.input) > 2 else ""
        if not (_same_constant(model, quant.input[1], dq.input[1]) and _same_constant(model, q_zero, dq_zero)):
            raise UnsupportedNodeError(
                f"QuantizeLinear {quant.name or quant.output[0]!r} and DequantizeLinear {dq.name or dq.output[0]!r} "
                "use different scales or zero points; the auditor differentiates an activation's quantisation "
                "only where the pair shares them, as onnxruntime's quantizer writes it")
        zero_type = types.get(q_zero, TensorProto.UINT8) if q_zero else int(attrs.get("output_dtype", 0) or 2)
        if zero_type not in _RANGES or attrs.get("block_size", 0):
            raise UnsupportedNodeError(
                f"QuantizeLinear {quant.name or quant.output[0]!r} quantises to "
                f"{TensorProto.DataType.Name(zero_type)}{' in blocks' if attrs.get('block_size', 0) else ''}; the "
                "auditor differentiates integer activations with one scale per tensor or per channel")
        per_axis = ranks.get(quant.input[1], 0) > 0 and _size(model, quant.input[1]) != 1
        axis = int(attrs.get("axis", 1)) if per_axis else None
        rank = ranks.get(quant.input[0])
        if axis is not None and axis >= 0 and rank is None:
            continue  # rank unknown (early check without static shapes): the gradient graph knows it
        pairs.append((index, quant, dq, zero_type, axis, rank))
    return pairs


def _size(model: onnx.ModelProto, name: str) -> int:
    for t in model.graph.initializer:
        if t.name == name:
            return int(np.prod(t.dims, dtype=np.int64))
    return 1
