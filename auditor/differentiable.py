"""Can the auditor differentiate a model? The early check every audit makes, and what ``inspect`` says.

onnx-ad differentiates a node when it has a reverse rule for its op, a lowering into ops
that have one, or the op's specification gives a function body; the rewrites of
:mod:`auditor.rewrites` replace the ops it cannot. A node on a path from θ to the logits
that is left over is named in one line (:class:`~auditor.errors.UnsupportedNodeError`),
before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx
from onnx import helper

from .errors import UnsupportedNodeError
from .graph import _copy, opset_of
from .rewrites import RewriteRecord, apply_rewrites, needed_rewrites, unsupported_advice

__all__ = ["check_gradient_support", "gradient_support", "check_differentiable", "check_training_mode"]


def check_training_mode(m: onnx.ModelProto) -> None:
    for node in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and attrs.get("training_mode", 0):
            raise UnsupportedNodeError(
                f"node {node.name or node.output[0]!r} (BatchNormalization) has training_mode=1; the "
                "auditor needs an inference graph. Export again after calling model.eval()")


def check_gradient_support(model: Any) -> None:
    """Fail early, before any work, when a node between θ and the logits cannot be differentiated.

    The graph checked is the canonical one after the rewrites that need no static shapes
    (:mod:`auditor.rewrites`), so an op the gradient graph rewrites is not refused here.
    """
    from onnx_ad.rules import REVERSE

    check_training_mode(model.proto)
    m = _copy(model.proto)
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # shapes help some rewrites; without them those leave their nodes alone
        pass
    apply_rewrites(m, set(model.parameter_names), static_shapes=False)
    check_differentiable(m, model.parameter_names, REVERSE)


def gradient_support(model: Any) -> tuple[list[RewriteRecord], str | None]:
    """What ``auditor inspect`` says about differentiating ``model``.

    Returns the rewrites its gradient graph needs (:func:`auditor.rewrites.needed_rewrites`,
    on a copy with the batch fixed) and, when the graph cannot be differentiated, the one-line
    reason an audit would give (None when it can).
    """
    rewrites = needed_rewrites(model.proto, set(model.parameter_names), batch=model.fixed_batch or 1)
    try:
        check_gradient_support(model)
    except UnsupportedNodeError as err:
        return rewrites, str(err)
    return rewrites, None


def _differentiable(node: onnx.NodeProto, rules: dict[str, Any], opset: int) -> bool:
    """Whether onnx-ad differentiates ``node``: a reverse rule, a lowering, or a spec function body."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in rules:
        return True
    from onnx_ad.lower import LOWERINGS

    if node.op_type in LOWERINGS:
        return True
    try:
        schema = onnx.defs.get_schema(node.op_type, max_inclusive_version=opset)
    except Exception:  # not an op of this opset
        return False
    bodies = [*schema.function_opset_versions, *schema.context_dependent_function_opset_versions]  # type: ignore[attr-defined]
    return any(v <= opset for v in bodies)


def check_differentiable(m: onnx.ModelProto, params: Sequence[str], rules: dict[str, Any]) -> None:
    """Name every node on a path from θ to the loss that onnx-ad cannot differentiate."""
    depends = set(params)
    bad = []
    opset = opset_of(m)
    for node in m.graph.node:
        if any(i in depends for i in node.input):
            if not _differentiable(node, rules, opset):
                bad.append(node)
            depends.update(node.output)
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more: {sorted({n.op_type for n in bad[1:]})})" if len(bad) > 1 else ""
        domain = f"{first.domain}." if first.domain else ""
        named = f"node {first.name or first.output[0]!r} ({domain}{first.op_type})"
        advice = unsupported_advice(first)
        if advice is not None:
            raise UnsupportedNodeError(f"{named} {advice}{more}")
        raise UnsupportedNodeError(
            f"{named} cannot be differentiated{more}; the auditor needs weight gradients through every node "
            "between the weights and the logits. Export the model with standard ONNX ops, or exclude the "
            "weights that feed it (--exclude)")
