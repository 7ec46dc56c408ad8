"""A plain float64 numpy re-implementation of the Gemm MLP in conftest.make_mlp: the reference
for CCT, interference-model and perturbation tests."""

from __future__ import annotations

import numpy as np


def logits(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h


def per_sample_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return lse - z[np.arange(len(y)), y]


def class_losses(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    loss = per_sample_loss(logits(weights, x), y)
    return np.array([loss[y == c].mean() if np.any(y == c) else np.nan for c in range(k)])


def class_accuracies(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    pred = logits(weights, x).argmax(axis=1)
    return np.array([(pred[y == c] == c).mean() if np.any(y == c) else np.nan for c in range(k)])


def confusion(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    pred = logits(weights, x).argmax(axis=1)
    out = np.zeros((k, k), dtype=np.int64)
    np.add.at(out, (y, pred), 1)
    return out


def moved(weights: list[tuple[np.ndarray, np.ndarray]], direction: dict[str, np.ndarray], alpha: float
          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """θ* + α d for the initializer names w{i}/b{i} of make_mlp."""
    return [(w + alpha * direction.get(f"w{i}", 0.0), b + alpha * direction.get(f"b{i}", 0.0))
            for i, (w, b) in enumerate(weights)]


def class_gradients(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray, k: int
                    ) -> dict[int, dict[str, np.ndarray]]:
    """Hand-written backprop of L_c for a 2-layer ReLU MLP (float64)."""
    (w0, b0), (w1, b1) = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in weights]
    out = {}
    for c in range(k):
        xc = np.asarray(x[y == c], np.float64)
        if not len(xc):
            continue
        a = xc @ w0.T + b0
        h = np.maximum(a, 0)
        z = h @ w1.T + b1
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dz = p.copy()
        dz[:, c] -= 1
        dz /= len(xc)
        dh = dz @ w1 * (a > 0)
        out[c] = {"w1": dz.T @ h, "b1": dz.sum(0), "w0": dh.T @ xc, "b0": dh.sum(0)}
    return out
