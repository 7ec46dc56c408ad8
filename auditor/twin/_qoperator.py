"""QOperator and dynamic quantisation -> QDQ form: integer kernels as DequantizeLinear, float op, QuantizeLinear.

A QOperator node computes on integers what its float op computes on the dequantised
inputs, then quantises the result: ``QLinearConv(x, w) = Q(Conv(DQ(x), DQ(w), DQ(b)))``, the
int32 bias dequantised with scale ``x_scale · w_scale``. Written that way the weights become
constant DequantizeLinears (folded to float θ later) and the activations
QuantizeLinear → DequantizeLinear pairs, the form every later step understands. The float
op rounds differently from ONNX Runtime's integer kernel (which requantises with a fixed-
point multiplier), so an output may differ by one quantisation step.

``onnxruntime.quantization.quantize_dynamic`` writes ``DynamicQuantizeLinear`` (scale and
zero point computed from each batch) and ``MatMulInteger``/``ConvInteger`` followed by a
Cast and a Mul by ``x_scale · w_scale``: that becomes the same fake quantisation of the
activation with the batch's scale, times the dequantised float weight. Integer ops outside
these (fused attention, per-row scales, ...) are refused in one line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from auditor.errors import ModelError

from ._edit import GraphEdit, attributes, is_standard

__all__ = ["expand_integer_ops", "is_integer_op", "SUPPORTED_QOPERATOR_OPS"]

_MS = "com.microsoft"
# com.microsoft ops that are DQ(inputs) -> float op -> Q(output): (float op, input triples, output pair).
_ELEMENTWISE: dict[str, tuple[str, list[tuple[int, int, int]], tuple[int, int]]] = {
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearMul": ("Mul", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearSigmoid": ("Sigmoid", [(0, 1, 2)], (3, 4)),
    "QLinearLeakyRelu": ("LeakyRelu", [(0, 1, 2)], (3, 4)),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [(0, 1, 2)], (3, 4)),
    "QLinearAveragePool": ("AveragePool", [(0, 1, 2)], (3, 4)),
}
SUPPORTED_QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearConcat", *_ELEMENTWISE)
_STANDARD_INTEGER = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}


def is_integer_op(node: onnx.NodeProto) -> bool:
    """Whether ``node`` computes on quantised integers (a QOperator, dynamic or contrib quantised op)."""
    if is_standard(node):
        return node.op_type in _STANDARD_INTEGER
    return node.domain == _MS and (node.op_type.startswith(("QLinear", "QOrdered", "QGemm", "QAttention",
                                                            "QEmbed", "QMoE"))
                                   or "Integer" in node.op_type or "Quantize" in node.op_type
                                   or node.op_type in ("MatMulNBits", "MatMulBnb4", "GatherBlockQuantized"))


def _refuse(node: onnx.NodeProto, why: str = "") -> ModelError:
    domain = f"{node.domain}." if node.domain else ""
    return ModelError(
        f"node {node.name or node.output[0]!r} ({domain}{node.op_type}) is a quantised operator the auditor cannot "
        f"turn into float form{why}; it reads QDQ models (QuantizeLinear/DequantizeLinear), the QOperator ops "
        f"{', '.join(SUPPORTED_QOPERATOR_OPS)} and quantize_dynamic's MatMulInteger/ConvInteger. Quantise in QDQ "
        "format instead: onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)")


class _Expander:
    """Builds the float form of one graph's integer nodes."""

    def __init__(self, edit: GraphEdit) -> None:
        self.edit = edit
        self.producers = edit.producers()
        self.consumers = edit.consumers()
        self.dead: set[int] = set()  # ids of nodes a pattern took over (the Cast and Mul after MatMulInteger)

    def const(self, name: str) -> np.ndarray | None:
        return self.edit.constant(name, self.producers)

    def dq(self, node: onnx.NodeProto, x: str, scale: str, zero: str, axis: int | None = None) -> tuple[
            onnx.NodeProto, str]:
        out = self.edit.fresh(f"{x}_dequantized")
        attrs: dict[str, Any] = {} if axis is None else {"axis": axis}
        inputs = [x, scale] + ([zero] if zero else [])
        return GraphEdit.node("DequantizeLinear", inputs, [out], name=f"{node.name or node.op_type}/dq_{x}",
                              **attrs), out

    def q(self, node: onnx.NodeProto, y: str, scale: str, zero: str, out: str) -> onnx.NodeProto:
        inputs = [y, scale] + ([zero] if zero else [])
        return GraphEdit.node("QuantizeLinear", inputs, [out], name=f"{node.name or node.op_type}/q")

    def float_out(self, node: onnx.NodeProto) -> str:
        return self.edit.fresh(f"{node.output[0]}_float")

    def weight_axis(self, node: onnx.NodeProto, scale: str, axis: int) -> int | None:
        value = self.const(scale)
        if value is None:
            raise _refuse(node, f" (its weight scale {scale!r} is not a constant)")
        return None if value.size == 1 else axis

    def bias_scale(self, node: onnx.NodeProto, x_scale: str, w_scale: str) -> str:
        xs, ws = self.const(x_scale), self.const(w_scale)
        if xs is None or ws is None:
            raise _refuse(node, " (its bias scale is not constant)")
        product = (xs.astype(np.float32) * ws.astype(np.float32)).astype(np.float32).reshape(-1)
        return self.edit.add_initializer(product, self.edit.fresh(f"{node.name or node.output[0]}_bias_scale"))

    def input_triple(self, node: onnx.NodeProto, x: str, scale: str, zero: str) -> tuple[onnx.NodeProto, str]:
        value = self.const(scale)
        if value is not None and value.size > 1:
            raise _refuse(node, f" (input {x!r} has per-row scales)")
        return self.dq(node, x, scale, zero)


def _arg(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _qlinear_conv(ex: _Expander, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    x, xs, xz, w, ws, wz, ys, yz = (_arg(node, i) for i in range(8))
    dx, xf = ex.input_triple(node, x, xs, xz)
    dw, wf = ex.dq(node, w, ws, wz, ex.weight_axis(node, ws, 0))
    nodes, inputs = [dx, dw], [xf, wf]
    if _arg(node, 8):
        scale = ex.bias_scale(node, xs, ws)
        db, bf = ex.dq(node, _arg(node, 8), scale, "", 0 if ex.const(scale).size > 1 else None)  # type: ignore[union-attr]
        nodes.append(db)
        inputs.append(bf)
    yf = ex.float_out(node)
    nodes.append(GraphEdit.node("Conv", inputs, [yf], name=f"{node.name or 'QLinearConv'}/float", **attributes(node)))
    nodes.append(ex.q(node, yf, ys, yz, node.output[0]))
    return nodes


def _qlinear_matmul(ex: _Expander, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    a, a_s, a_z, b, b_s, b_z, ys, yz = (_arg(node, i) for i in range(8))
    da, af = ex.input_triple(node, a, a_s, a_z)
    weight = ex.const(b)
    db, bf = ex.dq(node, b, b_s, b_z, ex.weight_axis(node, b_s, (weight.ndim if weight is not None else 2) - 1))
    yf = ex.float_out(node)
    return [da, db, GraphEdit.node("MatMul", [af, bf], [yf], name=f"{node.name or 'QLinearMatMul'}/float"),
            ex.q(node, yf, ys, yz, node.output[0])]


def _qgemm(ex: _Expander, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    a, a_s, a_z, b, b_s, b_z, c, ys, yz = (_arg(node, i) for i in range(9))
    attrs = attributes(node)
    da, af = ex.input_triple(node, a, a_s, a_z)
    db, bf = ex.dq(node, b, b_s, b_z, ex.weight_axis(node, b_s, 0 if attrs.get("transB", 0) else 1))
    nodes, inputs = [da, db], [af, bf]
    if c:
        scale = ex.bias_scale(node, a_s, b_s)
        dc, cf = ex.dq(node, c, scale, "", 0 if ex.const(scale).size > 1 else None)  # type: ignore[union-attr]
        nodes.append(dc)
        inputs.append(cf)
    gemm = {k: attrs[k] for k in ("alpha", "transA", "transB") if k in attrs}
    yf = ex.float_out(node) if ys else node.output[0]
    nodes.append(GraphEdit.node("Gemm", inputs, [yf], name=f"{node.name or 'QGemm'}/float", beta=1.0, **gemm))
    if ys:
        nodes.append(ex.q(node, yf, ys, yz, node.output[0]))
    return nodes


def _elementwise(ex: _Expander, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    op, triples, (ys, yz) = _ELEMENTWISE[node.op_type]
    attrs = attributes(node)
    if attrs.pop("channels_last", 0):
        raise _refuse(node, " (channels_last=1)")
    nodes, inputs = [], []
    for i, s, z in triples:
        d, f = ex.input_triple(node, _arg(node, i), _arg(node, s), _arg(node, z))
        nodes.append(d)
        inputs.append(f)
    yf = ex.float_out(node)
    nodes.append(GraphEdit.node(op, inputs, [yf], name=f"{node.name or node.op_type}/float", **attrs))
    nodes.append(ex.q(node, yf, _arg(node, ys), _arg(node, yz), node.output[0]))
    return nodes


def _qlinear_concat(ex: _Expander, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    nodes, inputs = [], []
    for k in range(2, len(node.input), 3):
        d, f = ex.input_triple(node, node.input[k], node.input[k + 1], _arg(node, k + 2))
        nodes.append(d)
        inputs.append(f)
    yf = ex.float_out(node)
    nodes.append(GraphEdit.node("Concat", inputs, [yf], name=f"{node.name or 'QLinearConcat'}/float",
                                axis=attributes(node)["axis"]))
    nodes.append(ex.q(node, yf, node.input[0], node.input[1], node.output[0]))
    return nodes


def _dynamic_quantize(ex: _Expander, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """DynamicQuantizeLinear as onnxruntime computes it (uint8; the range widened to include 0)."""
    e = ex.edit
    x = node.input[0]
    q, scale, zero = (node.output[i] if len(node.output) > i and node.output[i] else e.fresh(f"{x}_dq{i}")
                      for i in range(3))
    stem = node.name or f"{x}_dynamic"
    t = {k: e.fresh(f"{stem}/{k}") for k in ("min", "max", "lo", "hi", "range", "empty", "ratio", "neg", "zp")}
    zero_f = e.scalar(0.0, np.float32, "auditor_zero")
    two_five_five = e.scalar(255.0, np.float32, "auditor_255")
    one = e.scalar(1.0, np.float32, "auditor_one")
    n = GraphEdit.node
    return [
        n("ReduceMin", [x], [t["min"]], keepdims=0), n("ReduceMax", [x], [t["max"]], keepdims=0),
        n("Min", [t["min"], zero_f], [t["lo"]]), n("Max", [t["max"], zero_f], [t["hi"]]),
        n("Sub", [t["hi"], t["lo"]], [t["range"]]), n("Equal", [t["range"], zero_f], [t["empty"]]),
        n("Div", [t["range"], two_five_five], [t["ratio"]]),
        n("Where", [t["empty"], one, t["ratio"]], [scale]),
        n("Div", [t["lo"], scale], [t["neg"]]), n("Neg", [t["neg"]], [t["zp"] + "_raw"]),
        n("Clip", [t["zp"] + "_raw", zero_f, two_five_five], [t["zp"] + "_clipped"]),
        n("Round", [t["zp"] + "_clipped"], [t["zp"]]),
        n("Cast", [t["zp"]], [zero], to=TensorProto.UINT8),
        n("QuantizeLinear", [x, scale, zero], [q], name=f"{stem}/quantize"),
    ]


def _integer_product(ex: _Expander, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """quantize_dynamic's MatMulInteger/ConvInteger -> Cast -> Mul(x_scale · w_scale) as DQ(x) op DQ(w)."""
    a, b, a_z, b_z = (_arg(node, i) for i in range(4))
    readers = ex.consumers.get(node.output[0], [])
    cast = readers[0] if len(readers) == 1 and readers[0].op_type == "Cast" else None
    after = ex.consumers.get(cast.output[0], []) if cast is not None else []
    mul = after[0] if len(after) == 1 and after[0].op_type == "Mul" else None
    source = ex.producers.get(a)
    a_scale = (source.output[1] if source is not None and source.op_type == "DynamicQuantizeLinear"
               else source.input[1] if source is not None and source.op_type == "QuantizeLinear" else None)
    if cast is None or mul is None or a_scale is None or attributes(cast).get("to") != TensorProto.FLOAT:
        raise _refuse(node, " (it is not followed by the Cast and scale Mul onnxruntime's quantize_dynamic writes)")
    factor = ex.producers.get(mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0])
    w_scale = None
    if factor is not None and factor.op_type == "Mul" and a_scale in factor.input:
        w_scale = factor.input[1] if factor.input[0] == a_scale else factor.input[0]
    if w_scale is None or ex.const(w_scale) is None or ex.const(b) is None:
        raise _refuse(node, " (its weight or weight scale is not a constant)")
    weight = ex.const(b)
    conv = node.op_type == "ConvInteger"
    da, af = ex.dq(node, a, a_scale, a_z)
    db, bf = ex.dq(node, b, w_scale, b_z, ex.weight_axis(node, w_scale, 0 if conv else weight.ndim - 1))  # type: ignore[union-attr]
    op = GraphEdit.node("Conv" if conv else "MatMul", [af, bf], [mul.output[0]],
                        name=f"{node.name or node.op_type}/float", **(attributes(node) if conv else {}))
    ex.dead.update({id(cast), id(mul)})
    return [da, db, op]


_HANDLERS: dict[tuple[str, str], Callable[[_Expander, onnx.NodeProto], list[onnx.NodeProto]]] = {
    ("", "QLinearConv"): _qlinear_conv,
    ("", "QLinearMatMul"): _qlinear_matmul,
    ("", "MatMulInteger"): _integer_product,
    ("", "ConvInteger"): _integer_product,
    (_MS, "QGemm"): _qgemm,
    (_MS, "QLinearConcat"): _qlinear_concat,
    **{(_MS, op): _elementwise for op in _ELEMENTWISE},
}


def _contrib_quantize(node: onnx.NodeProto, edit: GraphEdit) -> onnx.NodeProto | None:
    """com.microsoft Quantize/DequantizeLinear (onnxruntime's QDQ contrib ops) as the standard op, where it exists."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        return None
    zero = _arg(node, 2)
    eight_bit = (TensorProto.INT8, TensorProto.UINT8)
    if edit.opset < 21 and (not zero or edit.elem_type(zero) not in eight_bit):
        return None  # 16-bit and 4-bit types need opset 21's standard ops
    out = onnx.NodeProto()
    out.CopyFrom(node)
    out.domain = ""
    return out


def expand_integer_ops(edit: GraphEdit) -> Counter[str]:
    """Rewrite every integer op of ``edit`` into QDQ form (in place); return the op types rewritten.

    Raises
    ------
    ModelError
        An integer op without a float form here (one line, naming the op and the supported formats).
    """
    done: Counter[str] = Counter()
    # DynamicQuantizeLinear first: the MatMulInteger pattern then finds a QuantizeLinear or its outputs.
    for pass_ops in ({("", "DynamicQuantizeLinear")}, None):
        ex = _Expander(edit)
        nodes: list[onnx.NodeProto] = []
        for node in edit.nodes:
            key = ("" if is_standard(node) else node.domain, node.op_type)
            if pass_ops is not None:
                nodes.extend(_dynamic_quantize(ex, node) if key in pass_ops else [node])
                done[node.op_type] += key in pass_ops
                continue
            handler = _HANDLERS.get(key)
            if handler is not None:
                nodes.extend(handler(ex, node))
                done[node.op_type] += 1
            elif node.domain == _MS and (standard := _contrib_quantize(node, edit)) is not None:
                nodes.append(standard)
                done[f"{_MS}.{node.op_type}"] += 1
            elif is_integer_op(node):
                raise _refuse(node)
            else:
                nodes.append(node)
        edit.nodes = [n for n in nodes if id(n) not in ex.dead]
    return +done
