"""A faster reverse rule for the weight gradient of 2-D ``Conv``: patches and one batched MatMul.

onnx-ad forms ``dL/dW`` as a convolution of the transposed input with the transposed
output adjoint as its filter bank (``onnx_ad.rules._conv_weight_adjoint``): a convolution
with image-sized kernels and a 3x3 output, which ONNX Runtime's CPU kernels run poorly
(ENGINEERING.md: about half of the gradient graph's time). Here the same quantity is

    dW[o, i, p, q] = Σ_b Σ_(y,x) dY[b, o, y, x] · Xpad[b, i, y·s + p·d, x·s + q·d]

computed as ``kh·kw`` strided Slices of the padded input (the patches, ``[B, Cin·kh·kw, HW]``)
times the transposed adjoint (``[B, HW, Cout·nseed]``), one batched MatMul, summed over the
batch. A 1x1 convolution with stride 1 and no padding needs no patches at all.

:func:`faster_conv_weight_gradients` swaps this rule in for the duration of a ``with``
block, and only for 2-D convolutions with static shapes; everything else keeps onnx-ad's
rule. The gradients are checked against PyTorch autograd and finite differences in the
tests, with and without the swap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["faster_conv_weight_gradients"]


def _patch_rule(original: Any) -> Any:
    def conv_weight_adjoint(ctx: Any, node: Any, attrs: dict[str, Any], spatial: int, seeded: str) -> Any:
        x, w, y = node.input[0], node.input[1], node.output[0]
        if not ctx.asked_for(w):
            return None
        kernel = ctx.shapes.static(w)
        x_shape = ctx.shapes.static(x)
        y_shape = ctx.shapes.static(y)
        if (spatial != 2 or attrs["group"] != 1 or getattr(ctx, "opset", 0) < 13 or kernel is None
                or x_shape is None or y_shape is None
                or None in kernel or None in x_shape or None in y_shape):
            return original(ctx, node, attrs, spatial, seeded)
        b = ctx.b
        batch, c_in = x_shape[0], x_shape[1]
        c_out, kh, kw = kernel[0], kernel[2], kernel[3]
        ho, wo = y_shape[2], y_shape[3]
        sh, sw = attrs["strides"]
        dh, dw = attrs["dilations"]
        pads = list(attrs["pads"])
        if sh == sw == 1 and _one_seed(ctx):
            return _stride_one(b, x, seeded, batch, c_in, c_out, kh, kw, ho, wo, dh, dw, pads)
        # The seeded adjoint is [B, Cout, Ho, Wo, S]: -> [B, Ho*Wo, Cout*S].
        adj = b.op("Transpose", [seeded], perm=[0, 2, 3, 1, 4], stem="im2col_adjoint_t")
        adj = b.op("Reshape", [adj, b.ints([batch, ho * wo, -1])], stem="im2col_adjoint")
        source = x
        if any(pads):
            source = b.op("Pad", [x, b.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])],
                          mode="constant", stem="im2col_pad")
        slices = []
        for p in range(kh):
            for q in range(kw):
                start = [p * dh, q * dw]
                end = [p * dh + (ho - 1) * sh + 1, q * dw + (wo - 1) * sw + 1]
                piece = b.op("Slice", [source, b.ints(start), b.ints(end), b.ints([2, 3]), b.ints([sh, sw])],
                             stem="im2col_slice")
                slices.append(b.op("Reshape", [piece, b.ints([batch, c_in, 1, ho * wo])], stem="im2col_piece"))
        stacked = b.op("Concat", slices, axis=2, stem="im2col_stack") if len(slices) > 1 else slices[0]
        patches = b.op("Reshape", [stacked, b.ints([batch, c_in * kh * kw, ho * wo])], stem="im2col_patches")
        product = b.op("MatMul", [patches, adj], stem="im2col_matmul")  # [B, Cin*kh*kw, Cout*S]
        summed = b.op("ReduceSum", [product, b.ints([0])], keepdims=0, stem="im2col_sum")
        split = b.op("Reshape", [summed, b.ints([c_in, kh, kw, c_out, -1])], stem="im2col_split")
        # [Cin, kh, kw, Cout, S] -> [Cout, Cin, kh, kw, S]
        return b.op("Transpose", [split], perm=[3, 0, 1, 2, 4], stem="im2col_weight")

    return conv_weight_adjoint


_ONE_SEED = [False]  # set by faster_conv_weight_gradients(one_seed=True)


def _one_seed(ctx: Any) -> bool:
    """True when the reverse pass carries a single seed (the auditor's scalar loss)."""
    return _ONE_SEED[0]


def _stride_one(b: Any, x: str, seeded: str, batch: int, c_in: int, c_out: int, kh: int, kw: int, ho: int,
                wo: int, dh: int, dw: int, pads: list[int]) -> str:
    """Stride 1: every kernel offset is one *contiguous* window of the flattened padded input.

    With the adjoint laid on the padded width ``Wp`` (zeros in the extra columns), output
    position ``y·Wp + x`` meets input position ``y·Wp + x + p·dh·Wp + q·dw``: a plain
    offset, so each patch is a contiguous Slice (a memcpy) instead of a strided gather,
    and no patch matrix is ever concatenated.
    """
    hp, wp = ho + (kh - 1) * dh, wo + (kw - 1) * dw
    length = ho * wp
    # adjoint [B, Cout, Ho, Wo, 1] -> [B, Cout, Ho, Wo] (a view: ONNX Runtime's kernels are slow
    # on a trailing axis of size 1) -> padded width [B, Cout, Ho, Wp] -> [B, Ho*Wp, Cout]
    adj = b.op("Reshape", [seeded, b.ints([batch, c_out, ho, wo])], stem="im2col_adjoint_4d")
    if wp > wo:
        adj = b.op("Pad", [adj, b.ints([0, 0, 0, 0, 0, 0, 0, wp - wo])], mode="constant",
                   stem="im2col_adjoint_pad")
    adj = b.op("Reshape", [adj, b.ints([batch, c_out, length])], stem="im2col_adjoint_flat")
    adj = b.op("Transpose", [adj], perm=[0, 2, 1], stem="im2col_adjoint")
    source = x
    if any(pads):
        source = b.op("Pad", [x, b.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])], mode="constant",
                      stem="im2col_pad")
    flat = b.op("Reshape", [source, b.ints([batch, c_in, hp * wp])], stem="im2col_flat")
    tail = (kw - 1) * dw  # the last window runs this far past the end
    if tail:
        flat = b.op("Pad", [flat, b.ints([0, 0, 0, 0, 0, tail])], mode="constant", stem="im2col_tail")
    pieces = []
    for p in range(kh):
        for q in range(kw):
            offset = p * dh * wp + q * dw
            window = flat if (offset == 0 and length == hp * wp + tail) else b.op(
                "Slice", [flat, b.ints([offset]), b.ints([offset + length]), b.ints([2])], stem="im2col_window")
            product = b.op("MatMul", [window, adj], stem="im2col_matmul")  # [B, Cin, Cout]
            summed = b.op("ReduceSum", [product, b.ints([0])], keepdims=1, stem="im2col_sum")  # [1, Cin, Cout]
            pieces.append(summed)
    stacked = b.op("Concat", pieces, axis=0, stem="im2col_stack") if len(pieces) > 1 else pieces[0]
    # [kh*kw, Cin, Cout] -> [kh, kw, Cin, Cout, 1] -> [Cout, Cin, kh, kw, 1]
    split = b.op("Reshape", [stacked, b.ints([kh, kw, c_in, c_out, 1])], stem="im2col_split")
    return b.op("Transpose", [split], perm=[3, 2, 0, 1, 4], stem="im2col_weight")


@contextlib.contextmanager
def faster_conv_weight_gradients(one_seed: bool = True) -> Iterator[bool]:
    """Use the patches+MatMul weight-gradient rule inside the block; yields whether it is active.

    ``one_seed`` promises that the graph being differentiated is seeded with exactly one
    seed (a scalar loss), which lets the stride-1 rule drop the seed axis.

    When the installed onnx-ad lacks the private hook this relies on, nothing is swapped
    and onnx-ad's own (slower, equally exact) rule runs.
    """
    try:
        from onnx_ad import rules
    except ImportError:  # pragma: no cover - onnx-ad is a core dependency
        yield False
        return
    original = getattr(rules, "_conv_weight_adjoint", None)
    if original is None:
        yield False
        return
    rules._conv_weight_adjoint = _patch_rule(original)
    _ONE_SEED[0] = one_seed
    try:
        yield True
    finally:
        rules._conv_weight_adjoint = original
        _ONE_SEED[0] = False
