"""The data inputs of a model: which graph inputs take samples, what each holds, made-up feeds.

See docs/concepts.md, "Setting". A model may take several data inputs (a text model's token
ids, attention mask and token type ids); every graph input that is not a weight is one, and
its *role* is read from its type, its name and how the graph uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import ModelError
from .graph import FLOAT_TYPES

__all__ = ["INPUT_ROLES", "PROBE_LENGTH", "ModelInput", "data_inputs", "declared_dims", "input_layout", "primary_input",
           "probe_feeds"]

#: What a data input holds. "features": float (or integer) samples such as images, feature
#: vectors or embeddings; the others are the inputs of text models.
INPUT_ROLES = ("features", "token_ids", "attention_mask", "token_type_ids", "position_ids")
#: Length used for a dynamic non-batch axis when the model is run on made-up inputs at load time.
PROBE_LENGTH = 8


@dataclass(frozen=True)
class ModelInput:
    """One data input of the model (every graph input that is not a weight).

    Attributes
    ----------
    name : str
    shape : tuple of (int or None)
        Declared shape, batch axis first; ``None`` for a dynamic dimension (a dynamic
        sequence axis of a text model, say).
    dtype : numpy.dtype
    role : {"features", "token_ids", "attention_mask", "token_type_ids", "position_ids"}
        What the input holds, from its name and how the graph uses it. Data fill the
        inputs by name, or by role for arrays named as Hugging Face tokenizers name them
        (``input_ids``, ``attention_mask``, ``token_type_ids``, ``position_ids``).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    role: str

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """The shape without the batch axis."""
        return self.shape[1:]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": str(self.dtype), "role": self.role,
                "shape": [d if d is not None else "N" if i == 0 else "?" for i, d in enumerate(self.shape)]}


def declared_dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in t.shape.dim)


_INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
                  onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
                  onnx.TensorProto.BOOL}
# Name fragments that tell an integer input's role (Hugging Face and exporter conventions).
_ROLE_NAMES = (("attention_mask", ("mask",)), ("token_type_ids", ("token_type", "segment")),
               ("position_ids", ("position",)), ("token_ids", ("input_ids", "ids", "token")))


def data_inputs(proto: onnx.ModelProto, path: Path) -> tuple[ModelInput, ...]:
    """Every graph input that is not a weight, with its role."""
    inits = {t.name for t in proto.graph.initializer}
    values = [v for v in proto.graph.input if v.name not in inits]
    if not values:
        raise ModelError(f"'{path}' has no data input; the auditor needs a model that takes samples")
    gather_indices = {n.input[1] for n in proto.graph.node if n.op_type == "Gather" and len(n.input) > 1}
    out = []
    for v in values:
        elem = v.type.tensor_type.elem_type
        if elem not in FLOAT_TYPES and elem not in _INTEGER_TYPES:
            kind = onnx.TensorProto.DataType.Name(elem) if elem else "not a tensor"
            raise ModelError(f"'{path}': input '{v.name}' is {kind}; the auditor feeds numeric tensors only "
                             "(export the model with numeric inputs, e.g. token ids rather than strings)")
        shape = declared_dims(v)
        if not shape:
            raise ModelError(f"'{path}': input '{v.name}' has no declared shape; export with a "
                             "declared input shape (batch axis may be dynamic)")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        out.append(ModelInput(v.name, shape, dtype, _role(v.name, dtype, v.name in gather_indices)))
    return tuple(out)


def _role(name: str, dtype: np.dtype, gathers: bool) -> str:
    if dtype.kind == "f":
        return "features"
    lower = name.lower()
    for role, fragments in _ROLE_NAMES:
        if any(f in lower for f in fragments):
            return role
    return "token_ids" if gathers else "features"


def primary_input(inputs: Sequence[ModelInput]) -> ModelInput:
    """The input that carries the samples: the first float input, else the token ids."""
    for wanted in ("f", None):
        for i in inputs:
            if (wanted is None and i.role == "token_ids") or (wanted == "f" and i.dtype.kind == "f"):
                return i
    return inputs[0]


def probe_feeds(inputs: Sequence[ModelInput], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Made-up inputs to run a model once at load time (shape discovery, output checks).

    Float inputs get standard-normal values, token ids and token types zeros (valid in any
    vocabulary), attention masks ones and position ids ``0..T-1``; a dynamic non-batch axis
    gets :data:`PROBE_LENGTH`.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in inputs:
        shape = (batch, *[d if d is not None else PROBE_LENGTH for d in i.sample_shape])
        if i.dtype.kind == "f":
            value = rng.standard_normal(shape)
        elif i.role == "attention_mask":
            value = np.ones(shape)
        elif i.role == "position_ids" and len(shape) >= 2:
            value = np.broadcast_to(np.arange(shape[-1]), shape)
        else:
            value = np.zeros(shape)
        feeds[i.name] = np.ascontiguousarray(value.astype(i.dtype))
    return feeds


def input_layout(primary: ModelInput) -> str:
    shape = primary.shape
    if primary.role != "features":
        return "tokens"
    if len(shape) == 2:
        return "features"
    if len(shape) == 4:
        if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
            return "NCHW"
        if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            return "NHWC"
        return "NCHW" if shape[1] in (1, 3) else "other"
    return "other"
