"""The reverse rule of 2-D ``Conv`` for one seed: input gradient as a ``Conv``, weight gradient as MatMuls.

onnx-ad's rule (``onnx_ad.rules._conv_reverse``) forms the input gradient as a
``ConvTranspose`` and the weight gradient as a convolution of the transposed input with
the transposed output adjoint as its filter bank (image-sized kernels, a 3x3 output),
with the seed axis moved around each (those were most of the gradient
graph's time; benchmarks/RESULTS.md). For a single seed (the auditor's scalar loss), 2-D, ungrouped and with
static shapes, this rule computes the same three contributions as:

- **input**, stride 1: ``dX = Conv(dY, W')`` with ``W'[i, o] = W[o, i]`` flipped in both
  spatial axes and the complementary padding. When θ* is baked into the graph as
  initializers, ONNX Runtime folds ``W'`` and pre-packs it like any forward convolution.
  Other strides keep a ``ConvTranspose`` (without the seed-axis transposes).
- **weight**: ``dW[o, i, p, q] = Σ_b Σ_(y,x) dY[b, o, y, x] · Xpad[b, i, y·s + p·d, x·s + q·d]``
  as batched MatMuls summed over the batch: with stride 1, row-shifted copies of the
  padded input times column-shifted copies of the adjoint (``kh + kw`` copies, not
  ``kh·kw`` windows); other strides, and stride 1 with few input channels (a first
  layer: 9 windows of 3 channels copy less than 3 shifts of 32 adjoint channels), all
  windows of the input times the adjoint.
- **bias**: ``ReduceSum(dY)`` over space, then over the batch.

Sums over the batch are a ``MatMul`` of a row of ones with the ``[B, n]`` terms: ONNX
Runtime's ``ReduceSum`` over the first axis ran 5-10x slower (0.2 ms against 0.02 for
``[16, 192, 64]``), a few percent of a gradient batch.

Anything else (several seeds, 1-D/3-D, groups, unknown shapes) goes to onnx-ad's rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto

__all__ = ["conv_reverse"]

Rule = Callable[[Any, Any, list[Any]], list[Any]]


def conv_reverse(original: Rule, input_rule: bool = True, weight_rule: bool = True) -> Rule:
    """The faster Conv reverse rule, falling back to ``original`` where it does not apply.

    ``input_rule`` / ``weight_rule`` switch the two halves off (onnx-ad's formulation is
    then used for that half), for the benchmark's before/after comparison.
    """
    from onnx_ad.rules import _conv_attributes, _conv_weight_adjoint

    def rule(ctx: Any, node: Any, grads: list[Any]) -> list[Any]:
        attrs, spatial = _conv_attributes(ctx, node)
        x, w, y = node.input[0], node.input[1], node.output[0]
        x_shape, w_shape, y_shape = ctx.shapes.static(x), ctx.shapes.static(w), ctx.shapes.static(y)
        if (spatial != 2 or attrs["group"] != 1 or ctx.opset < 13 or x_shape is None or w_shape is None
                or y_shape is None or None in x_shape or None in w_shape or None in y_shape):
            return original(ctx, node, grads)
        b = ctx.b
        dtype = ctx.dtype(x, w, y)
        # one seed: [B, Cout, Ho, Wo, 1] -> [B, Cout, Ho, Wo] is a free Reshape
        dy = b.op("Reshape", [ctx.full(grads[0], y), b.ints(list(y_shape))], stem="conv_dy")
        shapes = _Shapes(tuple(x_shape), tuple(w_shape), tuple(y_shape))
        out: list[Any] = [None, None]
        if ctx.asked_for(x):
            dx = (_input_gradient(b, dy, w, attrs, shapes) if input_rule else
                  _transposed_input_gradient(b, dy, w, attrs, shapes))
            out[0] = b.op("Reshape", [dx, b.ints([*x_shape, 1])], stem="conv_dx")
        if ctx.asked_for(w):
            if weight_rule:
                out[1] = _weight_gradient(b, x, dy, attrs, shapes, dtype)
            else:
                seeded = b.op("Reshape", [dy, b.ints([*y_shape, 1])], stem="conv_dy_seeded")
                out[1] = _conv_weight_adjoint(ctx, node, attrs, spatial, seeded)
        if len(node.input) > 2 and node.input[2]:
            out.append(None)
            if ctx.asked_for(node.input[2]):
                spatial_sum = b.op("ReduceSum", [dy, b.ints([2, 3])], keepdims=0, stem="conv_db_space")
                out[2] = _batch_sum(b, spatial_sum, shapes.batch, [w_shape[0], 1], dtype)
        return out

    return rule


class _Shapes:
    """Static shapes of one convolution: input, weight, output (all NCHW / OIHW)."""

    def __init__(self, x: tuple[int, ...], w: tuple[int, ...], y: tuple[int, ...]) -> None:
        self.batch, self.c_in, self.h, self.w = x
        self.c_out, _, self.kh, self.kw = w
        _, _, self.ho, self.wo = y


def _input_gradient(b: Any, dy: str, w: str, attrs: dict[str, Any], s: _Shapes) -> str:
    """``dX`` as a stride-1 ``Conv`` of the adjoint with the flipped, transposed weight."""
    dh, dw = attrs["dilations"]
    top, left, bottom, right = attrs["pads"]
    pads = [(s.kh - 1) * dh - top, (s.kw - 1) * dw - left, (s.kh - 1) * dh - bottom, (s.kw - 1) * dw - right]
    if attrs["strides"] != [1, 1] or min(pads) < 0:
        return _transposed_input_gradient(b, dy, w, attrs, s)
    flipped = b.op("Slice", [w, b.ints([-1, -1]), b.ints([-(2**62), -(2**62)]), b.ints([2, 3]), b.ints([-1, -1])],
                   stem="conv_w_flip")
    kernel = b.op("Transpose", [flipped], perm=[1, 0, 2, 3], stem="conv_w_t")
    result: str = b.op("Conv", [dy, kernel], dilations=[dh, dw], pads=pads, strides=[1, 1], group=1,
                kernel_shape=[s.kh, s.kw], stem="conv_dx4")
    return result


def _transposed_input_gradient(b: Any, dy: str, w: str, attrs: dict[str, Any], s: _Shapes) -> str:
    """``dX`` as a ``ConvTranspose`` with the Conv's own pads, without moving the seed axis.

    onnx-ad passes ``output_shape``, with which ONNX (and ONNX Runtime) recompute the pads
    symmetrically and ignore the given ones: wrong for asymmetric pads. Here the pads stay
    and ``output_padding`` adds the rows/columns the last window did not reach.
    """
    strides, dilations, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    extra = [size + pads[i] + pads[i + 2] - (k - 1) * d - 1 - st * (out - 1)
             for i, (size, k, d, st, out) in enumerate(zip((s.h, s.w), (s.kh, s.kw), dilations, strides, (s.ho, s.wo)))]
    result: str = b.op("ConvTranspose", [dy, w], strides=strides, dilations=dilations, pads=pads, output_padding=extra,
                group=1, kernel_shape=[s.kh, s.kw], stem="conv_dx_t")
    return result


def _batch_sum(b: Any, terms: str, batch: int, shape: list[int], dtype: int) -> str:
    """``Σ_b terms[b]`` reshaped to ``shape``: a ``[1, B]`` row of ones times the ``[B, n]`` terms."""
    flat = b.op("Reshape", [terms, b.ints([batch, -1])], stem="batch_terms")
    ones = b.constant(np.ones((1, batch)), dtype)
    summed = b.op("MatMul", [ones, flat], stem="batch_sum")
    result: str = b.op("Reshape", [summed, b.ints(shape)], stem="batch_summed")
    return result


def _weight_gradient(b: Any, x: str, dy: str, attrs: dict[str, Any], s: _Shapes, dtype: int) -> str:
    """``dW`` with a trailing seed axis: ``[Cout, Cin, kh, kw, 1]``."""
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    pads = list(attrs["pads"])
    if sh == sw == 1 and not _windows_cheaper(s):
        return _stride_one(b, x, dy, s, dh, dw, pads, dtype)
    # [B, Cout, Ho, Wo] -> [B, Ho*Wo, Cout]
    adj = b.op("Reshape", [dy, b.ints([s.batch, s.c_out, s.ho * s.wo])], stem="im2col_adjoint_flat")
    adj = b.op("Transpose", [adj], perm=[0, 2, 1], stem="im2col_adjoint")
    source = x
    if any(pads):
        source = b.op("Pad", [x, b.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])],
                      mode="constant", stem="im2col_pad")
    slices = []
    for p in range(s.kh):
        for q in range(s.kw):
            start = [p * dh, q * dw]
            end = [p * dh + (s.ho - 1) * sh + 1, q * dw + (s.wo - 1) * sw + 1]
            piece = b.op("Slice", [source, b.ints(start), b.ints(end), b.ints([2, 3]), b.ints([sh, sw])],
                         stem="im2col_slice")
            slices.append(b.op("Reshape", [piece, b.ints([s.batch, s.c_in, 1, s.ho * s.wo])], stem="im2col_piece"))
    stacked = b.op("Concat", slices, axis=2, stem="im2col_stack") if len(slices) > 1 else slices[0]
    patches = b.op("Reshape", [stacked, b.ints([s.batch, s.c_in * s.kh * s.kw, s.ho * s.wo])],
                   stem="im2col_patches")
    product = b.op("MatMul", [patches, adj], stem="im2col_matmul")  # [B, Cin*kh*kw, Cout]
    split = _batch_sum(b, product, s.batch, [s.c_in, s.kh, s.kw, s.c_out, 1], dtype)
    # [Cin, kh, kw, Cout, 1] -> [Cout, Cin, kh, kw, 1]
    result: str = b.op("Transpose", [split], perm=[3, 0, 1, 2, 4], stem="im2col_weight")
    return result


def _windows_cheaper(s: _Shapes) -> bool:
    """Whether all ``kh·kw`` input windows (sliced, then concatenated) copy fewer channels than
    ``kh`` row shifts of the input plus ``kw`` column shifts of the adjoint (:func:`_stride_one`).

    True for a first layer: three input channels against tens of adjoint channels.
    """
    windows = 2 * s.c_in * s.kh * s.kw if s.kh * s.kw > 1 else 0
    shifts = (s.c_in * s.kh if s.kh > 1 else 0) + (s.c_out * s.kw if s.kw > 1 else 0)
    return windows < shifts


def _stride_one(b: Any, x: str, dy: str, s: _Shapes, dh: int, dw: int, pads: list[int], dtype: int) -> str:
    """Stride 1: kh row-shifted copies of the padded input, kw column-shifted copies of the adjoint.

    ``dW[o, i, p, q] = Σ_b Σ_(y,v) Xpad[b, i, y + p·dh, v] · Aq[b, o, y, v]`` where ``Aq`` is the
    adjoint placed at column offset ``q·dw`` of the padded width ``Wp`` (zeros elsewhere).
    The row shifts are one ``Gather`` of whole rows (``[B, Cin·kh, Ho·Wp]``), the column
    shifts one ``Pad`` each, so a 3x3 kernel costs 3 + 3 copies instead of 9 windows; then
    one batched MatMul per column offset, summed over the batch.
    """
    wp = s.wo + (s.kw - 1) * dw  # the padded width
    length = s.ho * wp
    source = x
    if any(pads):
        source = b.op("Pad", [x, b.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])], mode="constant",
                      stem="wgrad_pad")
    if s.kh > 1:
        rows = (np.arange(s.kh)[:, None] * dh + np.arange(s.ho)[None, :]).tolist()
        source = b.op("Gather", [source, b.constant(rows, TensorProto.INT64, [s.kh, s.ho])], axis=2, stem="wgrad_rows")
    shifted = b.op("Reshape", [source, b.ints([s.batch, s.c_in * s.kh, length])], stem="wgrad_x")  # (i, p) rows
    pieces = []
    for q in range(s.kw):
        adj = dy
        if wp > s.wo:
            adj = b.op("Pad", [dy, b.ints([0, 0, 0, q * dw, 0, 0, 0, wp - s.wo - q * dw])], mode="constant",
                       stem="wgrad_adjoint_pad")
        adj = b.op("Reshape", [adj, b.ints([s.batch, s.c_out, length])], stem="wgrad_adjoint")
        adj = b.op("Transpose", [adj], perm=[0, 2, 1], stem="wgrad_adjoint_t")  # fused into MatMul by ORT
        product = b.op("MatMul", [shifted, adj], stem="wgrad_matmul")  # [B, Cin*kh, Cout]
        pieces.append(_batch_sum(b, product, s.batch, [1, s.c_in * s.kh, s.c_out], dtype))
    stacked = b.op("Concat", pieces, axis=0, stem="wgrad_stack") if len(pieces) > 1 else pieces[0]
    # [kw, Cin*kh, Cout] -> [kw, Cin, kh, Cout] -> [Cout, Cin, kh, kw] -> seed axis
    split = b.op("Reshape", [stacked, b.ints([s.kw, s.c_in, s.kh, s.c_out])], stem="wgrad_split")
    weight = b.op("Transpose", [split], perm=[3, 1, 2, 0], stem="wgrad_weight")
    result: str = b.op("Reshape", [weight, b.ints([s.c_out, s.c_in, s.kh, s.kw, 1])], stem="wgrad_seeded")
    return result
