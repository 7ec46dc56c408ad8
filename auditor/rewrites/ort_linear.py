"""ONNX Runtime's fused linear ops (``com.microsoft``) as the standard op plus what it fused.

- ``FusedMatMul`` / ``TransposeMatMul``: ``alpha · op(A) @ op(B)``, where ``transBatch``
  moves the leading axis behind the other batch axes and ``trans`` swaps the last two;
- ``FusedGemm``: ``Gemm`` then its activation (``activation_alpha/beta`` its parameters);
- ``FusedConv``: ``activation(Conv(X, W, B) + Z)`` (``activation_params`` its parameters).

ONNX Runtime writes these when a model is saved after its level-2 graph optimisations.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import onnx

from . import register
from ._edit import Attributes, Edit, attributes, differentiated

__all__ = ["rewrite_ort_linear", "activation"]

MS = "com.microsoft"


def activation(edit: Edit, kind: str, params: Sequence[float], x: str, out: str) -> bool:
    """Append ``kind`` (an MLAS fused activation) applied to ``x``; False if it is not one."""
    if kind in ("", "Identity"):
        edit.op("Identity", [x], out=out)
    elif kind in ("Relu", "Tanh", "Sigmoid"):
        edit.op(kind, [x], out=out)
    elif kind == "LeakyRelu":
        edit.op("LeakyRelu", [x], out=out, alpha=float(params[0]) if params else 0.01)
    elif kind == "HardSigmoid":
        alpha, beta = (list(params) + [0.2, 0.5][len(params):])[:2]
        edit.op("HardSigmoid", [x], out=out, alpha=float(alpha), beta=float(beta))
    elif kind == "Clip" and len(params) == 2:
        edit.op("Clip", [x, edit.scalar(params[0], x, "min"), edit.scalar(params[1], x, "max")], out=out)
    else:
        return False
    return True


def _matmul_operand(edit: Edit, name: str, batch: bool, swap: bool) -> str | None:
    if not batch and not swap:
        return name
    rank = edit.rank(name)
    if rank is None or rank < 2 or (batch and rank < 3):
        return None
    perm = list(range(rank))
    if batch:  # [b0, b1.., M, K] -> [b1.., b0, M, K]... ONNX Runtime: the leading axis goes behind the batch axes
        perm = list(range(1, rank - 1)) + [0, rank - 1]
    if swap:
        perm[-2], perm[-1] = perm[-1], perm[-2]
    return edit.op("Transpose", [name], perm=perm, hint="operand")


def _fused_matmul(edit: Edit, node: onnx.NodeProto, attrs: Attributes) -> bool:
    a = _matmul_operand(edit, node.input[0], bool(attrs.get_int("transBatchA", 0)), bool(attrs.get_int("transA", 0)))
    b = _matmul_operand(edit, node.input[1], bool(attrs.get_int("transBatchB", 0)), bool(attrs.get_int("transB", 0)))
    if a is None or b is None:
        return False
    alpha = attrs.get_float("alpha", 1.0)
    if alpha == 1.0:
        edit.op("MatMul", [a, b], out=node.output[0])
    else:
        product = edit.op("MatMul", [a, b], hint="product")
        edit.op("Mul", [product, edit.scalar(alpha, node.input[0], "alpha")], out=node.output[0])
    return True


def _fused_gemm(edit: Edit, node: onnx.NodeProto, attrs: Attributes) -> bool:
    params = [attrs.get_float(k, 0.0) for k in ("activation_alpha", "activation_beta") if k in attrs]
    linear = edit.op("Gemm", list(node.input), hint="gemm", attrs=attrs.only("alpha", "beta", "transA", "transB"))
    return activation(edit, attrs.get_str("activation", ""), params, linear, node.output[0])


def _fused_conv(edit: Edit, node: onnx.NodeProto, attrs: Attributes) -> bool:
    conv = attrs.only("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
    params = attrs.get_floats("activation_params", [])
    ins = list(node.input)
    operands = ins[:3]
    while not operands[-1]:  # no bias, but a Z to add
        operands.pop()
    linear = edit.op("Conv", operands, hint="conv", attrs=conv)
    if len(ins) > 3 and ins[3]:
        linear = edit.op("Add", [linear, ins[3]], hint="summed")
    return activation(edit, attrs.get_str("activation", ""), params, linear, node.output[0])


_RULES = {"FusedMatMul": _fused_matmul, "TransposeMatMul": _fused_matmul, "FusedGemm": _fused_gemm,
          "FusedConv": _fused_conv}


@register("ort-fused-linear", "ONNX Runtime FusedMatMul, FusedGemm, FusedConv -> MatMul/Gemm/Conv and activation")
def rewrite_ort_linear(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every fused ONNX Runtime linear op between θ and the loss; return the count."""
    edit = Edit(model, "auditor_linear")
    path = differentiated(model, params)
    for node in edit.nodes:
        rule = _RULES.get(node.op_type) if node.domain == MS else None
        if rule is None or not any(i in path for i in node.input):
            continue
        if rule(edit, node, attributes(node)):
            edit.replace(node)
        else:
            edit.discard()
    return edit.apply()
