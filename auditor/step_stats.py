"""Per-class sums of one pass over the data: what every evaluation returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StepStats"]


@dataclass(frozen=True)
class StepStats:
    """Per-class sums of one pass over the data at one weight setting.

    Attributes
    ----------
    loss_sum : ndarray of shape (K,), float64
        Σ of per-sample cross-entropy over each true class.
    count : ndarray of shape (K,), int64
        Samples per true class.
    confusion : ndarray of shape (K, K), int64
        ``confusion[c, k]``: samples of class c predicted as k.
    predictions : ndarray of shape (N,), int64, or None
        Each sample's predicted class, when asked for (``evaluate(..., keep_predictions=True)``).
    soft_confusion : ndarray of shape (K, K), float64, or None
        ``soft_confusion[c, k] = Σ_{i∈D_c} p_k(x_i)``, the softmax probabilities summed by
        true class (rows sum to the class counts); only when the pass was asked for it.
    """

    loss_sum: np.ndarray
    count: np.ndarray
    confusion: np.ndarray
    predictions: np.ndarray | None = None
    soft_confusion: np.ndarray | None = None

    @classmethod
    def from_logits(cls, logits: np.ndarray, y: np.ndarray, n_classes: int) -> StepStats:
        """The same sums from logits ``[N, K]`` (float64 cross-entropy; argmax ties to the lowest index),
        with the predictions and the softmax sums."""
        z = np.asarray(logits, dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        logp = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
        loss = -logp[np.arange(len(y)), y]
        pred = z.argmax(axis=1)
        k = n_classes
        confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
        soft = np.zeros((k, k))
        np.add.at(soft, y, np.exp(logp))
        return cls(loss_sum=np.bincount(y, weights=loss, minlength=k), count=confusion.sum(axis=1),
                   confusion=confusion.astype(np.int64), predictions=pred.astype(np.int64), soft_confusion=soft)

    @property
    def loss(self) -> np.ndarray:
        """Per-class mean loss ``L_c``; NaN for an absent class."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.loss_sum / np.maximum(self.count, 1), np.nan)

    @property
    def accuracy(self) -> np.ndarray:
        """Per-class accuracy ``A_c``; NaN for an absent class."""
        correct = np.diagonal(self.confusion).astype(np.float64)
        return np.where(self.count > 0, correct / np.maximum(self.count, 1), np.nan)

    @property
    def flow(self) -> np.ndarray:
        """Row-normalised confusion: share of class c' predicted as k; NaN rows for absent classes."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.confusion / self.count[:, None].astype(np.float64)
