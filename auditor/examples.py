"""A few samples of each confused pair, kept small enough for results.json and the report.

For image data a sample is kept as a thumbnail (at most :data:`THUMBNAIL_SIDE` pixels a
side, each image min-max scaled to 0..255); for text data as its text; for other data
(feature vectors) only its index, label and prediction. The report draws the thumbnails;
nothing here plots.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import Dataset
from .model import Model

__all__ = ["SamplePreview", "PairExamples", "confused_examples", "preview", "THUMBNAIL_SIDE", "PER_DIRECTION",
           "MAX_TEXT"]

#: Longest side of a thumbnail, pixels.
THUMBNAIL_SIDE = 48
#: Samples shown per direction of a pair (true a predicted b, and true b predicted a).
PER_DIRECTION = 3
#: Characters of a text kept for a preview.
MAX_TEXT = 300


@dataclass(frozen=True, eq=False)
class SamplePreview:
    """One audit sample as a reviewer sees it.

    Attributes
    ----------
    index : int
        Position in the audit data.
    true, predicted : int
        Its label and the model's prediction at θ*.
    text : str or None
        The sample's text (text data), cut to :data:`MAX_TEXT` characters.
    image : ndarray of shape (h, w, c), uint8, or None
        A thumbnail (image data); c is 1 or 3.
    """

    index: int
    true: int
    predicted: int
    text: str | None = None
    image: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        image = None if self.image is None else {"shape": list(self.image.shape),
                                                 "data": base64.b64encode(self.image.tobytes()).decode("ascii")}
        return {"index": self.index, "true": self.true, "predicted": self.predicted, "text": self.text,
                "image": image}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplePreview:
        image = None
        if d.get("image") is not None:
            shape = tuple(int(v) for v in d["image"]["shape"])
            image = np.frombuffer(base64.b64decode(d["image"]["data"]), dtype=np.uint8).reshape(shape)
        return cls(int(d["index"]), int(d["true"]), int(d["predicted"]), d.get("text"), image)


@dataclass(frozen=True)
class PairExamples:
    """Misclassified samples between classes ``a`` and ``b`` (either direction)."""

    a: int
    b: int
    samples: tuple[SamplePreview, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "samples": [s.to_dict() for s in self.samples]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairExamples:
        return cls(int(d["a"]), int(d["b"]), tuple(SamplePreview.from_dict(s) for s in d["samples"]))


def preview(data: Dataset, model: Model, index: int, predicted: int) -> SamplePreview:
    """Sample ``index`` of checked ``data`` as text, thumbnail, or bare index."""
    true = int(data.y[index])
    if data.texts is not None:
        text = data.texts[index]
        return SamplePreview(index, true, predicted, text=text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…")
    image = _image(data.features.get(model.input_name), model.layout, index)
    return SamplePreview(index, true, predicted, image=image)


def _image(array: np.ndarray | None, layout: str, index: int) -> np.ndarray | None:
    """The sample as an HxWxC uint8 thumbnail, when the input is an image."""
    if array is None or array.ndim != 4 or layout not in ("NCHW", "NHWC"):
        return None
    x = np.asarray(array[index], dtype=np.float64)
    if layout == "NCHW":
        x = np.moveaxis(x, 0, -1)
    if x.shape[-1] not in (1, 3, 4) or min(x.shape[:2]) < 4:
        return None
    x = x[..., :3] if x.shape[-1] == 4 else x
    step = max(1, -(-max(x.shape[:2]) // THUMBNAIL_SIDE))  # block mean: at most THUMBNAIL_SIDE a side
    h, w = x.shape[0] // step * step, x.shape[1] // step * step
    x = x[:h, :w].reshape(h // step, step, w // step, step, x.shape[-1]).mean(axis=(1, 3))
    low, high = float(x.min()), float(x.max())
    scaled = (x - low) / (high - low) * 255 if high > low else np.zeros_like(x)
    return np.round(scaled).astype(np.uint8)


def confused_examples(data: Dataset, model: Model, predictions: np.ndarray, pairs: Sequence[tuple[int, int]],
                      per_direction: int = PER_DIRECTION) -> tuple[PairExamples, ...]:
    """Up to ``per_direction`` samples of each direction of each pair: true a predicted b, then b as a.

    Samples are taken in data order, so the choice is deterministic.
    """
    y = np.asarray(data.y)
    out = []
    for a, b in pairs:
        chosen: list[SamplePreview] = []
        for true, wrong in ((a, b), (b, a)):
            idx = np.flatnonzero((y == true) & (predictions == wrong))[:per_direction]
            chosen += [preview(data, model, int(i), int(wrong)) for i in idx]
        out.append(PairExamples(int(a), int(b), tuple(chosen)))
    return tuple(out)
