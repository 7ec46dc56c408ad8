"""Can two exported models be compared on the same data? Match their classes and inputs.

Exports of one classifier differ in ways that do not matter for a comparison: input names
(``image`` vs ``input.1``), the batch axis (fixed at 1 in older exports), the input
precision (float16 inputs of a half-precision export). They must agree on what does: the
number of classes K, the class names where both carry them, and the shape of each sample.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditor.errors import ModelError
from auditor.model import Model, ModelInput

__all__ = ["InputMatch", "match_models", "model_class_names", "CLASS_NAME_KEYS"]

#: Model metadata keys (``metadata_props``) read as class names: a JSON list, a JSON object
#: of id to name (Hugging Face ``id2label``), or comma-separated names.
CLASS_NAME_KEYS = ("class_names", "classes", "labels", "id2label")


@dataclass(frozen=True)
class InputMatch:
    """Which candidate input takes the data of which baseline input, and what differs.

    Attributes
    ----------
    pairs : tuple of (str, str)
        ``(baseline input, candidate input)``, in the baseline's input order.
    differences : tuple of str
        What differs between the two models' inputs and batch axes (names, dtypes, a fixed
        batch), one phrase each; empty when nothing does.
    """

    pairs: tuple[tuple[str, str], ...]
    differences: tuple[str, ...]

    @property
    def line(self) -> str:
        """The differences as one line ("" when there are none)."""
        return "; ".join(self.differences)

    @property
    def renames(self) -> dict[str, str]:
        """Baseline input name -> candidate input name."""
        return dict(self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": [list(p) for p in self.pairs], "differences": list(self.differences)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputMatch:
        return cls(tuple((str(a), str(b)) for a, b in d["pairs"]), tuple(str(s) for s in d["differences"]))


def model_class_names(model: Model) -> tuple[str, ...] | None:
    """Class names stored in the model's metadata (see :data:`CLASS_NAME_KEYS`), if any."""
    props = {p.key: p.value for p in model.proto.metadata_props}
    for key in CLASS_NAME_KEYS:
        if key not in props:
            continue
        text = props[key].strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = [s.strip() for s in text.split(",")]
        if isinstance(value, dict):
            try:
                value = [value[k] for k in sorted(value, key=lambda k: int(k))]
            except ValueError:
                continue
        if isinstance(value, list) and len(value) == model.n_classes:
            return tuple(str(v) for v in value)
    return None


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _compatible(a: ModelInput, b: ModelInput) -> bool:
    sa, sb = a.sample_shape, b.sample_shape
    return len(sa) == len(sb) and all(x is None or y is None or x == y for x, y in zip(sa, sb))


def _deployed_type(model: Model, inp: ModelInput) -> str:
    """The input's element type in the graph as exported (a float16 export's twin takes float32)."""
    name = str(model.deployed_input_types.get(inp.name, inp.dtype))
    return {"float": "float32", "double": "float64"}.get(name, name)  # ONNX's names to numpy's


def _pair_inputs(baseline: Model, candidate: Model) -> list[tuple[ModelInput, ModelInput]]:
    """Pair inputs by name, then by role, then by order within a role."""
    pairs: list[tuple[ModelInput, ModelInput]] = []
    left = list(baseline.inputs)
    right = list(candidate.inputs)
    for a in list(left):
        b = next((x for x in right if x.name == a.name), None)
        if b is not None:
            pairs.append((a, b))
            left.remove(a)
            right.remove(b)
    for a in list(left):
        b = next((x for x in right if x.role == a.role), None)
        if b is not None:
            pairs.append((a, b))
            left.remove(a)
            right.remove(b)
    # Inputs a model can do without (a mask, token types, positions) may be missing on one side.
    fillable = {"attention_mask", "token_type_ids", "position_ids"}
    unpaired = [f"baseline input '{i.name}' ({i.role})" for i in left if i.role not in fillable] + \
               [f"candidate input '{i.name}' ({i.role})" for i in right if i.role not in fillable]
    if unpaired:
        raise ModelError(f"the two models do not take the same inputs: {', '.join(unpaired)} has no counterpart "
                         "in the other model; compare exports of the same classifier (`auditor inspect MODEL` "
                         "lists the inputs)")
    order = {i.name: n for n, i in enumerate(baseline.inputs)}
    return sorted(pairs, key=lambda p: order[p[0].name])


def match_models(baseline: Model, candidate: Model) -> InputMatch:
    """Check that two models can be compared on the same data; pair their inputs.

    Parameters
    ----------
    baseline, candidate : Model

    Returns
    -------
    InputMatch

    Raises
    ------
    ModelError
        The models differ in K or in the class names both carry in their metadata, an input
        of one has no counterpart in the other, or paired inputs take differently shaped
        samples.
    """
    if baseline.n_classes != candidate.n_classes:
        raise ModelError(f"the baseline has {baseline.n_classes} classes but the candidate has "
                         f"{candidate.n_classes}; compare two models of the same classes")
    names_b, names_c = model_class_names(baseline), model_class_names(candidate)
    if names_b is not None and names_c is not None and names_b != names_c:
        i = next(j for j, (x, y) in enumerate(zip(names_b, names_c)) if x != y)
        raise ModelError(f"the models name class {i} differently (baseline '{names_b[i]}', candidate "
                         f"'{names_c[i]}'); compare models with the same classes in the same order")
    pairs = _pair_inputs(baseline, candidate)
    differences: list[str] = []
    for a, b in pairs:
        if not _compatible(a, b):
            raise ModelError(f"baseline input '{a.name}' takes samples shaped {_shape_text(a.sample_shape)} but "
                             f"candidate input '{b.name}' takes {_shape_text(b.sample_shape)}; both models must "
                             "take the same data")
        if (a.dtype.kind == "f") != (b.dtype.kind == "f"):
            raise ModelError(f"baseline input '{a.name}' takes {a.dtype} but candidate input '{b.name}' takes "
                             f"{b.dtype}; both models must take the same kind of data")
        if a.name != b.name:
            differences.append(f"input '{a.name}' is '{b.name}' in the candidate")
        type_a, type_b = _deployed_type(baseline, a), _deployed_type(candidate, b)
        if type_a != type_b:
            differences.append(f"input '{a.name}' is {type_a} in the baseline, {type_b} in the candidate")
    paired = {a.name for a, _ in pairs} | {b.name for _, b in pairs}
    for who, model in (("baseline", baseline), ("candidate", candidate)):
        extra = [i.name for i in model.inputs if i.name not in paired]
        if extra:
            differences.append(f"only the {who} takes {', '.join(repr(e) for e in extra)} (filled as a model "
                               "fills an omitted input)")
    if baseline.fixed_batch != candidate.fixed_batch:
        for who, model in (("baseline", baseline), ("candidate", candidate)):
            if model.fixed_batch:
                differences.append(f"the {who}'s batch is fixed at {model.fixed_batch}")
    return InputMatch(tuple((a.name, b.name) for a, b in pairs), tuple(differences))
