"""A mutable view of one graph for the twin's passes: nodes as a list, constants, fresh names.

The passes replace nodes by index in :attr:`GraphEdit.nodes` and write the list back once
(:meth:`GraphEdit.commit`); protobuf's repeated fields are never edited while iterated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["GraphEdit", "attributes", "is_standard"]


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values (strings decoded)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def is_standard(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


class GraphEdit:
    """The top-level graph of ``model``, edited in place by :meth:`commit`."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        self.initializers: dict[str, TensorProto] = {t.name: t for t in self.graph.initializer}
        self._taken: set[str] = set(self.initializers)
        self._taken.update(v.name for v in list(self.graph.input) + list(self.graph.output))
        for node in self.nodes:
            self._taken.update(list(node.input) + list(node.output))
        self.opset = next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)

    # ----------------------------------------------------------------- lookups

    def producers(self) -> dict[str, onnx.NodeProto]:
        return {o: n for n in self.nodes for o in n.output if o}

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        out: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def constant(self, name: str, producers: dict[str, onnx.NodeProto] | None = None) -> np.ndarray | None:
        """The value of an initializer or Constant-node output; None for anything computed."""
        if not name:
            return None
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = (producers if producers is not None else self.producers()).get(name)
        if node is not None and node.op_type == "Constant" and is_standard(node):
            attrs = {a.name: a for a in node.attribute}
            if "value" in attrs:
                return numpy_helper.to_array(attrs["value"].t)
            if "value_float" in attrs:
                return np.array(attrs["value_float"].f, dtype=np.float32)
            if "value_int" in attrs:
                return np.array(attrs["value_int"].i, dtype=np.int64)
        return None

    def elem_type(self, name: str, producers: dict[str, onnx.NodeProto] | None = None) -> int:
        """The element type of a constant or declared tensor; 0 when unknown."""
        if name in self.initializers:
            return int(self.initializers[name].data_type)
        for v in list(self.graph.input) + list(self.graph.value_info) + list(self.graph.output):
            if v.name == name and v.type.HasField("tensor_type"):
                return int(v.type.tensor_type.elem_type)
        node = (producers if producers is not None else self.producers()).get(name)
        if node is not None and node.op_type == "Constant":
            attrs = {a.name: a for a in node.attribute}
            if "value" in attrs:
                return int(attrs["value"].t.data_type)
        return 0

    # ----------------------------------------------------------------- building

    def fresh(self, stem: str) -> str:
        """A tensor name not yet used in the graph, ``stem`` when free."""
        name, k = stem, 1
        while name in self._taken:
            name = f"{stem}_{k}"
            k += 1
        self._taken.add(name)
        return name

    def is_free(self, name: str) -> bool:
        return name not in self._taken

    def claim(self, name: str) -> None:
        self._taken.add(name)

    def add_initializer(self, value: np.ndarray, name: str) -> str:
        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = self.graph.initializer[len(self.graph.initializer) - 1]
        self._taken.add(name)
        return name

    def scalar(self, value: float | int, dtype: Any, stem: str) -> str:
        return self.add_initializer(np.array(value, dtype=dtype), self.fresh(stem))

    @staticmethod
    def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "", domain: str = "",
             **attrs: Any) -> onnx.NodeProto:
        return helper.make_node(op_type, list(inputs), list(outputs), name=name or None, domain=domain or None,
                                **attrs)

    # ----------------------------------------------------------------- writing back

    def rename_input(self, old: str, new: str) -> None:
        """Point every reader of ``old`` (nodes and graph outputs stay as they are) at ``new``."""
        for n in self.nodes:
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new

    def commit(self, outputs: Iterable[str] | None = None) -> None:
        """Write the node list back, keeping only what ``outputs`` (default: the graph outputs) need."""
        wanted = set(outputs) if outputs is not None else {o.name for o in self.graph.output}
        kept = []
        for node in reversed(self.nodes):
            if any(o in wanted for o in node.output):
                kept.append(node)
                wanted.update(i for i in node.input if i)
                for attr in node.attribute:  # subgraphs may read outer-scope values
                    for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                        wanted.update(i for n in g.node for i in n.input if i)
        kept.reverse()
        del self.graph.node[:]
        self.graph.node.extend(kept)
        inits = [t for t in self.graph.initializer if t.name in wanted]
        dropped = {t.name for t in self.graph.initializer} - wanted
        del self.graph.initializer[:]
        self.graph.initializer.extend(inits)
        inputs = [v for v in self.graph.input if v.name not in dropped]  # weights listed as inputs (IR < 4)
        del self.graph.input[:]
        self.graph.input.extend(inputs)
        self.nodes = list(self.graph.node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        names = {v.name for v in self.graph.input} | wanted
        infos = [v for v in self.graph.value_info if v.name in names]
        del self.graph.value_info[:]
        self.graph.value_info.extend(infos)
