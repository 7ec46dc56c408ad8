"""One graph edit: nodes to replace, the nodes replacing them, and new constants, applied once.

Like onnxruntime's ``fusion_base.py``, a rewrite walks ``graph.node`` without touching it,
records for each node it rewrites the list of nodes taking its place, and :meth:`Edit.apply`
rebuilds the node list in one pass at the end. Replacements keep the rewritten node's output
names, so every consumer, and every shape inferred for those tensors, stays valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Attributes", "Edit", "attributes", "opset", "differentiated"]


class Attributes:
    """A node's attributes as Python values (strings decoded), read with the type the op defines."""

    def __init__(self, node: onnx.NodeProto) -> None:
        self.values: dict[str, object] = {}
        for a in node.attribute:
            value = helper.get_attribute_value(a)
            self.values[a.name] = value.decode() if isinstance(value, bytes) else value

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def get_int(self, name: str, default: int) -> int:
        value = self.values.get(name, default)
        return value if isinstance(value, int) else default

    def get_float(self, name: str, default: float) -> float:
        value = self.values.get(name, default)
        return float(value) if isinstance(value, (int, float)) else default

    def get_str(self, name: str, default: str) -> str:
        value = self.values.get(name, default)
        return value if isinstance(value, str) else default

    def get_ints(self, name: str, default: Sequence[int]) -> list[int]:
        value = self.values.get(name)
        return [int(v) for v in value] if isinstance(value, list) else list(default)

    def get_floats(self, name: str, default: Sequence[float]) -> list[float]:
        value = self.values.get(name)
        return [float(v) for v in value] if isinstance(value, list) else list(default)

    def without(self, *names: str) -> dict[str, object]:
        """The attributes other than ``names``, to copy onto a new node."""
        return {k: v for k, v in self.values.items() if k not in names}

    def only(self, *names: str) -> dict[str, object]:
        """The attributes among ``names`` that the node sets."""
        return {k: v for k, v in self.values.items() if k in names}


def attributes(node: onnx.NodeProto) -> Attributes:
    """The node's attributes (see :class:`Attributes`)."""
    return Attributes(node)


def opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    return next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)


def differentiated(model: onnx.ModelProto, params: Set[str]) -> set[str]:
    """Every tensor that depends on a parameter: the values reverse mode carries an adjoint for."""
    depends = set(params)
    for node in model.graph.node:
        if any(i in depends for i in node.input):
            depends.update(o for o in node.output if o)
    return depends


class Edit:
    """Collects replacements for the nodes of one graph and applies them in one pass.

    Parameters
    ----------
    model : onnx.ModelProto
        Edited in place by :meth:`apply`. Shapes and element types are read from its
        ``value_info``, inputs, outputs and initializers as they are when the edit starts.
    stem : str
        Prefix of every name the edit creates (kept unique against the graph's names).
    """

    def __init__(self, model: onnx.ModelProto, stem: str) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = opset(model)
        self._stem = stem
        self._taken = {t.name for t in self.graph.initializer}
        self._taken.update(v.name for v in list(self.graph.input) + list(self.graph.output))
        self._taken.update(o for n in self.graph.node for o in list(n.output) + list(n.input))
        self._taken.update(n.name for n in self.graph.node if n.name)
        self._types: dict[str, tuple[int, list[int] | None]] = {}
        for v in list(self.graph.value_info) + list(self.graph.input) + list(self.graph.output):
            t = v.type.tensor_type
            dims = ([d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
                    if t.HasField("shape") else None)
            if t.elem_type:
                self._types[v.name] = (t.elem_type, dims)
        for init in self.graph.initializer:
            self._types[init.name] = (init.data_type, [int(d) for d in init.dims])
        # The node list is held here: protobuf hands out a new wrapper on every access, so only
        # wrappers kept alive have stable ids.
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        self._pending: list[onnx.NodeProto] = []
        self._replacements: dict[int, list[onnx.NodeProto]] = {}
        self._initializers: list[TensorProto] = []
        self._kept = 0
        self.count = 0

    # ------------------------------------------------------------------ what is known
    def shape(self, name: str) -> list[int] | None:
        """Dimensions of ``name`` (-1 where unknown), or None when even the rank is unknown."""
        known = self._types.get(name)
        return None if known is None else known[1]

    def static_shape(self, name: str) -> list[int] | None:
        """Dimensions of ``name`` when every one is known, else None."""
        dims = self.shape(name)
        return dims if dims is not None and all(d >= 0 for d in dims) else None

    def rank(self, name: str) -> int | None:
        dims = self.shape(name)
        return None if dims is None else len(dims)

    def elem_type(self, name: str) -> int | None:
        known = self._types.get(name)
        return None if known is None else known[0]

    def initializer(self, name: str) -> np.ndarray | None:
        """The value of an initializer of the original graph, or None."""
        for t in self.graph.initializer:
            if t.name == name:
                return numpy_helper.to_array(t)
        return None

    # ------------------------------------------------------------------ building
    def name(self, hint: str) -> str:
        """A fresh tensor name, ``<stem>/<hint>`` made unique."""
        return self._unique(f"{self._stem}/{hint}")

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name

    def ints(self, values: Sequence[int] | int, hint: str = "ints") -> str:
        """An int64 constant (a scalar when ``values`` is an int)."""
        name = self.name(hint)
        self._initializers.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def constant(self, value: np.ndarray, like: str, hint: str = "c") -> str:
        """A float constant of the element type of ``like`` (float32 when that is unknown)."""
        elem = self.elem_type(like)
        dtype = (helper.tensor_dtype_to_np_dtype(elem)
                 if elem in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16) else np.float32)
        name = self.name(hint)
        self._initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def scalar(self, value: float, like: str, hint: str = "c") -> str:
        """A float scalar of the element type of ``like``.

        When that type is unknown (the tensor comes out of a node shape inference could not
        see through), a float32 constant is cast to it with ``CastLike``.
        """
        elem = self.elem_type(like)
        name = self.name(hint)
        if elem in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
            dtype = helper.tensor_dtype_to_np_dtype(elem)
            self._initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
            return name
        self._initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return self.op("CastLike", [name, like], hint=hint + "_typed")

    def op(self, op_type: str, inputs: Sequence[str], *, out: str | None = None, hint: str | None = None,
           attrs: Mapping[str, object] | None = None, **more: object) -> str:
        """Append one node (attributes ``attrs`` and ``more``); return its output name."""
        output = out if out is not None else self.name(hint or op_type.lower())
        self.ops(op_type, inputs, [output], attrs=attrs, **more)
        return output

    def ops(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], *,
            attrs: Mapping[str, object] | None = None, **more: object) -> list[str]:
        """Append a node with several outputs (names given; "" for an omitted one)."""
        node = helper.make_node(op_type, list(inputs), list(outputs))
        node.attribute.extend(helper.make_attribute(k, v) for k, v in {**(attrs or {}), **more}.items())
        self._pending.append(node)
        return list(outputs)

    def reduce_mean(self, x: str, axes: Sequence[int], *, out: str | None = None) -> str:
        """ReduceMean over ``axes`` keeping them, in the form the model's opset reads."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints(list(axes), "axes")], out=out, keepdims=1)
        return self.op("ReduceMean", [x], out=out, axes=list(axes), keepdims=1)

    def identity(self, source: str, target: str) -> None:
        """Make ``target`` (an output of the rewritten node) a copy of ``source``."""
        if target:
            self.op("Identity", [source], out=target)

    def replace(self, node: onnx.NodeProto) -> None:
        """The nodes appended since the last call take ``node``'s place."""
        name = node.name or node.output[0]
        for k, new in enumerate(self._pending):
            if not new.name:
                new.name = self._unique(f"{name}/{self._stem}{k}")
        self._replacements[id(node)] = self._pending
        self._pending = []
        self._kept = len(self._initializers)
        self.count += 1

    def discard(self) -> None:
        """Forget what was appended since the last :meth:`replace` (the node stays as it is)."""
        self._pending = []
        del self._initializers[self._kept:]

    def apply(self) -> int:
        """Rebuild the graph once with every replacement; return the number of nodes rewritten."""
        if not self._replacements:
            return 0
        nodes: list[onnx.NodeProto] = []
        for node in self.nodes:
            nodes.extend(self._replacements.get(id(node), [node]))
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self.graph.initializer.extend(self._initializers)
        return self.count
