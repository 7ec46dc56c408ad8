"""The deployed-model fixture zoo: model families as users export them (tests/fixtures/deployed).

Built by ``tests/fixtures/make_deployed.py``; the manifest ``deployed.json`` describes each model (family,
exporter, data inputs with their roles, logits, precision, float32 source, which initializers hold which
torch parameter). Does not import ``auditor``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEPLOYED", "MANIFEST", "deployed_entry", "deployed_names"]

DEPLOYED = Path(__file__).parent / "fixtures" / "deployed"
MANIFEST: list[dict[str, Any]] = (json.loads((DEPLOYED / "deployed.json").read_text())
                                  if (DEPLOYED / "deployed.json").exists() else [])


def deployed_names(**where: Any) -> list[str]:
    """Names of the entries whose fields equal the given values, e.g. ``deployed_names(reference="torch")``."""
    return [e["name"] for e in MANIFEST if all(e.get(k) == v for k, v in where.items())]


def deployed_entry(name: str) -> dict[str, Any]:
    """One manifest entry plus ``path``, ``feeds`` (input name -> array), ``y``, ``reference_logits``, ``class_names``.

    ``reference_logits`` (the data file's ``logits``) are those the builder checked the model against:
    torch's (float32 torch for the int8 and converted float16 models), or for the hand-built LRN networks
    the ONNX reference evaluator's in float64. ``logits`` stays the name of the logits tensor; ``class_names``
    may be None.
    """
    entry = dict(next(e for e in MANIFEST if e["name"] == name))
    entry["path"] = DEPLOYED / entry["file"]
    with np.load(DEPLOYED / entry["data"], allow_pickle=False) as f:
        entry["feeds"] = {i["name"]: f[i["name"]] for i in entry["inputs"]}
        entry["y"], entry["reference_logits"] = f["y"], f["logits"]
        entry["class_names"] = [str(c) for c in f["class_names"]] if "class_names" in f.files else None
    return entry
