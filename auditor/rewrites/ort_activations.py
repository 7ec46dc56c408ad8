"""ONNX Runtime's fused activations (``com.microsoft``) as the standard elementwise ops they fuse.

Written by ``onnxruntime.transformers.optimizer`` and by optimum with optimisation on, with
the formulas of ONNX Runtime's contrib-op documentation:

- ``Gelu(x) = 0.5·x·(1 + erf(x/√2))``; ``BiasGelu(a, b) = Gelu(a + b)``;
- ``FastGelu(x[, bias]) = 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))`` of ``x + bias``;
- ``QuickGelu(x; alpha=1.702) = x·sigmoid(alpha·x)``;
- ``BiasAdd(x, bias, skip) = x + bias + skip``.
"""

from __future__ import annotations

import math
from collections.abc import Set

import onnx

from . import register
from ._edit import Edit, attributes, differentiated

__all__ = ["rewrite_ort_activations"]

MS = "com.microsoft"


def _gelu(edit: Edit, x: str, out: str) -> None:
    scaled = edit.op("Mul", [x, edit.scalar(1 / math.sqrt(2.0), x, "inv_sqrt2")], hint="scaled")
    error = edit.op("Erf", [scaled], hint="erf")
    shifted = edit.op("Add", [error, edit.scalar(1.0, x, "one")], hint="shifted")
    half = edit.op("Mul", [x, edit.scalar(0.5, x, "half")], hint="half_x")
    edit.op("Mul", [half, shifted], out=out)


def _fast_gelu(edit: Edit, x: str, out: str) -> None:
    a = math.sqrt(2 / math.pi)
    square = edit.op("Mul", [x, x], hint="square")
    cubic = edit.op("Mul", [square, edit.scalar(0.044715 * a, x, "beta")], hint="cubic")
    slope = edit.op("Add", [cubic, edit.scalar(a, x, "alpha")], hint="slope")
    inner = edit.op("Mul", [x, slope], hint="inner")
    tanh = edit.op("Tanh", [inner], hint="tanh")
    shifted = edit.op("Add", [tanh, edit.scalar(1.0, x, "one")], hint="shifted")
    half = edit.op("Mul", [x, edit.scalar(0.5, x, "half")], hint="half_x")
    edit.op("Mul", [half, shifted], out=out)


def _rewrite(edit: Edit, node: onnx.NodeProto) -> bool:
    op, ins, y = node.op_type, list(node.input), node.output[0]
    if op == "Gelu":
        _gelu(edit, ins[0], y)
    elif op == "BiasGelu":
        _gelu(edit, edit.op("Add", ins[:2], hint="biased"), y)
    elif op == "FastGelu":
        x = edit.op("Add", ins[:2], hint="biased") if len(ins) > 1 and ins[1] else ins[0]
        _fast_gelu(edit, x, y)
    elif op == "QuickGelu":
        alpha = attributes(node).get_float("alpha", 1.702)
        scaled = edit.op("Mul", [ins[0], edit.scalar(alpha, ins[0], "alpha")], hint="scaled")
        edit.op("Mul", [ins[0], edit.op("Sigmoid", [scaled], hint="gate")], out=y)
    elif op == "BiasAdd":
        edit.op("Add", [edit.op("Add", ins[:2], hint="biased"), ins[2]], out=y)
    else:
        return False
    return True


@register("ort-fused-activations", "ONNX Runtime Gelu, BiasGelu, FastGelu, QuickGelu, BiasAdd -> standard ops")
def rewrite_ort_activations(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every fused ONNX Runtime activation between θ and the loss; return the count."""
    edit = Edit(model, "auditor_act")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.domain != MS or not any(i in path for i in node.input):
            continue
        if _rewrite(edit, node):
            edit.replace(node)
        else:
            edit.discard()
    return edit.apply()
