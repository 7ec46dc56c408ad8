"""Labelled audit data: load once, check against the model once, then trust.

See docs/concepts.md, "Setting". :func:`load_data` reads ``.npz`` files (one array per model
input, or ``x``), image folders, numeric CSV tables and text (CSV or JSON lines with a
tokenizer); :func:`check_dataset` checks a :class:`Dataset` against the model's inputs and
converts it in one pass. Analyses receive checked data and do not check again.
"""

from __future__ import annotations

from .check import ROLE_ARRAY_NAMES, check_dataset, check_features
from .dataset import Dataset
from .loaders import IMAGE_SUFFIXES, LAYOUTS, load_data

__all__ = ["Dataset", "load_data", "check_dataset", "check_features", "IMAGE_SUFFIXES", "LAYOUTS",
           "ROLE_ARRAY_NAMES"]
