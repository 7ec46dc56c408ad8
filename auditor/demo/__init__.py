"""The bundled demo: a small MLP trained on scikit-learn's 8x8 digits (examples/digits/train.py).

A second model, the same MLP retrained after a data bug starved digit 3
(examples/digits/train_candidate.py), is the candidate of ``auditor demo --compare``.

The files ship inside the package, so ``auditor demo`` works from an installed wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoPaths", "demo_paths"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class DemoPaths:
    """Paths of the demo files: the model, the held-out and training splits, the dancing log, the candidate."""

    model: Path
    data: Path
    train: Path
    dance: Path
    candidate: Path


def demo_paths() -> DemoPaths:
    return DemoPaths(model=HERE / "digits.onnx", data=HERE / "digits_test.npz", train=HERE / "digits_train.npz",
                     dance=HERE / "digits_dance.jsonl", candidate=HERE / "digits_candidate.onnx")
