"""Rewrites that make an exported graph differentiable by onnx-ad, one rewrite per module.

Each rewrite replaces nodes that onnx-ad has no reverse rule for (or a rule that is slow or
refuses the node's attributes) by an equivalent subgraph of standard ops: the outputs stay
the same, and the gradients of the new subgraph are the gradients of the original op. They
run on the gradient graph only (:func:`auditor.graph.gradient_graph`); evaluation keeps the
exported ops. Only nodes between θ and the loss are rewritten: reverse mode never looks at
the others.

A rewrite, like onnxruntime's fusions (``fusion_base.py``), collects the nodes it removes
and adds and applies them once; it never edits ``graph.node`` while iterating it. It
returns how many nodes it rewrote, which :func:`apply_rewrites` records for ``inspect`` and
the report.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass

import onnx

__all__ = ["Rewrite", "RewriteRecord", "REWRITES", "register", "apply_rewrites", "needed_rewrites",
           "unsupported_advice"]

RewriteFunction = Callable[[onnx.ModelProto, Set[str]], int]


@dataclass(frozen=True)
class Rewrite:
    """One registered rewrite.

    Attributes
    ----------
    name : str
        Short kebab-case name shown by ``auditor inspect`` (e.g. ``"strided-depthwise"``).
    description : str
        One line: what is replaced by what.
    apply : callable
        ``apply(model, params) -> int``: edits ``model`` (a ModelProto with inferred
        shapes) in place and returns the number of nodes rewritten. ``params`` are the
        names of the graph inputs holding θ.
    static_shapes : bool
        True when the rewrite needs static shapes (known once the batch and sample shape
        are fixed); such rewrites only run on the gradient graph itself.
    """

    name: str
    description: str
    apply: RewriteFunction
    static_shapes: bool = False


@dataclass(frozen=True)
class RewriteRecord:
    """A rewrite that changed a graph, and how many nodes it rewrote."""

    name: str
    description: str
    count: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "count": self.count}


#: Registered rewrites, in the order they run (``_ORDER`` at the end of this module).
REWRITES: list[Rewrite] = []


def register(name: str, description: str, *, static_shapes: bool = False) -> Callable[[RewriteFunction],
                                                                                     RewriteFunction]:
    """Decorator adding a rewrite function to :data:`REWRITES` (in import order)."""

    def wrap(fn: RewriteFunction) -> RewriteFunction:
        REWRITES.append(Rewrite(name, description, fn, static_shapes))
        return fn

    return wrap


def apply_rewrites(model: onnx.ModelProto, params: Set[str], *, static_shapes: bool = True) -> list[RewriteRecord]:
    """Run the registered rewrites on ``model`` in place; return those that changed something.

    Parameters
    ----------
    model : onnx.ModelProto
        A graph whose parameters are the names in ``params`` (inputs or initializers), with
        shapes inferred.
    params : set of str
        θ: the tensors gradients are taken with respect to.
    static_shapes : bool, default=True
        False runs only the rewrites that do not need static shapes (the early support
        check, before the batch size is known).
    """
    records = []
    stale = False  # shapes were inferred before some rewrite changed the graph
    for rewrite in REWRITES:
        if rewrite.static_shapes and not static_shapes:
            continue
        if rewrite.static_shapes and stale:
            # the ops rewritten so far (ONNX Runtime's own, mostly) hid every shape after them
            _infer_in_place(model)
            stale = False
        count = rewrite.apply(model, params)
        if count:
            records.append(RewriteRecord(rewrite.name, rewrite.description, count))
            stale = True
    if stale:  # inferred before a rewrite: recomputed from scratch by the next inference
        del model.graph.value_info[:]
    return records


def _infer_in_place(model: onnx.ModelProto) -> None:
    del model.graph.value_info[:]  # a rewrite may correct a shape (pools in ceil mode before opset 22)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # best effort: rewrites needing a shape that stays unknown leave their node alone
        return
    model.CopyFrom(inferred)


def needed_rewrites(proto: onnx.ModelProto, params: Set[str], batch: int = 1) -> list[RewriteRecord]:
    """The rewrites the gradient graph of ``proto`` needs, on a copy (what ``inspect`` lists).

    A dynamic batch axis is fixed to ``batch`` and shapes are inferred, so the rewrites that
    need static shapes see them wherever the model declares the other dimensions.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inits = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in inits and len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # unknown shapes: the rewrites that need them count nothing
        pass
    return apply_rewrites(model, params)


# The modules register their rewrites on import; they run in this order: ONNX Runtime's fused ops
# first (a FusedConv may be grouped or end in a Clip), the straight-through int8 activation
# quantisation after the clip-mask rewrite (its Clip keeps onnx-ad's rule: derivative 1 at the
# integer range's ends, as PyTorch's fake quantisation), then the rewrites that need static
# shapes, the padding fix last, since it also corrects the convolutions the rewrites before it emit.
from . import (  # noqa: E402, F401
    clip,
    conv_padding,
    depthwise,
    fake_quant,
    grouped_conv,
    lrn,
    ort_activations,
    ort_linear,
    ort_normalization,
    pool_padding,
    strided_slice,
)
from .advice import unsupported_advice  # noqa: E402

_ORDER = ("ort-fused-activations", "ort-fused-linear", "ort-fused-normalization", "clip-mask", "fake-quant", "lrn",
          "strided-slice", "depthwise-conv", "grouped-conv", "conv-padding", "pool-padding")
REWRITES.sort(key=lambda rewrite: _ORDER.index(rewrite.name))
