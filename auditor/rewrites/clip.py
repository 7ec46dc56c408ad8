"""``Clip`` with constant bounds (ReLU6), ``HardSigmoid`` and ``HardSwish`` as a value times a float mask.

onnx-ad reverses these ops with ``Where`` on the activation-shaped mask and a scalar zero,
and ONNX Runtime's ``Where`` with a broadcast scalar runs at about 20 ns per element: in a
MobileNetV2-like net the ReLU6 reverses were 40% of the gradient graph's time
(``benchmarks/bench_rewrites.py``). Written as ::

    inside = Cast(lo < x < hi)                 (a float mask, no derivative)
    y      = x · inside + lo · Cast(x <= lo) + hi · Cast(x >= hi)

the value is the same (``x·1 + 0`` and ``x·0 + bound`` are exact for finite ``x``) and the
reverse is one elementwise ``Mul`` of the adjoint by ``inside``. ``HardSigmoid(x) =
Clip(alpha·x + beta, 0, 1)`` and ``HardSwish(x) = x · HardSigmoid(x; 1/6, 1/2)`` take the
same form. At the bounds themselves the derivative is 0, as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import onnx

from . import register
from ._edit import Edit, attributes, differentiated

__all__ = ["rewrite_clips"]


def _float_mask(edit: Edit, condition: str, like: str) -> str:
    elem = edit.elem_type(like)
    if elem:
        return edit.op("Cast", [condition], to=elem, hint="mask")
    return edit.op("CastLike", [condition, like], hint="mask")


def _clipped(edit: Edit, x: str, low: float | None, high: float | None, out: str) -> None:
    """``out = clip(x, low, high)`` with a mask-times-value form (a bound of None is absent)."""
    tests = []
    if low is not None:
        tests.append(edit.op("Greater", [x, edit.scalar(low, x, "low")], hint="above_low"))
    if high is not None:
        tests.append(edit.op("Less", [x, edit.scalar(high, x, "high")], hint="below_high"))
    inside = tests[0] if len(tests) == 1 else edit.op("And", tests, hint="inside")
    terms = [edit.op("Mul", [x, _float_mask(edit, inside, x)], hint="kept")]
    for bound, compare in ((low, "LessOrEqual"), (high, "GreaterOrEqual")):
        if bound is not None and bound != 0.0:
            hit = _float_mask(edit, edit.op(compare, [x, edit.scalar(bound, x, "bound")], hint="at_bound"), x)
            terms.append(edit.op("Mul", [hit, edit.scalar(bound, x, "bound_value")], hint="bound_term"))
    if len(terms) == 1:
        edit.op("Identity", terms, out=out)
    else:
        edit.op("Sum", terms, out=out)


def _bound(edit: Edit, node: onnx.NodeProto, index: int) -> tuple[bool, float | None]:
    """(known, value) of Clip's optional bound ``index``; value None when the input is absent."""
    if len(node.input) <= index or not node.input[index]:
        return True, None
    value = edit.initializer(node.input[index])
    if value is None or np.asarray(value).size != 1:
        return False, None
    return True, float(np.asarray(value).reshape(-1)[0])


def _rewrite(edit: Edit, node: onnx.NodeProto) -> bool:
    x, y = node.input[0], node.output[0]
    attrs = attributes(node)
    if node.op_type == "Clip":
        (known_low, low), (known_high, high) = _bound(edit, node, 1), _bound(edit, node, 2)
        if not (known_low and known_high) or (low is None and high is None):
            return False
        _clipped(edit, x, low, high, y)
        return True
    if node.op_type == "HardSigmoid":
        alpha, beta = attrs.get_float("alpha", 0.2), attrs.get_float("beta", 0.5)
    elif node.op_type == "HardSwish":
        alpha, beta = 1.0 / 6.0, 0.5
    else:
        return False
    line = edit.op("Add", [edit.op("Mul", [x, edit.scalar(alpha, x, "alpha")], hint="scaled"),
                           edit.scalar(beta, x, "beta")], hint="line")
    if node.op_type == "HardSigmoid":
        _clipped(edit, line, 0.0, 1.0, y)
    else:
        gate = edit.name("gate")
        _clipped(edit, line, 0.0, 1.0, gate)
        edit.op("Mul", [x, gate], out=y)
    return True


@register("clip-mask", "Clip with constant bounds, HardSigmoid, HardSwish -> value times a float mask "
          "(a cheaper reverse than Where)")
def rewrite_clips(model: onnx.ModelProto, params: Set[str]) -> int:
    """Rewrite every such node between θ and the loss; return the count."""
    edit = Edit(model, "auditor_clip")
    path = differentiated(model, params)
    for node in edit.nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Clip", "HardSigmoid", "HardSwish"):
            continue
        if node.input[0] not in path:
            continue
        if _rewrite(edit, node):
            edit.replace(node)
        else:
            edit.discard()
    return edit.apply()
