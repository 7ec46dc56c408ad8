"""Rewrites that make an exported graph differentiable by onnx-ad, one rewrite per module.

Each rewrite replaces nodes that onnx-ad has no reverse rule for (or a rule that is slow or
refuses the node's attributes) by an equivalent subgraph of standard ops: the outputs stay
the same, and the gradients of the new subgraph are the gradients of the original op. They
run on the gradient graph only (:func:`auditor.graph.gradient_graph`); evaluation keeps the
exported ops.

A rewrite, like onnxruntime's fusions (``fusion_base.py``), collects the nodes it removes
and adds and applies them once; it never edits ``graph.node`` while iterating it. It
returns how many nodes it rewrote, which :func:`apply_rewrites` records for ``inspect`` and
the report.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass

import onnx

__all__ = ["Rewrite", "RewriteRecord", "REWRITES", "register", "apply_rewrites"]


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
        ``apply(model, params) -> int``: edits ``model`` (a ModelProto with inferred static
        shapes) in place and returns the number of nodes rewritten. ``params`` are the
        names of the graph inputs holding θ.
    """

    name: str
    description: str
    apply: Callable[[onnx.ModelProto, Set[str]], int]


@dataclass(frozen=True)
class RewriteRecord:
    """A rewrite that changed a graph, and how many nodes it rewrote."""

    name: str
    description: str
    count: int


#: Registered rewrites, in the order they run.
REWRITES: list[Rewrite] = []


def register(name: str, description: str) -> Callable[[Callable[[onnx.ModelProto, Set[str]], int]],
                                                       Callable[[onnx.ModelProto, Set[str]], int]]:
    """Decorator adding a rewrite function to :data:`REWRITES` (in import order)."""

    def wrap(fn: Callable[[onnx.ModelProto, Set[str]], int]) -> Callable[[onnx.ModelProto, Set[str]], int]:
        REWRITES.append(Rewrite(name, description, fn))
        return fn

    return wrap


def apply_rewrites(model: onnx.ModelProto, params: Set[str]) -> list[RewriteRecord]:
    """Run every registered rewrite on ``model`` in place; return those that changed something."""
    records = []
    for rewrite in REWRITES:
        count = rewrite.apply(model, params)
        if count:
            records.append(RewriteRecord(rewrite.name, rewrite.description, count))
    return records


from . import fake_quant  # noqa: E402,F401  (registration order is the order rewrites run)
