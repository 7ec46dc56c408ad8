"""Depthwise ``Conv`` as its kernel-tap windows (a constant one-hot convolution) times the weights.

onnx-ad refuses the weight gradient of a grouped Conv, and a split into one Conv per channel
emits thousands of convolutions in a MobileNet. With ``T = kh·kw`` kernel taps and channel
multiplier ``m`` (output channel ``c·m + j`` reads input channel ``c``)::

    windows[b, c, t, i, j] = Xpad[b, c, p·dh + sh·i, q·dw + sw·j]     (tap t = (p, q))
    y[b, c·m + j, ...]     = Σ_t W[c·m + j, 0, t] · windows[b, c, t, ...]  (+ bias)

The windows are one grouped Conv of the input with a constant one-hot filter bank (``T``
filters per channel, the layer's own strides, dilations and pads), and the sum over taps is
one batched MatMul of ``[C, m, T]`` weights with ``[B, C, T, H·W]`` windows. onnx-ad
differentiates both: the one-hot bank is a constant, so only the Conv's input gradient is
asked for (a grouped ConvTranspose, which it allows), and MatMul's rule gives the weight
gradient. No strided Slice appears, so any stride works. Needs static input and weight
shapes.

Measured alternatives (one depthwise layer, batch 64, gradient time over the layer's
forward): one Slice per tap with strides as a reshape into phases, 10x (stride 1) and
40-55x (stride 2, ONNX Runtime's Pad is slow on the phase layout); taps of a SpaceToDepth
view, 1.3x slower than this in a whole MobileNetV2-like net; this, 6-12x for both strides.
``benchmarks/bench_rewrites.py`` compares it with one Conv per channel in a whole net.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import numpy as np
import onnx

from . import register
from ._edit import Attributes, Edit, attributes, differentiated

__all__ = ["rewrite_depthwise_convs", "conv_pads"]


def conv_pads(attrs: Attributes, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int]) -> list[int] | None:
    """Explicit ``[begin..., end...]`` pads of a Conv or pool, ``auto_pad`` resolved; None if unknown."""
    auto = attrs.get_str("auto_pad", "NOTSET")
    n = len(spatial)
    if auto in ("NOTSET", ""):
        pads = attrs.get_ints("pads", [0] * (2 * n))
        return pads if len(pads) == 2 * n else None
    if auto == "VALID":
        return [0] * (2 * n)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def _pair(attrs: Attributes, name: str) -> list[int]:
    return (attrs.get_ints(name, [1, 1]) + [1, 1])[:2]


def _depthwise(edit: Edit, node: onnx.NodeProto) -> bool:
    attrs = attributes(node)
    x, w, y = node.input[0], node.input[1], node.output[0]
    x_shape, w_shape = edit.static_shape(x), edit.static_shape(w)
    if x_shape is None or w_shape is None or len(x_shape) != 4 or len(w_shape) != 4 or w_shape[1] != 1:
        return False
    batch, c_in, h, wd = x_shape
    c_out, _, kh, kw = w_shape
    if attrs.get_int("group", 1) != c_in or c_out % c_in:
        return False
    strides, dilations = _pair(attrs, "strides"), _pair(attrs, "dilations")
    pads = conv_pads(attrs, [h, wd], [kh, kw], strides, dilations)
    if pads is None:
        return False
    ho = (h + pads[0] + pads[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    wo = (wd + pads[1] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    if ho < 1 or wo < 1:
        return False
    taps, mult = kh * kw, c_out // c_in
    bank = np.tile(np.eye(taps).reshape(taps, 1, kh, kw), (c_in, 1, 1, 1))  # [C*T, 1, kh, kw]
    windows = edit.op("Conv", [x, edit.constant(bank, x, "one_hot")], group=c_in, kernel_shape=[kh, kw],
                      strides=strides, dilations=dilations, pads=pads, hint="windows")  # [B, C*T, Ho, Wo]
    grid = edit.op("Reshape", [windows, edit.ints([batch, c_in, taps, ho * wo])], hint="window_grid")
    weights = edit.op("Reshape", [w, edit.ints([c_in, mult, taps])], hint="w_taps")
    product = edit.op("MatMul", [weights, grid], hint="product")  # [B, C, m, Ho*Wo]
    if len(node.input) > 2 and node.input[2]:
        bias = edit.op("Reshape", [node.input[2], edit.ints([c_in, mult, 1])], hint="bias")
        product = edit.op("Add", [product, bias], hint="biased")
    edit.op("Reshape", [product, edit.ints([batch, c_out, ho, wo])], out=y)
    return True


@register("depthwise-conv", "depthwise Conv -> kernel-tap windows (one-hot Conv) times the weights (MatMul)",
          static_shapes=True)
def rewrite_depthwise_convs(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every 2-D depthwise Conv whose weight carries a gradient; return the count."""
    edit = Edit(model, "auditor_dw")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[1] not in path:
            continue
        if attributes(node).get_int("group", 1) == 1:
            continue
        if _depthwise(edit, node):
            edit.replace(node)
        else:
            edit.discard()
    return edit.apply()
