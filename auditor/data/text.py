"""Read labelled text (CSV or JSON lines) and tokenise it for a text classifier.

The tokenizer is a Hugging Face ``tokenizers`` file (``tokenizer.json``, as
``tokenizer.save(path)`` or a fast ``transformers`` tokenizer's ``save_pretrained`` write
it); ``tokenizers`` is an optional extra (``pip install 'auditor[text]'``) imported only
here. The arrays are named as Hugging Face tokenizers name them (``input_ids``,
``attention_mask``, ``token_type_ids``), which :func:`auditor.data.check_dataset` matches
to the model's inputs by role; the attention mask marks the real tokens of each padded row.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import DataError, OptionError

from .dataset import Dataset
from .labels import label_ids

__all__ = ["TextOptions", "load_text", "TEXT_SUFFIXES", "PADDINGS"]

#: File suffixes read as text tables.
TEXT_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson"})
#: "longest": pad every row to the longest tokenised text (at most max_length);
#: "max_length": pad every row to max_length (for exports with a fixed sequence length).
PADDINGS = ("longest", "max_length")
# Padding tokens of the common tokenizer families, tried in order when the file sets none.
_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>", "[pad]")


@dataclass(frozen=True)
class TextOptions:
    """How text samples become token arrays.

    Attributes
    ----------
    columns : tuple of str
        One text column, or two for text pairs (the tokenizer's pair template joins them).
    tokenizer : str
        Path of a ``tokenizer.json``.
    max_length : int, default=128
        Longer texts are truncated to this many tokens (special tokens included).
    padding : {"longest", "max_length"}, default="longest"
    """

    columns: tuple[str, ...]
    tokenizer: str
    max_length: int = 128
    padding: str = "longest"

    def __post_init__(self) -> None:
        if not 1 <= len(self.columns) <= 2:
            raise OptionError(f"give one text column, or two for text pairs; got {len(self.columns)}: "
                              f"{list(self.columns)}")
        if self.max_length < 2:
            raise OptionError(f"--max-length must be >= 2 tokens, got {self.max_length}")
        if self.padding not in PADDINGS:
            raise OptionError(f"unknown padding {self.padding!r}; choose one of {', '.join(PADDINGS)}")


def load_text(path: Path, options: TextOptions, *, label_column: str = "label",
              class_names: list[str] | None = None) -> Dataset:
    """Read texts and labels from a CSV or JSON-lines file and tokenise them.

    Parameters
    ----------
    path : Path
        ``.csv`` with a header row, or ``.jsonl`` with one JSON object per line.
    options : TextOptions
    label_column : str, default="label"
    class_names : list of str, optional
        Fix the ids of string labels.

    Returns
    -------
    Dataset
        Arrays ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64,
        ``[N, T]``), the texts (pairs joined with `` ‖ ``), notes on truncation.

    Raises
    ------
    DataError
        Unreadable file, missing columns, bad JSON lines, no rows.
    OptionError
        Missing tokenizer or ``tokenizers`` package, no padding token, pairs without a
        pair template.
    """
    rows = _read_rows(path)
    columns = [*options.columns, label_column]
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DataError(f"'{path}' has no column {', '.join(repr(m) for m in missing)} (columns: "
                        f"{', '.join(rows[0])}); name the text column(s) with --text-column and the labels with "
                        "--label-column")
    texts = [[_cell(row, c, path, n) for c in options.columns] for n, row in enumerate(rows, start=1)]
    labels = np.array([_cell(row, label_column, path, n).strip() for n, row in enumerate(rows, start=1)])
    y, names = label_ids(labels, class_names, f"'{path}'")
    tokenizer = _tokenizer(options)
    inputs: list[Any] = [tuple(t) for t in texts] if len(options.columns) == 2 else [t[0] for t in texts]
    encodings = tokenizer.encode_batch(inputs)
    arrays = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
              "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
              "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
    truncated = sum(1 for e in encodings if e.overflowing)
    notes = [f"texts tokenised with '{options.tokenizer}' to {arrays['input_ids'].shape[1]} tokens "
             f"(padding: {options.padding}, max_length: {options.max_length})"]
    if truncated:
        notes.append(f"{truncated} of {len(encodings)} texts were longer than {options.max_length} tokens and were "
                     "truncated")
    shown = [" ‖ ".join(t) for t in texts]
    return Dataset(arrays, y, None if names is None else tuple(names), str(path), shown, notes)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows: list[dict[str, Any]] = [r for r in csv.DictReader(fh)
                                              if any(isinstance(v, str) and v.strip() for v in r.values())]
        else:
            rows = []
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"'{path}' line {n} is not JSON ({err.msg}); write one JSON object per "
                                        "line") from err
                    if not isinstance(obj, dict):
                        raise DataError(f"'{path}' line {n} is a JSON {type(obj).__name__}, not an object; write "
                                        'one object per line, e.g. {"text": "...", "label": "pos"}')
                    rows.append(obj)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"'{path}' is not a readable text table ({err}); save it as UTF-8") from err
    if not rows:
        raise DataError(f"'{path}' has no rows; expected one labelled text per row")
    return rows


def _cell(row: dict[str, Any], column: str, path: Path, n: int) -> str:
    value = row.get(column)
    if value is None:
        raise DataError(f"'{path}' row {n} has no value in column '{column}'; give every row a value")
    return value if isinstance(value, str) else str(value)


def _tokenizer(options: TextOptions) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise OptionError("reading text needs the tokenizers package: pip install 'auditor[text]'") from err
    path = Path(options.tokenizer)
    if not path.is_file():
        raise OptionError(f"tokenizer file '{path}' does not exist; give the tokenizer.json saved with the model "
                          "(tokenizer.save(path), or save_pretrained's tokenizer.json)")
    try:
        tokenizer = Tokenizer.from_file(os.fspath(path))
    except Exception as err:  # noqa: BLE001 - the Rust side raises a bare Exception
        raise OptionError(f"'{path}' is not a tokenizers file ({str(err).splitlines()[0][:200]}); give a "
                          "tokenizer.json written by Hugging Face tokenizers") from err
    if len(options.columns) == 2 and tokenizer.post_processor is None:
        raise OptionError(f"'{path}' has no pair template (post-processor), so two text columns cannot be joined "
                          "as the model was trained; give one text column or a tokenizer with a pair template")
    pad = tokenizer.padding
    pad_token = pad["pad_token"] if pad else next((t for t in _PAD_TOKENS if tokenizer.token_to_id(t) is not None),
                                                  None)
    if pad_token is None:
        raise OptionError(f"'{path}' defines no padding token and has none of {', '.join(_PAD_TOKENS)}; add one "
                          "with tokenizer.enable_padding(pad_token=...) and save the tokenizer again")
    pad_id = pad["pad_id"] if pad else tokenizer.token_to_id(pad_token)
    tokenizer.enable_truncation(max_length=options.max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token,
                             length=options.max_length if options.padding == "max_length" else None)
    return tokenizer


def text_options(columns: str | Sequence[str] | None, tokenizer: str | os.PathLike[str] | None,
                 max_length: int, padding: str) -> TextOptions | None:
    """``TextOptions`` from load_data's keywords, or None when no text column is given."""
    if columns is None or (not isinstance(columns, str) and not columns):
        if tokenizer is not None:
            raise OptionError("--tokenizer needs --text-column: the column(s) holding the text")
        return None
    if tokenizer is None:
        raise OptionError("text data need a tokenizer: give --tokenizer tokenizer.json (the one saved with the model)")
    cols = (columns,) if isinstance(columns, str) else tuple(columns)
    return TextOptions(cols, os.fspath(tokenizer), max_length, padding)
