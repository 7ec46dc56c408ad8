"""``LRN`` (local response normalisation, AlexNet and GoogLeNet era) as squares, a channel-window sum and ``Pow``.

ONNX Runtime computes, over the channel axis (axis 1)::

    square_sum[n, c] = Σ x[n, i]²  for i in [c - floor((size-1)/2), c + ceil((size-1)/2)] ∩ [0, C)
    y = x · (bias + alpha / size · square_sum) ^ (-beta)

The window sum is the channel-padded squares, ``size`` shifted step-1 windows of ``C``
channels, summed. onnx-ad has no reverse rule of its own for LRN.
"""

from __future__ import annotations

from collections.abc import Set

import onnx

from . import register
from ._edit import Edit, attributes, differentiated

__all__ = ["rewrite_lrn"]


def _lrn(edit: Edit, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    x = node.input[0]
    size = attrs.get_int("size", 1)
    alpha, beta, bias = attrs.get_float("alpha", 1e-4), attrs.get_float("beta", 0.75), attrs.get_float("bias", 1.0)
    dims = edit.shape(x)
    rank = len(dims) if dims is not None else 4  # ONNX Runtime runs LRN on 4-D inputs
    channels = dims[1] if dims is not None and dims[1] > 0 else None
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    square = edit.op("Mul", [x, x], hint="square")
    pads = [0] * (2 * rank)
    pads[1], pads[rank + 1] = before, after
    padded = edit.op("Pad", [square, edit.ints(pads, "pads")], mode="constant", hint="padded") if size > 1 else square
    windows = []
    for i in range(size):
        # window i covers padded channels [i, i + C): a negative end counts from the back
        end = i + channels if channels is not None else i - (size - 1) if i < size - 1 else 2**62
        windows.append(edit.op("Slice", [padded, edit.ints([i]), edit.ints([end]), edit.ints([1])], hint="window")
                       if size > 1 else padded)
    total = edit.op("Sum", windows, hint="square_sum") if size > 1 else windows[0]
    scaled = edit.op("Mul", [total, edit.scalar(alpha / size, x, "alpha_over_size")], hint="scaled")
    base = edit.op("Add", [scaled, edit.scalar(bias, x, "bias")], hint="base")
    factor = edit.op("Pow", [base, edit.scalar(-beta, x, "minus_beta")], hint="factor")
    edit.op("Mul", [x, factor], out=node.output[0])


@register("lrn", "LRN -> squares, a channel-window sum (Pad, Slice, Sum) and Pow")
def rewrite_lrn(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every LRN between θ and the loss; return the count."""
    edit = Edit(model, "auditor_lrn")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.op_type == "LRN" and node.domain in ("", "ai.onnx") and node.input[0] in path:
            _lrn(edit, node)
            edit.replace(node)
    return edit.apply()
