"""Faster reverse rules for onnx-ad, for the auditor's one-seed gradient graph.

onnx-ad's rules are general (any number of seeds, dynamic shapes); the auditor's gradient
graph has one seed (a scalar loss) and static shapes, and runs on ONNX Runtime, whose CPU
kernels are fast for some formulations and slow for others. :func:`faster_reverse_rules`
swaps these rules in for the duration of a ``with`` block; each computes exactly what
onnx-ad's rule computes (the tests compare both, and finite differences):

- ``Conv`` (:mod:`auditor.conv_gradient`): input gradient as a ``Conv`` with the flipped
  weight, weight gradient as windows times the adjoint.
- ``Relu``: the mask ``Y > 0`` from the output instead of ``X > 0`` from the input (the
  same set), so ONNX Runtime can still fuse the forward ``Conv`` + ``Relu``.
- ``MaxPool`` whose windows tile the input (no overlap, no padding, nothing left over):
  ``MaxUnpool`` of the adjoint at the pooling indices, from the forward MaxPool itself
  (given a second output), instead of a second MaxPool with indices, a zero tensor and a
  ``ScatterND`` with ``reduction="add"``.
- ``GlobalAveragePool``: one ``Mul`` of the ``[B, C, 1, 1]`` adjoint by ``1/(H·W)`` laid
  out over the image, instead of an ``Expand`` then a ``Div`` of the full tensor.

Each rule can be switched off by name (:func:`disabled`, :data:`OPTIMIZATIONS`), which is
how the benchmark compares before and after in one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import onnx

from .conv_gradient import conv_reverse

__all__ = ["OPTIMIZATIONS", "disabled", "enabled", "faster_reverse_rules", "gradient_session_config"]

Rule = Callable[[Any, Any, list[Any]], list[Any]]

#: Every optimisation of the gradient graph, by name (rules here; graph passes in
#: :mod:`auditor.reverse_graph`).
OPTIMIZATIONS = {
    "conv_input": "input gradient of Conv as a Conv with the flipped weight",
    "conv_weight": "weight gradient of Conv as windows times the adjoint (MatMul)",
    "relu": "Relu's mask from its output (Y > 0), so the forward Conv+Relu still fuses",
    "max_pool": "MaxPool (windows tiling the input) reversed by MaxUnpool at the forward pass's indices",
    "average_pool": "GlobalAveragePool's adjoint scaled and broadcast by one Mul",
    "seed_shape": "the seed axis fixed to 1, so seed-axis moves become free Reshapes",
    "constant_weights": "θ* baked into the gradient graph as initializers (folded, pre-packed)",
    "no_spinning": "the gradient session's idle threads sleep instead of spinning between its many small ops",
}
_OFF: set[str] = set()


@contextlib.contextmanager
def disabled(*names: str) -> Iterator[None]:
    """Switch the named optimisations off inside the block (for before/after comparisons)."""
    unknown = [n for n in names if n not in OPTIMIZATIONS]
    if unknown:
        raise ValueError(f"unknown gradient optimisations {unknown}; known: {sorted(OPTIMIZATIONS)}")
    saved = set(_OFF)
    _OFF.update(names)
    try:
        yield
    finally:
        _OFF.clear()
        _OFF.update(saved)


def enabled(name: str) -> bool:
    """Whether optimisation ``name`` is on (see :func:`disabled`)."""
    return name not in _OFF


def gradient_session_config(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Session config entries for the gradient graph: ``base`` (the model's own) plus the enabled ones.

    With ``no_spinning`` on, ONNX Runtime's intra-op threads sleep between ops instead of
    spinning. The gradient graph runs many short, memory-bound ops (copies, masks, sums);
    on a machine whose cores are shared, spinning threads took the cores the working
    thread needed (benchmarks/RESULTS.md, "Gradient pass"). The thread count is unchanged.
    """
    config = dict(base or {})
    if enabled("no_spinning"):
        config.setdefault("session.intra_op.allow_spinning", "0")
    return config


@contextlib.contextmanager
def faster_reverse_rules(one_seed: bool = True) -> Iterator[tuple[str, ...]]:
    """Install the faster rules in onnx-ad inside the block; yields the names installed.

    ``one_seed`` promises that the graph is differentiated with exactly one seed (a scalar
    loss); the Conv and MaxPool rules rely on it and are not installed without it.
    """
    from onnx_ad import rules

    table: dict[str, Rule] = rules.REVERSE
    wanted: dict[str, Rule] = {}
    if one_seed and (enabled("conv_input") or enabled("conv_weight")):
        wanted["Conv"] = conv_reverse(table["Conv"], input_rule=enabled("conv_input"),
                                      weight_rule=enabled("conv_weight"))
    if enabled("relu"):
        wanted["Relu"] = _relu_reverse
    if one_seed and enabled("max_pool"):
        wanted["MaxPool"] = _max_pool_reverse(table["MaxPool"])
    if enabled("average_pool"):
        wanted["GlobalAveragePool"] = _average_pool_reverse(table["GlobalAveragePool"])
    saved = {op: table[op] for op in wanted}
    table.update(wanted)
    try:
        yield tuple(sorted(wanted))
    finally:
        table.update(saved)


def _relu_reverse(ctx: Any, node: Any, grads: list[Any]) -> list[Any]:
    """``dX = dY · [Y > 0]``: Y = max(X, 0) is positive exactly where X is (Relu'(0) = 0)."""
    y = node.output[0]
    dtype = ctx.dtype(node.input[0], y)
    mask = ctx.b.op("Cast", [ctx.b.op("Greater", [y, ctx.constant(0.0, dtype)], stem="relu_positive")], to=dtype,
                    stem="relu_mask")
    return [ctx.b.op("Mul", [grads[0], ctx.lift(mask)], stem="relu_dx")]


def _static(ctx: Any, *names: str) -> list[list[int]] | None:
    shapes = [ctx.shapes.static(n) for n in names]
    if any(s is None or None in s for s in shapes):
        return None
    return [list(s) for s in shapes]


def _average_pool_reverse(original: Rule) -> Rule:
    def rule(ctx: Any, node: Any, grads: list[Any]) -> list[Any]:
        x, y = node.input[0], node.output[0]
        shapes = _static(ctx, x, y)
        if shapes is None:
            return original(ctx, node, grads)
        x_shape, y_shape = shapes
        spatial = x_shape[2:]
        scale = np.full([1, 1, *spatial], 1.0 / float(np.prod(spatial)))
        dy = ctx.b.op("Reshape", [ctx.full(grads[0], y), ctx.b.ints(y_shape)], stem="average_pool_dy")
        dx = ctx.b.op("Mul", [dy, ctx.b.constant(scale, ctx.dtype(x, y))], stem="average_pool_dx4")
        return [ctx.b.op("Reshape", [dx, ctx.b.ints([*x_shape, 1])], stem="average_pool_dx")]

    return rule


def _max_pool_reverse(original: Rule) -> Rule:
    from onnx_ad._build import attribute

    def rule(ctx: Any, node: Any, grads: list[Any]) -> list[Any]:
        x, y = node.input[0], node.output[0]
        shapes = _static(ctx, x, y)
        kernel = list(attribute(node, "kernel_shape", []))
        rank = len(kernel)
        strides = list(attribute(node, "strides", [1] * rank))
        dilations = list(attribute(node, "dilations", [1] * rank))
        pads = list(attribute(node, "pads", [0] * 2 * rank))
        if shapes is None or ctx.opset < 11 or attribute(node, "storage_order", 0) or any(pads) or any(
                d != 1 for d in dilations):
            return original(ctx, node, grads)
        x_shape, y_shape = shapes
        # Windows that tile the input exactly: each input element is the maximum of at most
        # one window, so scattering without accumulation (MaxUnpool) is exact, and
        # MaxUnpool's own output shape (which ONNX Runtime infers from the windows) is x's.
        tiled = all(s >= k and (o - 1) * s + k == n for k, s, o, n in zip(kernel, strides, y_shape[2:], x_shape[2:]))
        if not tiled:
            return original(ctx, node, grads)
        indices = _forward_indices(ctx, node)
        dy = ctx.b.op("Reshape", [ctx.full(grads[0], y), ctx.b.ints(y_shape)], stem="max_pool_dy")
        dx = ctx.b.op("MaxUnpool", [dy, indices, ctx.b.ints(x_shape)], kernel_shape=kernel, strides=strides,
                      stem="max_pool_dx4")
        return [ctx.b.op("Reshape", [dx, ctx.b.ints([*x_shape, 1])], stem="max_pool_dx")]

    return rule


def _forward_indices(ctx: Any, node: Any) -> str:
    """MaxPool's ``Indices`` output: the forward node gains it, so the pooling runs once."""
    if len(node.output) > 1 and node.output[1]:
        return str(node.output[1])
    replacement = onnx.NodeProto()
    replacement.CopyFrom(node)
    indices: str = ctx.b.name("max_pool_indices")
    replacement.output.append(indices)
    ctx.replace_primal(node, replacement)
    return indices
