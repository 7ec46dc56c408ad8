"""``Slice`` with a step other than 1, as a step-1 ``Slice``, a ``Reshape`` and another step-1 ``Slice``.

onnx-ad reverses a Slice by zero-padding its adjoint, which only works for step 1. Taking
every ``s``-th element along an axis is the same as cutting a step-1 window of ``n·s``
elements (zero-padded at the end when the input is shorter), viewing it as ``[n, s]`` and
keeping column 0: every piece has a plain reverse (Pad, Reshape, Slice). A negative step takes
the same elements in ascending order and reverses them with a constant-index ``Gather``.
Needs the static extent of every sliced axis.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import numpy as np
import onnx

from . import register
from ._edit import Edit, differentiated

__all__ = ["rewrite_strided_slices", "take_every"]


def take_every(edit: Edit, x: str, dims: Sequence[int], axis: int, start: int, step: int, count: int,
               out: str | None = None) -> str:
    """``x`` restricted along ``axis`` to ``start, start + step, …`` (``count`` elements, ``step >= 1``).

    ``dims`` is the static shape of ``x``; ``start + step·(count-1)`` must lie inside it.
    """
    n = int(dims[axis])
    end = start + step * count
    if step == 1:
        if start == 0 and end == n:
            return edit.op("Identity", [x], out=out)
        return edit.op("Slice", [x, edit.ints([start]), edit.ints([end]), edit.ints([axis])], out=out)
    window = x
    if start > 0 or end < n:
        window = edit.op("Slice", [x, edit.ints([start]), edit.ints([min(end, n)]), edit.ints([axis])],
                         hint="window")
    if end > n:  # the last block runs past the end: pad it (the padding is never kept)
        pads = [0] * (2 * len(dims))
        pads[len(dims) + axis] = end - n
        window = edit.op("Pad", [window, edit.ints(pads)], mode="constant", hint="window_padded")
    blocks = [int(d) for d in dims[:axis]] + [count, step] + [int(d) for d in dims[axis + 1:]]
    grid = edit.op("Reshape", [window, edit.ints(blocks)], hint="blocks")
    first = edit.op("Slice", [grid, edit.ints([0]), edit.ints([1]), edit.ints([axis + 1])], hint="column")
    kept = [int(d) for d in dims[:axis]] + [count] + [int(d) for d in dims[axis + 1:]]
    return edit.op("Reshape", [first, edit.ints(kept)], out=out, hint="taken")


def _bounds(start: int, end: int, step: int, n: int) -> tuple[int, int]:
    """(first index, element count) of ``range(start, end, step)`` clamped as ONNX Slice does."""
    start = start + n if start < 0 else start
    end = end + n if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), n), min(max(end, 0), n)
    else:
        start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
    count = max(0, -(-(end - start) // step))
    return start, count


def _constant(edit: Edit, node: onnx.NodeProto, index: int) -> list[int] | None:
    if len(node.input) <= index or not node.input[index]:
        return None
    value = edit.initializer(node.input[index])
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _rewrite_one(edit: Edit, node: onnx.NodeProto) -> bool:
    x, y = node.input[0], node.output[0]
    dims = edit.static_shape(x)
    starts, ends = _constant(edit, node, 1), _constant(edit, node, 2)
    axes, steps = _constant(edit, node, 3), _constant(edit, node, 4)
    if dims is None or starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None):
        return False
    axes = list(range(len(starts))) if axes is None else [a % len(dims) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    plan = []
    for axis, start, end, step in zip(axes, starts, ends, steps):
        first, count = _bounds(start, end, step, int(dims[axis]))
        if count == 0:
            return False  # an empty slice: nothing flows through it, leave it to onnx-ad
        plan.append((axis, first, count, step))
    cur, shape = x, [int(d) for d in dims]
    last = len(plan) - 1
    for k, (axis, first, count, step) in enumerate(plan):
        low = first if step > 0 else first + step * (count - 1)  # the smallest index taken
        target = y if k == last and (step > 0 or count == 1) else None
        cur = take_every(edit, cur, shape, axis, low, abs(step), count, out=target)
        shape[axis] = count
        if step < 0 and count > 1:  # ascending -> the order the negative step asked for
            order = edit.ints(list(range(count - 1, -1, -1)), "reversed")
            cur = edit.op("Gather", [cur, order], axis=axis, out=y if k == last else None, hint="reversed")
    return True


@register("strided-slice", "Slice with a step other than 1 -> step-1 Slice, Reshape and Slice (Gather to reverse)",
          static_shapes=True)
def rewrite_strided_slices(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every Slice with a step other than 1 between θ and the loss; return the count."""
    edit = Edit(model, "auditor_slice")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or node.input[0] not in path:
            continue
        steps = _constant(edit, node, 4)
        if steps is None or all(s == 1 for s in steps):
            continue
        if _rewrite_one(edit, node):
            edit.replace(node)
        else:
            edit.discard()
    return edit.apply()
