"""Load an exported ONNX classifier: find its data input, its logits and its parameters θ.

See docs/concepts.md, "Setting", for the rules implemented here. Everything the later stages
need to know about a model is decided once, in :func:`load_model`, and held by a frozen
:class:`Model`. The model's graph is brought into one canonical form on the way in (see
:func:`auditor.graph.canonicalize`): Constant-node and constant-subgraph weights become
initializers named after the tensor they produce, older opsets are converted, and the
weights are no longer listed among the graph inputs. Later stages only ever see that form.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ModelError
from .graph import FLOAT_TYPES, canonicalize, opset_of
from .inputs import INPUT_ROLES, ModelInput, data_inputs, declared_dims, input_layout, primary_input, probe_feeds
from .twin import float_twin

__all__ = ["Model", "ModelInput", "Parameter", "load_model", "probe_feeds", "LOGITS_KINDS", "INPUT_ROLES"]

#: How the logits are read from the model (docs/concepts.md, "Setting").
LOGITS_KINDS = ("logits", "softmax_input", "probabilities", "sigmoid")
# Operand positions that hold fixed statistics or configuration, never parameters.
_NON_PARAMETER_INPUTS: dict[str, set[int]] = {
    "BatchNormalization": {3, 4},  # running mean / var: fixed statistics
    "QuantizeLinear": {1, 2},  # activation scale and zero point of a kept Q/DQ pair
    "DequantizeLinear": {1, 2},
    "Resize": {1, 2, 3},
    "Upsample": {1},
    "Pad": {1, 2, 3},
    "Clip": {1, 2},
    "Slice": {1, 2, 3, 4},
    "Reshape": {1},
    "Expand": {1},
    "Tile": {1},
    "ConstantOfShape": {0},
    "Range": {0, 1, 2},
}
# Ops a logits tensor can pass through unchanged on its way to an output.
_TRANSPARENT = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


@dataclass(frozen=True)
class Parameter:
    """One parameter tensor of θ.

    Attributes
    ----------
    name : str
        Initializer name in the canonical graph (the Constant node's or constant
        subgraph's output name when the weight was not an initializer in the file).
    shape : tuple of int
    source : {"initializer", "constant", "subgraph"}
        Where the weight sat in the exported file.
    consumer : str
        Name of the first node that reads it (its op type when the node has no name).
    consumer_op : str
        Op type of that node.
    output_axis : int
        Axis holding one output filter / unit, for filter normalisation (docs/concepts.md,
        "Class ego direction").
    one_dimensional : bool
        True when the tensor has at most one non-singleton dimension (biases, norm
        scale/shift, ``[1, C, 1, 1]`` constants).
    dtype : numpy.dtype
        Element type in the graph (float32 for every model except float64 ones).
    """

    name: str
    shape: tuple[int, ...]
    source: str
    consumer: str
    consumer_op: str
    output_axis: int
    one_dimensional: bool
    dtype: np.dtype = field(default=np.dtype(np.float32))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "source": self.source,
                "consumer": self.consumer, "consumer_op": self.consumer_op,
                "output_axis": self.output_axis, "one_dimensional": self.one_dimensional, "dtype": str(self.dtype)}


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded classifier, ready for the later stages.

    Attributes
    ----------
    path : str
        The file it came from.
    proto : onnx.ModelProto
        The canonical graph (see the module docstring). Treat as read-only.
    inputs : tuple of ModelInput
        Every data input, in graph order (one for most image and tabular models; token
        ids, attention mask and token type ids for a text model).
    input_name : str
        The primary input: the first float input, else the token ids, else the first.
    input_shape : tuple of (int or None)
        Declared shape of the primary input, batch axis first; ``None`` for a dynamic
        dimension.
    input_dtype : numpy.dtype
        Element type of the primary input.
    layout : {"NCHW", "NHWC", "features", "tokens", "other"}
        A guess from the primary input, for messages and image loading.
    output_name : str
        The graph output the logits are read from.
    logits_name : str
        The tensor holding the logits (the Softmax input, or the output itself).
    logits_kind : {"logits", "softmax_input", "probabilities", "sigmoid"}
    n_classes : int
        K.
    parameters : tuple of Parameter
        θ, in graph order.
    fixed_batch : int or None
        The batch size baked into the model, if any (then evaluation runs that many
        samples per call).
    opset, ir_version, original_opset, original_ir_version : int
    producer : str
    op_types : dict of str to int
        Op counts of the exported graph.
    excluded : tuple of str
        Tensors left out of θ on request.
    sha256 : str
        Hash of the model file.
    notes : tuple of str
        What loading changed (for the report's method section).
    precision : str
        What the export was: "float32", or "float16", "float16-io32", "int8-qdq",
        "int8-weight-only", "int8-qoperator", "int8-dynamic" (see :mod:`auditor.twin`).
    deployed : onnx.ModelProto or None
        The graph as exported, when ``proto`` is its float32 twin: base metrics come from it.
    twin : mapping
        :meth:`auditor.twin.Twin.to_dict` of the twin (empty for float32 exports).
    deployed_input_types : mapping of str to str
        Element type of each input of the deployed graph (it may take float16).
    session_config : mapping of str to str
        ONNX Runtime session config entries every session of the twin needs (a QDQ twin
        must run op by op; see :mod:`auditor.twin`).
    """

    path: str
    proto: onnx.ModelProto
    inputs: tuple[ModelInput, ...]
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: np.dtype
    layout: str
    output_name: str
    logits_name: str
    logits_kind: str
    n_classes: int
    parameters: tuple[Parameter, ...]
    fixed_batch: int | None
    opset: int
    ir_version: int
    original_opset: int
    original_ir_version: int
    producer: str
    op_types: Mapping[str, int]
    excluded: tuple[str, ...] = ()
    sha256: str = ""
    notes: tuple[str, ...] = field(default=())
    precision: str = "float32"
    deployed: onnx.ModelProto | None = None
    twin: Mapping[str, Any] = field(default_factory=dict)
    deployed_input_types: Mapping[str, str] = field(default_factory=dict)
    session_config: Mapping[str, str] = field(default_factory=dict)

    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def n_parameters(self) -> int:
        return sum(p.size for p in self.parameters)

    @property
    def signature(self) -> str:
        """What data checked for this model must match: its inputs and K (see check_dataset)."""
        return repr((tuple((i.name, i.shape, i.dtype.str) for i in self.inputs), self.n_classes))

    def input(self, name: str) -> ModelInput:
        """The data input called ``name``."""
        return next(i for i in self.inputs if i.name == name)

    def weights(self) -> dict[str, np.ndarray]:
        """θ*: the exported values of every parameter, by name (fresh float32 copies)."""
        wanted = set(self.parameter_names)
        return {t.name: numpy_helper.to_array(t).astype(np.float32)
                for t in self.proto.graph.initializer if t.name in wanted}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (what ``auditor inspect`` prints)."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "producer": self.producer,
            "opset": self.original_opset,
            "ir_version": self.original_ir_version,
            "canonical_opset": self.opset,
            "input": {**self.input(self.input_name).to_dict(), "layout": self.layout},
            "inputs": [i.to_dict() for i in self.inputs],
            "output": self.output_name,
            "logits": {"tensor": self.logits_name, "kind": self.logits_kind},
            "n_classes": self.n_classes,
            "fixed_batch": self.fixed_batch,
            "n_parameters": self.n_parameters,
            "parameters": [p.to_dict() for p in self.parameters],
            "excluded": list(self.excluded),
            "op_types": dict(sorted(self.op_types.items())),
            "notes": list(self.notes),
            "precision": self.precision,
            "twin": dict(self.twin),
        }


def load_model(path: str | os.PathLike[str], *, exclude: Sequence[str] = ()) -> Model:
    """Load and validate an ONNX classifier.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file. Weights in external data files next to it load too.
    exclude : sequence of str, default=()
        Parameter names to leave out of θ (e.g. a preprocessing mean/std baked into the
        graph). An unknown name is an error.

    Returns
    -------
    Model

    Raises
    ------
    ModelError
        The file is missing, not ONNX, has no float input, or no ``[N, K]`` output.

    Examples
    --------
    >>> from auditor.demo import demo_paths
    >>> model = load_model(demo_paths().model)
    >>> model.n_classes
    10
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist; check the path")
    if path.is_dir():
        raise ModelError(f"'{path}' is a directory; give the path of an .onnx file")
    raw = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(raw)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ModelError(
            f"'{path}' is not an ONNX model (protobuf could not parse it: {err}); "
            "export the classifier to ONNX first") from err
    if not proto.graph.node:
        raise ModelError(f"'{path}' is not an ONNX model (it has no graph nodes); "
                         "export the classifier to ONNX first")
    _load_external_data(proto, path)

    original_opset = opset_of(proto)
    original_ir = proto.ir_version
    op_types = Counter(n.op_type for n in proto.graph.node)
    producer = " ".join(x for x in (proto.producer_name, proto.producer_version) if x) or "unknown"
    twin = float_twin(proto)  # fp16 and int8 exports: a float32 graph computing the same function
    deployed = proto if twin.changed else None
    proto = twin.proto

    output_name, logits_name, logits_kind = _find_logits(proto, path)

    canonical, notes, sources = canonicalize(proto, logits_name=logits_name)
    inputs = data_inputs(canonical, path)
    primary = primary_input(inputs)
    input_name, input_shape, input_dtype = primary.name, primary.shape, primary.dtype
    if logits_kind == "probabilities" and not _looks_like_probabilities(canonical, inputs, output_name):
        logits_kind = "logits"
    parameters = _parameters(canonical, logits_name, exclude, sources)
    if not parameters:
        raise ModelError(f"'{path}' has no floating-point weights that the logits depend on; "
                         "there is nothing to audit")
    n_classes = _n_classes(canonical, logits_name, logits_kind, inputs)
    if n_classes < 2:
        raise ModelError(f"'{path}': output '{output_name}' gives {n_classes} class; a classifier "
                         "needs K >= 2 classes ([N, K] logits or probabilities, or one sigmoid)")
    fixed = input_shape[0] if input_shape and isinstance(input_shape[0], int) else None
    notes = [*twin.notes, *notes]
    return Model(
        path=str(path), proto=canonical, inputs=inputs, input_name=input_name, input_shape=input_shape,
        input_dtype=input_dtype, layout=input_layout(primary), output_name=output_name,
        logits_name=logits_name, logits_kind=logits_kind, n_classes=n_classes,
        parameters=parameters, fixed_batch=fixed, opset=opset_of(canonical),
        ir_version=canonical.ir_version, original_opset=original_opset,
        original_ir_version=original_ir, producer=producer, op_types=dict(op_types),
        excluded=tuple(exclude), sha256=hashlib.sha256(raw).hexdigest(), notes=tuple(notes),
        precision=twin.kind, deployed=deployed, twin=twin.to_dict() if twin.changed else {},
        deployed_input_types=dict(twin.input_types), session_config=dict(twin.session_config))


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read weights kept in external files; only files inside the model's folder are read."""
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        detail = str(err).strip().rstrip(".")
        if "points outside the directory" in detail:
            raise ModelError(f"the weights of '{path}' point to an external data file outside the model's folder "
                             f"({detail}); the auditor reads only files next to the model: move the data file "
                             "there and save the model again with that location") from err
        raise ModelError(f"the weights of '{path}' live in external data files that could not be read ({detail}); "
                         "keep them next to the model file") from err


def _find_logits(proto: onnx.ModelProto, path: Path) -> tuple[str, str, str]:
    """Pick the float output and trace back to the logits (docs/concepts.md, "Setting")."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    floats = [v for v in proto.graph.output if v.type.tensor_type.elem_type in FLOAT_TYPES]
    if not floats:
        raise ModelError(f"'{path}' has no floating-point output (outputs: "
                         f"{', '.join(v.name for v in proto.graph.output)}); the auditor needs "
                         "[N, K] logits or probabilities")

    def shape_ok(v: onnx.ValueInfoProto) -> bool:
        dims = declared_dims(v)
        if not dims:
            return True  # undeclared; checked later by running shape inference
        return len(dims) == 2 or (len(dims) == 4 and dims[2:] == (1, 1))

    candidates = [v for v in floats if shape_ok(v)]
    if not candidates:
        shapes = ", ".join(f"{v.name} {list(declared_dims(v))}" for v in floats)
        raise ModelError(f"'{path}': no output is shaped [N, K] (float outputs: {shapes}); the "
                         "auditor needs class logits or probabilities, [N, K] or [N, K, 1, 1]")
    # Prefer an output that is (or leads back to) logits over a probability output.
    ranked = sorted(candidates, key=lambda v: ("prob" in v.name.lower(), 0))
    out = ranked[0]
    name = out.name
    while name in producers and producers[name].op_type in _TRANSPARENT:
        node = producers[name]
        if node.op_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") and node.input[0] not in producers:
            break
        name = node.input[0]
    node = producers.get(name)
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        return out.name, node.input[0], "softmax_input"
    if node is not None and node.op_type == "Sigmoid" and declared_dims(out)[1:2] == (1,):
        return out.name, node.input[0], "sigmoid"
    dims = declared_dims(out)
    if node is not None and node.op_type == "Sigmoid" and (not dims or dims[1] is None):
        return out.name, node.input[0], "sigmoid"
    # Probabilities with no Softmax upstream are told apart from logits by running the
    # model (load_model calls _looks_like_probabilities on the canonical graph).
    return out.name, out.name, "probabilities"


def _looks_like_probabilities(proto: onnx.ModelProto, inputs: Sequence[ModelInput], output: str) -> bool:
    """Probabilities with no Softmax upstream: rows in [0, 1] summing to 1 on made-up inputs.

    Names are no guide (model-zoo outputs called "prob" hold logits, and the reverse), so
    the model is run on a few made-up inputs (:func:`probe_feeds`). If it cannot run here,
    the name decides; the runtime says later why it cannot run.
    """
    from .runtime import run_once

    batch = inputs[0].shape[0] or 4
    try:
        p = run_once(proto, probe_feeds(inputs, batch), output)
    except Exception:  # noqa: BLE001 - any runtime failure: fall back on the name
        return "prob" in output.lower()
    p = np.asarray(p, dtype=np.float64).reshape(batch, -1)
    return bool(p.shape[1] > 1 and np.all(p >= -1e-6) and np.all(p <= 1 + 1e-6)
                and np.allclose(p.sum(axis=1), 1.0, atol=1e-3))


def _parameters(proto: onnx.ModelProto, logits_name: str, exclude: Sequence[str],
                sources: Mapping[str, str]) -> tuple[Parameter, ...]:
    """θ by the operational rule of docs/concepts.md, on the canonical graph."""
    graph = proto.graph
    producers = {o: n for n in graph.node for o in n.output}
    # Tensors the logits depend on.
    needed: set[str] = set()
    stack = [logits_name]
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        node = producers.get(t)
        if node is not None:
            stack.extend(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs may read outer-scope values
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    stack.extend(i for n in g.node for i in n.input if i)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        if not any(o in needed for o in node.output):
            continue
        for idx, i in enumerate(node.input):
            consumers.setdefault(i, []).append((node, idx))
    params = []
    unknown = set(exclude)
    for t in graph.initializer:
        unknown.discard(t.name)
        if t.name not in needed or t.data_type not in FLOAT_TYPES or t.name in exclude:
            continue
        shape = tuple(int(d) for d in t.dims)
        if int(np.prod(shape, dtype=np.int64)) < 2:
            continue
        uses = consumers.get(t.name, [])
        if not uses or all(idx in _NON_PARAMETER_INPUTS.get(n.op_type, ()) for n, idx in uses):
            continue
        node, idx = next((n, i) for n, i in uses if i not in _NON_PARAMETER_INPUTS.get(n.op_type, ()))
        params.append(Parameter(
            name=t.name, shape=shape, source=sources.get(t.name, "initializer"),
            consumer=node.name or node.op_type, consumer_op=node.op_type,
            output_axis=_output_axis(node, idx, len(shape)),
            one_dimensional=sum(d > 1 for d in shape) <= 1,
            dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))))
    if unknown:
        raise ModelError(f"cannot exclude {sorted(unknown)}: no such tensor in the model; "
                         "`auditor inspect MODEL` lists the parameter names")
    return tuple(params)


def _output_axis(node: onnx.NodeProto, index: int, rank: int) -> int:
    """The axis of one output filter/unit (docs/concepts.md, "Class ego direction")."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv" and index == 1:
        return 0
    if node.op_type == "ConvTranspose" and index == 1:
        return 1 if rank > 1 else 0
    if node.op_type == "Gemm" and index == 1:
        return 0 if attrs.get("transB", 0) else min(1, rank - 1)
    if node.op_type == "Gemm" and index == 0:
        return min(1, rank - 1) if attrs.get("transA", 0) else 0
    if node.op_type == "MatMul":
        return rank - 1
    return 0


def _n_classes(proto: onnx.ModelProto, logits_name: str, kind: str, inputs: Sequence[ModelInput]) -> int:
    """K from the declared/inferred logits shape, else from one run on made-up inputs."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is best effort here
        inferred = proto
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        if v.name == logits_name:
            dims = declared_dims(v)
            if len(dims) >= 2 and dims[1] is not None:
                return 2 if kind == "sigmoid" and dims[1] == 1 else int(dims[1])
    from .runtime import run_once

    batch = inputs[0].shape[0] or 1
    try:
        z = run_once(proto, probe_feeds(inputs, batch), logits_name)
    except ModelError as err:
        raise ModelError(f"cannot tell the number of classes: tensor '{logits_name}' has no declared shape "
                         f"and the model did not run on made-up inputs ({err}); export with a declared "
                         "output shape [N, K]") from err
    k = int(np.prod(z.shape[1:]))
    return 2 if kind == "sigmoid" and k == 1 else k
