"""Pooling onnx-ad refuses or misdifferentiates (``ceil_mode``, ``auto_pad``, asymmetric padding) with explicit padding.

- ``MaxPool`` with ``ceil_mode=1`` or ``auto_pad``: onnx-ad refuses both. Padding is ignored by
  MaxPool, so the same windows come from explicit pads, extended at the end by the overhang
  of the last ceil-mode window, and ``ceil_mode=0``.
- ``AveragePool``: onnx-ad spreads its adjoint with a ``ConvTranspose`` given
  ``output_shape``, which misplaces it exactly as for Conv (:mod:`.conv_padding`) when the
  leading pad differs from what ConvTranspose infers (TensorFlow SAME pooling, ceil mode).
  Such a pool becomes a window sum of the explicitly padded input (an unpadded
  ``AveragePool`` over whole windows times the window size) divided by a constant table of
  ONNX Runtime's divisors: the elements of each window inside the input
  (``count_include_pad=0``) or inside the padded input (``count_include_pad=1``).

Output sizes follow ONNX Runtime: in ceil mode a window that would start past the input and
its leading pad is dropped. Needs the input's static shape; 2-D and 1-D pools without
dilation (AveragePool) are rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import numpy as np
import onnx

from . import register
from ._edit import Attributes, Edit, attributes, differentiated
from .depthwise import conv_pads

__all__ = ["rewrite_pool_padding", "pool_output_size"]


def pool_output_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int, ceil: bool) -> int:
    """Output length of a pooling axis as ONNX Runtime computes it."""
    reach = (kernel - 1) * dilation + 1
    span = size + begin + end - reach
    n = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (n - 1) * stride >= size + begin:  # the last window would start in the end padding
        n -= 1
    return n


def _divisors(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], begin: Sequence[int],
              end: Sequence[int], outputs: Sequence[int], include_pad: bool) -> np.ndarray:
    """ONNX Runtime's AveragePool divisor at every output position, ``[1, 1, *outputs]``."""
    per_axis = []
    for size, k, s, b, e, n in zip(spatial, kernel, strides, begin, end, outputs):
        low, high = (-b, size + e) if include_pad else (0, size)
        starts = np.arange(n) * s - b
        per_axis.append(np.minimum(starts + k, high) - np.maximum(starts, low))
    table = per_axis[0]
    for counts in per_axis[1:]:
        table = np.multiply.outer(table, counts)
    return np.asarray(table, dtype=np.float64).reshape(1, 1, *outputs)


class _Plan:
    """What a pool becomes: its attributes without padding, its padding, and the sizes involved."""

    def __init__(self, attrs: Attributes, spatial: list[int], pads: list[int], explicit: list[int],
                 outputs: list[int], extents: list[int]) -> None:
        self.attrs = attrs.without("pads", "auto_pad", "ceil_mode", "count_include_pad")
        self.kernel, self.strides = attrs.get_ints("kernel_shape", []), attrs.get_ints("strides", [1] * len(spatial))
        self.include_pad = bool(attrs.get_int("count_include_pad", 0))
        self.spatial, self.pads, self.explicit = spatial, pads, explicit
        self.outputs, self.extents = outputs, extents


def _plan(edit: Edit, node: onnx.NodeProto) -> _Plan | None:
    """The rewrite of a pool that needs one, else None."""
    attrs = attributes(node)
    shape = edit.static_shape(node.input[0])
    if shape is None or len(shape) < 3 or "kernel_shape" not in attrs:
        return None
    spatial, n = shape[2:], len(shape) - 2
    kernel = attrs.get_ints("kernel_shape", [])
    strides = attrs.get_ints("strides", [1] * n)
    dilations = attrs.get_ints("dilations", [1] * n)
    if node.op_type == "AveragePool" and any(d != 1 for d in dilations):
        return None
    pads = conv_pads(attrs, spatial, kernel, strides, dilations)
    if pads is None:
        return None
    ceil = bool(attrs.get_int("ceil_mode", 0))
    needed = ceil or attrs.get_str("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID")
    outputs, explicit, extents = [], list(pads), []
    for i in range(n):
        reach = (kernel[i] - 1) * dilations[i] + 1
        out = pool_output_size(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[n + i], ceil)
        if out < 1:
            return None
        used = (out - 1) * strides[i] + reach
        explicit[n + i] = max(pads[n + i], used - spatial[i] - pads[i])  # the overhang of the last window
        padded = spatial[i] + pads[i] + pads[n + i]
        total = max(pads[i] + pads[n + i] - (padded - used), 0)  # what ConvTranspose would infer
        needed = needed or (node.op_type == "AveragePool" and pads[i] != total - total // 2)
        outputs.append(out)
        extents.append(used)
    return _Plan(attrs, spatial, pads, explicit, outputs, extents) if needed else None


def _rewrite(edit: Edit, node: onnx.NodeProto, plan: _Plan) -> None:
    x, n = node.input[0], len(plan.outputs)
    if node.op_type == "MaxPool":
        edit.ops("MaxPool", [x], list(node.output), attrs=plan.attrs, pads=plan.explicit)
        return
    divisors = _divisors(plan.spatial, plan.kernel, plan.strides, plan.pads[:n], plan.pads[n:], plan.outputs,
                         plan.include_pad)
    begin, end = plan.explicit[:n], plan.explicit[n:]
    if any(plan.explicit):
        x = edit.op("Pad", [x, edit.ints([0, 0, *begin, 0, 0, *end], "pads")], mode="constant", hint="padded")
    if [plan.spatial[i] + begin[i] + end[i] for i in range(n)] != plan.extents:
        x = edit.op("Slice", [x, edit.ints([0] * n), edit.ints(plan.extents), edit.ints(list(range(2, 2 + n)))],
                    hint="cropped")
    mean = edit.op("AveragePool", [x], hint="window_mean", attrs=plan.attrs)
    window = float(np.prod(plan.kernel))
    edit.op("Mul", [mean, edit.constant(window / divisors, x, "window_over_divisor")], out=node.output[0])


@register("pool-padding", "MaxPool/AveragePool with ceil_mode, auto_pad or padding ConvTranspose cannot mirror -> "
          "explicit padding (and a constant divisor table)", static_shapes=True)
def rewrite_pool_padding(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every such pool between θ and the loss; return the count."""
    edit = Edit(model, "auditor_pool")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.op_type not in ("MaxPool", "AveragePool") or node.domain not in ("", "ai.onnx"):
            continue
        if node.input[0] not in path or (node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]):
            continue
        plan = _plan(edit, node)
        if plan is not None:
            _rewrite(edit, node, plan)
            edit.replace(node)
    return edit.apply()
