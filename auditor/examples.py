"""A few samples of each confused pair, kept small enough for results.json and the report.

For image data a sample is kept as a thumbnail (:func:`thumbnail`: at most
:data:`THUMBNAIL_SIDE` pixels a side, each image min-max scaled to 0..255); for text data as its text; for other data
(feature vectors) only its index, label and prediction. The report draws the thumbnails;
nothing here plots.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import Dataset
from .model import Model

__all__ = ["SamplePreview", "PairExamples", "confused_examples", "preview", "thumbnail", "image_to_json",
           "image_from_json", "THUMBNAIL_SIDE", "PER_DIRECTION", "MAX_TEXT"]

#: Longest side of a thumbnail, pixels.
THUMBNAIL_SIDE = 64
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
    image : ndarray of shape (h, w) or (h, w, 3), uint8, or None
        A thumbnail (image data; see :func:`thumbnail`).
    """

    index: int
    true: int
    predicted: int
    text: str | None = None
    image: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "true": self.true, "predicted": self.predicted, "text": self.text,
                "image": image_to_json(self.image)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplePreview:
        return cls(int(d["index"]), int(d["true"]), int(d["predicted"]), d.get("text"),
                   image_from_json(d.get("image")))


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
    array = data.features.get(model.input_name)
    image = None if array is None else thumbnail(array[index], model.layout)
    return SamplePreview(index, true, predicted, image=image)


def thumbnail(sample: np.ndarray, layout: str) -> np.ndarray | None:
    """A small uint8 picture of an image sample; None when the sample is not an image.

    Parameters
    ----------
    sample : ndarray
        One sample without the batch axis: (C, H, W) or (H, W, C) with 1 or 3 channels (a
        fourth, alpha, channel is dropped), or (H, W).
    layout : str
        The model's layout guess ("NCHW", "NHWC", ...), which decides the channel axis.

    Returns
    -------
    ndarray of uint8, shape (h, w) or (h, w, 3), or None
        Rescaled to 0..255 from the sample's own minimum and maximum (the data are usually
        normalised, so the original pixel range is unknown), shrunk by block averaging to
        at most :data:`THUMBNAIL_SIDE` pixels a side.
    """
    a = np.asarray(sample, dtype=np.float64)
    if layout in ("features", "tokens"):
        return None
    if a.ndim == 3:
        channels_last = layout == "NHWC" or (a.shape[0] not in (1, 3, 4) and a.shape[2] in (1, 3, 4))
        if not channels_last:
            if a.shape[0] not in (1, 3, 4):
                return None
            a = np.moveaxis(a, 0, -1)
        if a.shape[2] not in (1, 3, 4):
            return None
        a = a[..., 0] if a.shape[2] == 1 else a[..., :3]
    elif a.ndim != 2:
        return None
    if min(a.shape[0], a.shape[1]) < 4:
        return None
    factor = max(1, math.ceil(max(a.shape[0], a.shape[1]) / THUMBNAIL_SIDE))
    if factor > 1:
        h, w = a.shape[0] // factor * factor, a.shape[1] // factor * factor
        a = a[:h, :w].reshape(h // factor, factor, w // factor, factor, *a.shape[2:]).mean(axis=(1, 3))
    low, high = float(a.min()), float(a.max())
    scaled = (a - low) / (high - low) * 255.0 if high > low else np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def image_to_json(image: np.ndarray | None) -> dict[str, Any] | None:
    """A thumbnail as ``{"shape": [...], "uint8": base64}`` for results.json (None stays None)."""
    if image is None:
        return None
    return {"shape": list(image.shape), "uint8": base64.b64encode(np.ascontiguousarray(image, np.uint8).tobytes())
            .decode("ascii")}


def image_from_json(d: Mapping[str, Any] | None) -> np.ndarray | None:
    """The inverse of :func:`image_to_json`."""
    if d is None:
        return None
    raw = np.frombuffer(base64.b64decode(d["uint8"]), dtype=np.uint8)
    return raw.reshape([int(v) for v in d["shape"]]).copy()


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
