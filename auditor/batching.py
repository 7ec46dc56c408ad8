"""Batches of a model's inputs as ONNX Runtime values: spans, padding, feeds on the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .errors import OptionError

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model

__all__ = ["batch_spans", "pad_batch", "run_batch_size", "feature_arrays", "batch_feeds"]


def _device_args(device: str) -> tuple[str, int]:
    return ("cuda", 0) if device == "cuda" else ("cpu", 0)


def _to_device(array: np.ndarray, device: str) -> ort.OrtValue:
    kind, index = _device_args(device)
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), kind, index)


def batch_spans(n: int, batch: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch, n)) for s in range(0, n, batch)]


def pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    pad = np.zeros((size - len(x), *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


def run_batch_size(model: Model, batch_size: int) -> int:
    if batch_size < 1:
        raise OptionError(f"batch size must be >= 1, got {batch_size}")
    return int(model.fixed_batch) if model.fixed_batch else int(batch_size)


def feature_arrays(model: Model, data: Dataset | np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's inputs from a data set, one array, or arrays by name (checked once)."""
    from .data import Dataset, check_features

    if isinstance(data, Dataset):
        if data.checked_for == model.signature:
            return dict(data.features)
        return check_features(data.features, model)[0]
    arrays = dict(data) if isinstance(data, Mapping) else {Dataset.UNNAMED: np.asarray(data)}
    return check_features(Dataset(arrays, np.zeros(len(next(iter(arrays.values()))), np.int64)).features,
                          model)[0]


def batch_feeds(model: Model, features: Mapping[str, np.ndarray], spans: Sequence[tuple[int, int]],
                 batch: int, device: str) -> list[dict[str, ort.OrtValue]]:
    """Each batch's inputs as device values; a fixed-batch model gets zero-padded batches."""
    fixed = bool(model.fixed_batch)
    return [{name: _to_device(pad_batch(a[s:e], batch) if fixed else a[s:e], device) for name, a in features.items()}
            for s, e in spans]
