"""Grouped ``Conv`` (not depthwise) as one batched MatMul (1x1 kernels) or one Conv per group.

onnx-ad refuses the weight gradient of a grouped Conv. A grouped 1x1 convolution (ShuffleNet's
pointwise layers) is a block-diagonal matrix product: with ``G`` groups, the input viewed as
``[B, G, Cin/G, H·W]`` and the weight as ``[G, Cout/G, Cin/G]``, one MatMul broadcast over the
batch gives ``[B, G, Cout/G, H·W]``, which is the output. A stride is a subsample of the input
first (step-1 windows, see :mod:`auditor.rewrites.strided_slice`). Other grouped convolutions
are split as onnx's reference ``op_conv.py`` computes them: Split the input along the
channels and the weight and bias along the output channels, one ungrouped Conv per group,
Concat.
"""

from __future__ import annotations

from collections.abc import Set

import onnx

from . import register
from ._edit import Edit, attributes, differentiated
from .depthwise import conv_pads
from .strided_slice import take_every

__all__ = ["rewrite_grouped_convs"]


def _pointwise(edit: Edit, node: onnx.NodeProto, groups: int) -> bool:
    """A grouped 1x1 Conv (2-D, no padding) as one batched MatMul; False if it is not one."""
    attrs = attributes(node)
    x, w, y = node.input[0], node.input[1], node.output[0]
    x_shape, w_shape = edit.static_shape(x), edit.static_shape(w)
    if x_shape is None or w_shape is None or len(x_shape) != 4 or w_shape[2:] != [1, 1]:
        return False
    strides = attrs.get_ints("strides", [1, 1])
    pads = conv_pads(attrs, x_shape[2:], [1, 1], strides, [1, 1])
    if pads is None or any(pads):
        return False
    batch, c_in, h, wd = x_shape
    c_out = w_shape[0]
    shape = list(x_shape)
    for axis, s in ((2, strides[0]), (3, strides[1])):
        if s != 1:
            count = (shape[axis] - 1) // s + 1
            x = take_every(edit, x, shape, axis, 0, s, count)
            shape[axis] = count
    h, wd = shape[2], shape[3]
    grid = edit.op("Reshape", [x, edit.ints([batch, groups, c_in // groups, h * wd])], hint="x_groups")
    blocks = edit.op("Reshape", [w, edit.ints([groups, c_out // groups, c_in // groups])], hint="w_blocks")
    product = edit.op("MatMul", [blocks, grid], hint="product")  # [B, G, Cout/G, H*W]
    if len(node.input) > 2 and node.input[2]:
        bias = edit.op("Reshape", [node.input[2], edit.ints([groups, c_out // groups, 1])], hint="bias")
        product = edit.op("Add", [product, bias], hint="biased")
    edit.op("Reshape", [product, edit.ints([batch, c_out, h, wd])], out=y)
    return True


def _per_group(edit: Edit, node: onnx.NodeProto, groups: int) -> bool:
    """Split -> one Conv per group -> Concat; needs the weight's static shape."""
    attrs = attributes(node)
    w_shape = edit.static_shape(node.input[1])
    if w_shape is None:
        return False
    c_out, c_in_group = w_shape[0], w_shape[1]
    in_sizes = edit.ints([c_in_group] * groups, "in_sizes")
    out_sizes = edit.ints([c_out // groups] * groups, "out_sizes")
    xs = edit.ops("Split", [node.input[0], in_sizes], [edit.name(f"x{k}") for k in range(groups)], axis=1)
    ws = edit.ops("Split", [node.input[1], out_sizes], [edit.name(f"w{k}") for k in range(groups)], axis=0)
    bs: list[str] = []
    if len(node.input) > 2 and node.input[2]:
        bs = edit.ops("Split", [node.input[2], out_sizes], [edit.name(f"b{k}") for k in range(groups)], axis=0)
    ys = [edit.op("Conv", [xs[k], ws[k]] + ([bs[k]] if bs else []), hint=f"y{k}", attrs=attrs.without("group"))
          for k in range(groups)]
    edit.op("Concat", ys, out=node.output[0], axis=1)
    return True


@register("grouped-conv", "grouped Conv -> one batched MatMul (1x1 kernels) or one Conv per group",
          static_shapes=True)
def rewrite_grouped_convs(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every grouped Conv whose weight carries a gradient (run after the depthwise rewrite)."""
    edit = Edit(model, "auditor_group")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[1] not in path:
            continue
        groups = attributes(node).get_int("group", 1)
        if groups == 1:
            continue
        if _pointwise(edit, node, groups):
            edit.replace(node)
            continue
        edit.discard()
        if _per_group(edit, node, groups):
            edit.replace(node)
        else:
            edit.discard()
    return edit.apply()
