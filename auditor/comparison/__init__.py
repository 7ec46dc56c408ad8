"""Compare a candidate export with a baseline: did any class regress, which pairs got worse?

:func:`compare` runs both models over the same labelled data and returns a
:class:`CompareResult`: per-class accuracy and loss of both, the change with a paired
interval and an exact McNemar test (Holm-corrected across classes), the confusion change
and the samples that flipped from right to wrong, the agreement of the two outputs, and
optionally the interference pair scores of both. Its ``to_dict`` is the comparison's
``results.json`` (documented in ``docs/compare-schema.md``); :func:`auditor.save.save_compare`
writes it and the report.
"""

from __future__ import annotations

from .inputs import InputMatch, match_models, model_class_names
from .options import CompareOptions
from .parts import Agreement, ClassComparison, FlipExample, FlipGroup, InterferenceChange, OverallComparison
from .pipeline import compare
from .result import KIND, SCHEMA_VERSION, CompareResult

__all__ = ["compare", "CompareOptions", "CompareResult", "ClassComparison", "OverallComparison", "Agreement",
           "FlipGroup", "FlipExample", "InterferenceChange", "InputMatch", "match_models", "model_class_names",
           "SCHEMA_VERSION", "KIND"]
