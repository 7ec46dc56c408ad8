"""``Conv`` padding that onnx-ad's input gradient gets wrong, as an explicit ``Pad`` (and crop) before an unpadded Conv.

onnx-ad forms a Conv's input gradient as a ``ConvTranspose`` given the input's size as
``output_shape``. ONNX then ignores the ``pads`` attribute and derives the padding itself
from ``total = stride·(n_out - 1) + (k - 1)·dilation + 1 - n_in`` (rows no window reads make it
smaller), and ONNX Runtime starts it with ``total - total//2`` (0 when ``total`` is negative).
Whenever the Conv's own leading padding differs from that (TensorFlow's SAME padding
``[0, 1]``, other asymmetric pads, or unread trailing rows with a leading pad), the gradient
lands on the wrong pixels. Against PyTorch autograd, that rule picked out exactly the 133 wrong
input gradients among 432 small (kernel, stride, dilation, size, pads) combinations. Padding
explicitly, cropping the rows no window reads and convolving without padding gives
``total = 0``, which both agree on. Also resolves ``auto_pad`` (SAME_UPPER/SAME_LOWER),
which onnx-ad refuses. Needs the input's static shape.
"""

from __future__ import annotations

from collections.abc import Set

import onnx

from . import register
from ._edit import Edit, attributes, differentiated
from .depthwise import conv_pads

__all__ = ["rewrite_conv_padding"]


def _plan(edit: Edit, node: onnx.NodeProto, input_gradient: bool) -> tuple[list[int], list[int]] | None:
    """(explicit pads, cropped extents) when the Conv needs the rewrite, else None."""
    attrs = attributes(node)
    x_shape, w_shape = edit.static_shape(node.input[0]), edit.static_shape(node.input[1])
    if x_shape is None or w_shape is None or len(x_shape) < 3:
        return None
    spatial = x_shape[2:]
    n = len(spatial)
    kernel = attrs.get_ints("kernel_shape", w_shape[2:])
    strides = attrs.get_ints("strides", [1] * n)
    dilations = attrs.get_ints("dilations", [1] * n)
    pads = conv_pads(attrs, spatial, kernel, strides, dilations)
    if pads is None:
        return None
    auto = attrs.get_str("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID")
    extents, needed = [], auto
    for i in range(n):
        reach = (kernel[i] - 1) * dilations[i] + 1
        padded = spatial[i] + pads[i] + pads[n + i]
        n_out = (padded - reach) // strides[i] + 1
        if n_out < 1:
            return None
        used = (n_out - 1) * strides[i] + reach
        # the padding ConvTranspose infers from output_shape starts with total - total//2 (0 when negative)
        total = max(pads[i] + pads[n + i] - (padded - used), 0)
        needed = needed or (input_gradient and pads[i] != total - total // 2)
        extents.append(used)
    return (pads, extents) if needed else None


def _rewrite(edit: Edit, node: onnx.NodeProto, pads: list[int], extents: list[int]) -> None:
    attrs = attributes(node).without("pads", "auto_pad")
    n = len(extents)
    x = node.input[0]
    if any(pads):
        x = edit.op("Pad", [x, edit.ints([0, 0, *pads[:n], 0, 0, *pads[n:]], "pads")], mode="constant",
                    hint="padded")
    shape = edit.static_shape(node.input[0])
    assert shape is not None
    padded = [shape[2 + i] + pads[i] + pads[n + i] for i in range(n)]
    if extents != padded:  # rows and columns no window reads
        x = edit.op("Slice", [x, edit.ints([0] * n), edit.ints(extents), edit.ints(list(range(2, 2 + n)))],
                    hint="cropped")
    edit.op("Conv", [x, *node.input[1:]], out=node.output[0], attrs=attrs, pads=[0] * (2 * n))


@register("conv-padding", "Conv with padding ConvTranspose cannot mirror (asymmetric, SAME, unread rows) -> "
          "Pad, crop, unpadded Conv", static_shapes=True)
def rewrite_conv_padding(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every Conv whose input gradient onnx-ad would misplace; return the count."""
    edit = Edit(model, "auditor_pad")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or not any(i in path for i in node.input):
            continue
        plan = _plan(edit, node, node.input[0] in path)
        if plan is not None:
            _rewrite(edit, node, *plan)
            edit.replace(node)
    return edit.apply()
