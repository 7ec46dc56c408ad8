"""Every option of a comparison, recorded in its results.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from auditor.errors import OptionError
from auditor.gradients import NORMALIZATIONS
from auditor.runtime import PROVIDERS

__all__ = ["CompareOptions"]


@dataclass(frozen=True)
class CompareOptions:
    """Every option of a comparison.

    Attributes
    ----------
    alpha : float, default=0.05
        Level of the per-class McNemar tests after the Holm correction: a class is
        regressed when its accuracy fell and its corrected p-value is below ``alpha``.
    confidence : float, default=0.95
        Level of the intervals of the accuracy changes.
    examples : int, default=4
        Flipped samples shown per (true class, new prediction) group.
    example_groups : int, default=12
        Groups (the largest) that get examples.
    batch_size : int, default=256
    provider : {"auto", "cuda", "cpu"}, default="auto"
    max_per_class : int or None
        Cap the data per class (stratified, deterministic: the same samples for both models).
    interference : bool, default=False
        Also audit both models (two cross-class tests) and compare their pair scores.
    normalization : {"filter", "layer", "global", "none"}, default="filter"
        Ego-direction normalisation of those audits.
    """

    alpha: float = 0.05
    confidence: float = 0.95
    examples: int = 4
    example_groups: int = 12
    batch_size: int = 256
    provider: str = "auto"
    max_per_class: int | None = None
    interference: bool = False
    normalization: str = "filter"

    def __post_init__(self) -> None:
        for name in ("alpha", "confidence"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise OptionError(f"--{name} must be between 0 and 1 (exclusive), got {value}")
        for name in ("examples", "example_groups"):
            if getattr(self, name) < 0:
                raise OptionError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise OptionError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise OptionError(f"--max-per-class must be >= 1, got {self.max_per_class}")
        if self.provider not in PROVIDERS:
            raise OptionError(f"unknown device {self.provider!r}; choose one of {', '.join(PROVIDERS)}")
        if self.normalization not in NORMALIZATIONS:
            raise OptionError(f"unknown normalization {self.normalization!r}; choose one of "
                              f"{', '.join(NORMALIZATIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompareOptions:
        return cls(**dict(d))
