"""Check data against a model once, at the boundary; analyses trust what they receive.

See docs/concepts.md, "Setting".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from auditor.errors import DataError

from .dataset import Dataset

if TYPE_CHECKING:
    from auditor.model import Model, ModelInput

__all__ = ["check_dataset", "check_features", "ROLE_ARRAY_NAMES"]


def _shape_text(shape: Sequence[int | None]) -> str:
    """``(1, 8, 8)``, with ``?`` for a dynamic dim."""
    parts = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _fits(sample: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """Whether a sample shape matches the model's (``None`` matches any size)."""
    return len(sample) == len(expected) and all(
        e is None or e == s for s, e in zip(sample, expected, strict=True)
    )


def _shape_hint(sample: tuple[int, ...], expected: tuple[int | None, ...]) -> str:
    """What to do about a sample shape the model does not take."""
    if len(sample) == 3 and len(expected) == 3:
        c, h, w = sample
        if _fits((h, w, c), expected):
            return "the data look NCHW and the model NHWC: load images with --layout NHWC or transpose x"
        if _fits((sample[2], sample[0], sample[1]), expected):
            return "the data look NHWC and the model NCHW: load images with --layout NCHW or transpose x"
    if all(e is not None for e in expected) and math.prod(sample) == math.prod(
        e for e in expected if e is not None
    ):
        dims = ", ".join(str(e) for e in expected)
        return f"it has as many values per sample: reshape x to (N, {dims})"
    return "reshape the data to the model's input"


#: The names Hugging Face tokenizers give the arrays of each input role; data arrays not
#: named after a model input are matched to it by these.
ROLE_ARRAY_NAMES = {"token_ids": "input_ids", "attention_mask": "attention_mask",
                    "token_type_ids": "token_type_ids", "position_ids": "position_ids"}


def check_dataset(data: Dataset, model: Model, *, class_names: Sequence[str] | None = None,
                  name: str = "data") -> Dataset:
    """Check ``data`` against the model's inputs and classes; convert it once.

    Parameters
    ----------
    data : Dataset
    model : Model
    class_names : sequence of str, optional
        Names to attach; they must be K names and agree with any names the data carry.
    name : str, default="data"
        What to call the data in messages ("data", "gradient data").

    Returns
    -------
    Dataset
        Arrays keyed by the model's input names, in input order, each cast to its input's
        dtype; ``checked_for`` set, so analyses receiving it do not check again. ``data``
        itself when it was already checked for this model.

    Raises
    ------
    DataError
        An input cannot be filled from the data, a sample shape does not fit, a label is
        outside 0..K-1, there are more or fewer names than classes, or the data hold NaN,
        inf or values the input type cannot hold.

    Notes
    -----
    Arrays fill the inputs by input name; else by the names Hugging Face tokenizers use
    for each input role (:data:`ROLE_ARRAY_NAMES`); a single unnamed array fills the
    primary input. An attention mask, token type ids or position ids the data lack are
    made as a Hugging Face model makes them when the argument is omitted (ones, zeros,
    ``0..T-1``), and the data's ``notes`` say so. Classes with no samples are allowed;
    they get NaN entries.
    """
    if data.checked_for == model.signature and class_names is None:
        return data
    features, notes = check_features(data.features, model, name=name)
    n_classes = model.n_classes
    y = data.y
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} has {int(bad.sum())} of {len(y)} labels outside 0..{n_classes - 1} (first: "
            f"{int(y[first])} at sample {first}); the model has {n_classes} classes, so labels must be "
            f"0..{n_classes - 1}")
    names = _class_names(data, class_names, n_classes, name)
    return Dataset(features, y, names, data.source, data.texts, (*data.notes, *notes),
                   checked_for=model.signature)


def _class_names(data: Dataset, given: Sequence[str] | None, n_classes: int, name: str) -> tuple[str, ...] | None:
    if data.class_names is not None and len(data.class_names) > n_classes:
        raise DataError(f"{name} names {len(data.class_names)} classes but the model has {n_classes}; give "
                        f"{n_classes} class names or use data with the model's classes")
    if given is None:
        return data.class_names
    names = tuple(str(n) for n in given)
    if len(names) != n_classes:
        raise DataError(f"{len(names)} class names given but the model has {n_classes} classes; give one name per "
                        "class, in label order")
    if data.class_names is not None:
        clash = [i for i, n in enumerate(data.class_names) if n != names[i]]
        if clash:
            i = clash[0]
            raise DataError(f"{name} calls class {i} '{data.class_names[i]}' but the class names given call it "
                            f"'{names[i]}'; make the label order agree")
    return names


def check_features(arrays: Mapping[str, np.ndarray], model: Model, *,
                   name: str = "data") -> tuple[dict[str, np.ndarray], list[str]]:
    """The model's inputs filled from ``arrays`` and converted; notes on what was filled.

    The unlabelled half of :func:`check_dataset` (also used to predict samples without
    labels). See its Notes for how arrays are matched to inputs.
    """
    matched = _match_inputs(arrays, model, name)
    n = len(next(iter(arrays.values())))
    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for inp in model.inputs:
        value = matched.get(inp.name)
        if value is None:
            value = _default(inp, matched, n)
            notes.append(f"input '{inp.name}' was not in the {name}: filled as a model fills an omitted "
                         f"{inp.role} ({_FILL_TEXT[inp.role]})")
        out[inp.name] = _convert(value, inp, name, model)
    _check_lengths(out, model, name)
    return out, notes


def _match_inputs(arrays: Mapping[str, np.ndarray], model: Model, name: str) -> dict[str, np.ndarray]:
    """Which array fills which input; fillable inputs may stay unmatched. Names the missing ones."""
    matched: dict[str, np.ndarray] = {}
    unused = dict(arrays)
    for inp in model.inputs:
        for key in (inp.name, ROLE_ARRAY_NAMES.get(inp.role)):
            if key is not None and key in unused:
                matched[inp.name] = unused.pop(key)
                break
    if model.input_name not in matched and len(arrays) == 1 and unused:
        matched[model.input_name] = unused.popitem()[1]
    missing = [i.name for i in model.inputs if i.name not in matched and i.role not in _FILLABLE]
    if missing:
        have = ", ".join(arrays) or "none"
        raise DataError(
            f"the model's input{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} cannot be "
            f"filled from the {name} (its arrays: {have}); give one array per model input, named after it "
            "(`auditor inspect MODEL` lists the inputs), e.g. np.savez(path, y=..., " +
            ", ".join(f"{m}=..." for m in missing) + ")")
    return matched


_FILL_TEXT = {"attention_mask": "ones", "token_type_ids": "zeros", "position_ids": "0..T-1"}
_FILLABLE = frozenset(_FILL_TEXT)


def _default(inp: ModelInput, matched: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """An omitted mask, token type or position input, shaped like the token ids."""
    like = next((a for a in matched.values() if a.ndim == len(inp.shape)), None)
    if like is not None:
        shape = like.shape
    elif all(d is not None for d in inp.sample_shape):
        shape = (n, *[int(d) for d in inp.sample_shape if d is not None])
    else:
        raise DataError(f"cannot make input '{inp.name}' ({inp.role}): no array in the data has its shape; "
                        f"give '{inp.name}' in the data")
    if inp.role == "attention_mask":
        return np.ones(shape, dtype=np.int64)
    if inp.role == "position_ids":
        return np.broadcast_to(np.arange(shape[-1], dtype=np.int64), shape)
    return np.zeros(shape, dtype=np.int64)


def _convert(value: np.ndarray, inp: ModelInput, name: str, model: Model) -> np.ndarray:
    """Check one array's sample shape and values against its input; cast to the input dtype."""
    sample = tuple(int(s) for s in value.shape[1:])
    expected = tuple(None if d is None else int(d) for d in inp.sample_shape)
    label = f"{name} x" if len(model.inputs) == 1 else f"{name} array for input '{inp.name}'"
    if not _fits(sample, expected):
        where = f"model input '{inp.name}'"
        raise DataError(f"{label} has sample shape {_shape_text(sample)}, {where} expects "
                        f"{_shape_text(expected)} (batch axis excluded); {_shape_hint(sample, expected)}")
    dtype = inp.dtype
    if value.dtype.kind == "f":
        finite = np.isfinite(value.reshape(len(value), -1))
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            raise DataError(f"{label} holds {int(finite.size - np.count_nonzero(finite))} non-finite values "
                            f"(NaN or inf) in {len(rows)} samples, first in sample {int(rows[0])}; clean or drop "
                            "those samples")
    if model.deployed_input_types.get(inp.name) == "float16" and value.size:  # the graph as exported takes fp16
        largest = float(np.abs(value).max())
        if largest > float(np.finfo(np.float16).max):
            raise DataError(f"{label} overflows float16, the exported model's input type (largest magnitude "
                            f"{largest:.3g}); scale the data to the model's input range")
    if value.dtype == dtype:
        return value
    if dtype.kind == "f":
        with np.errstate(over="ignore"):  # overflow is reported below, as a DataError
            cast = value.astype(dtype)
        if not np.isfinite(cast).all():
            raise DataError(f"{label} overflows {dtype} (largest magnitude {float(np.abs(value).max()):.3g}); "
                            "scale the data to the model's input range")
        return cast
    if value.dtype.kind == "f" and not np.array_equal(value, np.round(value)):
        raise DataError(f"{label} holds non-integer values but input '{inp.name}' takes {dtype}; give integer "
                        f"{inp.role.replace('_', ' ')}")
    if dtype != np.bool_ and value.size:
        info = np.iinfo(dtype)
        low, high = value.min(), value.max()
        if low < info.min or high > info.max:
            raise DataError(f"{label} holds values {low}..{high} outside {dtype}'s range; check the data")
    return value.astype(dtype)


def _check_lengths(features: Mapping[str, np.ndarray], model: Model, name: str) -> None:
    """Token-level inputs of one sample must share their sequence length."""
    tokens = {i.name: features[i.name].shape[1:] for i in model.inputs if i.role != "features"}
    if len(set(tokens.values())) > 1:
        shown = ", ".join(f"{n} {_shape_text(s)}" for n, s in tokens.items())
        raise DataError(f"{name}: the token-level arrays differ in shape ({shown}); tokenise every input to the "
                        "same sequence length")
