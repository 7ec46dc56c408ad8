"""The budget's side of an audit: the 2-D models' design and the cost record.

:mod:`auditor.budget` holds the cost model; this module applies it to one audit's pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from auditor.budget import AuditCost, Design, Speed, StageCost, choose_design, pair_cost
from auditor.gradients import Directions
from auditor.landscape import pair_subset_sizes, parallel

from .options import AuditOptions

__all__ = ["PlaneCosts", "with_actual"]


class PlaneCosts:
    """Planned cost of the 2-D models of one audit, pair by pair (sample counts cached).

    Parameters
    ----------
    y : ndarray of shape (N,)
        Labels of the audit data.
    directions : EgoDirections or EgoDirectionStream
    options : AuditOptions
    speed : Speed
        The measured speed (one FPE: the CCT's mean pass).
    """

    def __init__(self, y: np.ndarray, directions: Directions, options: AuditOptions, speed: Speed) -> None:
        self.y, self.directions, self.options, self.speed = y, directions, options, speed
        self.counts = np.bincount(np.asarray(y, dtype=np.int64))
        self._sizes: dict[tuple[tuple[int, int], bool], tuple[int, int]] = {}
        self._one_d: dict[tuple[int, int], bool] = {}

    def lattice_samples(self, pair: tuple[int, int], budgeted: bool) -> int:
        """The lattice's subsample: D_a ∪ D_b and as many samples again of the other classes when
        the budget sizes the model; ``options.total_samples`` for a grid given explicitly."""
        n_pair = pair_subset_sizes(self.counts, *pair, 0)[1]
        return min(self.options.total_samples, 2 * n_pair) if budgeted else self.options.total_samples

    def sizes(self, pair: tuple[int, int], budgeted: bool) -> tuple[int, int]:
        """Samples per lattice point and per refinement point."""
        key = (pair, budgeted)
        if key not in self._sizes:
            self._sizes[key] = pair_subset_sizes(self.counts, *pair, self.lattice_samples(pair, budgeted))
        return self._sizes[key]

    def pair(self, pair: tuple[int, int], grid: int, lattice: int, budgeted: bool, *,
             exact: bool = True) -> StageCost:
        """A pair's cost; ``exact=False`` prices it as a 2-D model, an upper bound that needs no direction."""
        return pair_cost(self.speed, *self.sizes(pair, budgeted), grid, lattice, exact and self.one_dimensional(pair))

    def one_dimensional(self, pair: tuple[int, int]) -> bool:
        """The pair's model is 1-D (parallel directions), computed once per pair: the budget prices
        every pair at every size, and an ego direction of a large model takes a while to form."""
        if pair not in self._one_d:
            self._one_d[pair] = self.options.basis == "orthonormal" and parallel(self.directions, *pair)
        return self._one_d[pair]

    def design(self, by_score: Sequence[tuple[int, int]], by_confusion: Sequence[tuple[int, int]],
               allowance_fpe: float, spent: str) -> Design:
        """What the options give, and the budget's choice for the rest (:func:`auditor.budget.choose_design`)."""
        budgeted = self.options.grid is None
        return choose_design(allowance_fpe=allowance_fpe, by_score=by_score, by_confusion=by_confusion,
                             pair_fpe=lambda p, g, m: self.pair(p, g, m, budgeted, exact=False).fpe,
                             pairs=self.options.pairs,
                             grid=self.options.grid, budget=self.options.budget, spent=spent)

    def planned(self, design: Design) -> StageCost:
        """The design's planned cost: exact evaluation and sample counts."""
        budgeted = design.chosen_by == "budget"
        total = StageCost()
        for p in design.pairs:
            total = total + self.pair(p, design.grid, design.lattice, budgeted)
        return total


def with_actual(cost: AuditCost, actual: Mapping[str, StageCost], seconds_per_fpe: float,
                planned_models: StageCost | None = None, design: Design | None = None) -> AuditCost:
    """The plan with every stage's actual cost (FPE: its seconds over ``seconds_per_fpe``)."""
    planned = dict(cost.planned)
    if planned_models is not None:
        planned["interference_models"] = planned_models
    done = {k: StageCost(c.evaluations, c.samples, c.seconds / seconds_per_fpe, c.seconds)
            for k, c in actual.items() if k in planned}
    return AuditCost(budget=cost.budget, n_samples=cost.n_samples, seconds_per_fpe=seconds_per_fpe,
                     strategy=cost.strategy, planned=planned, actual=done, design=design or cost.design)
