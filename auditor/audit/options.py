"""Every option of an audit, recorded in results.json."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from auditor.errors import OptionError
from auditor.gradients import NORMALIZATIONS
from auditor.landscape import BASES

__all__ = ["AuditOptions", "LARGE_K_CANDIDATES", "MANY_CLASSES"]

#: Above this many classes an audit screens pairs first and runs the CCT for candidates only.
MANY_CLASSES = 64
#: Pairs taken by confusion and by gradient conflict when screening (default of ``candidates``).
LARGE_K_CANDIDATES = 20


@dataclass(frozen=True)
class AuditOptions:
    """Every option of an audit (recorded in results.json).

    Attributes
    ----------
    normalization : {"filter", "layer", "global", "none"}, default="filter"
    include_1d : bool, default=False
    alphas : tuple of float or None
        The α grid; None: 21 points over [-α_max, α_max].
    classes : tuple of int or None
        Restrict the ego classes.
    pairs : int or None
        Interference models for the top ``pairs`` pairs by the pair score R and by confusion.
        None (default): as many as the budget allows (see ``budget``).
    candidates : int or None
        With many classes, run the CCT only for the classes of the top ``candidates``
        pairs by confusion and by gradient conflict (default: all classes when K <= 64,
        else LARGE_K_CANDIDATES).
    grid : int or None
        Points per axis of the 2-D interference models, every point evaluated. None
        (default): a 25 x 25 grid evaluated on a lattice refined near the minima, as the
        budget allows.
    budget : float, default=0.5
        Everything except the CCT (the unperturbed pass, the gradients, the α_s halvings,
        the 2-D models) may cost this multiple of the CCT's own cost; the 2-D models are
        sized to fit what the other stages leave (see :mod:`auditor.budget`). ``pairs`` and
        ``grid``, when given, are kept as given.
    basis : {"orthonormal", "gradients"}, default="orthonormal"
    learning_rate : float, default=0.01
        η of the gradients basis.
    batch_size : int, default=256
    max_per_class : int or None
        Cap the audit data per class (stratified, deterministic).
    total_samples : int, default=2000
        Subsample size for the total loss of an interference model.
    provider : {"auto", "cuda", "cpu"}, default="auto"
    strategy : {"auto", "inputs", "rebuild"}, default="auto"
    exclude : tuple of str
        Tensors left out of θ.
    """

    normalization: str = "filter"
    include_1d: bool = False
    alphas: tuple[float, ...] | None = None
    classes: tuple[int, ...] | None = None
    pairs: int | None = None
    candidates: int | None = None
    grid: int | None = None
    budget: float = 0.5
    basis: str = "orthonormal"
    learning_rate: float = 0.01
    batch_size: int = 256
    max_per_class: int | None = None
    total_samples: int = 2000
    provider: str = "auto"
    strategy: str = "auto"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise OptionError(f"unknown normalization {self.normalization!r}; choose one of "
                              f"{', '.join(NORMALIZATIONS)}")
        if self.basis not in BASES:
            raise OptionError(f"unknown basis {self.basis!r}; choose one of {', '.join(BASES)}")
        if self.pairs is not None and self.pairs < 0:
            raise OptionError(f"--pairs must be >= 0 (0 skips the 2-D models), got {self.pairs}")
        if self.grid is not None and self.grid < 3:
            raise OptionError(f"--grid must be >= 3 (points per axis of the 2-D models, e.g. 25), got {self.grid}")
        if not (self.budget > 0 and math.isfinite(self.budget)):
            raise OptionError(f"--budget must be a finite number > 0 (a multiple of the CCT's cost, e.g. 0.5), "
                              f"got {self.budget}")
        if self.batch_size < 1:
            raise OptionError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise OptionError(f"--max-per-class must be >= 1, got {self.max_per_class}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("alphas", "classes", "exclude"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditOptions:
        d = dict(d)
        for key in ("alphas", "classes", "exclude"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


