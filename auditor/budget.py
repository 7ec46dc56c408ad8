"""What an audit costs, in forward-pass equivalents (FPE), and the budget that sizes its 2-D models.

One FPE is one pass of the model over the audit data at the exported weights; the audit
starts with that pass and times it, so a count of passes reads as seconds "at the measured
speed". Each stage is counted in that unit:

- ``forward``: the unperturbed pass, and the perturbation-strategy probe (timed);
- ``gradients``: the class gradients; before they run, :data:`GRADIENT_PASSES` forward
  passes per gradient sample;
- ``cct``: the cross-class test, ``n_ego · (A − 1)`` passes over the whole audit data (its
  α = 0 column is the unperturbed pass);
- ``interference``: the interference matrices and the α_s halvings, one pass each; they run
  only for ego classes whose loss does not fall by 1% at the first grid step (up to 10 each),
  so they are counted, not planned;
- ``interference_models``: the 2-D models' evaluations, each over a subset (D_a ∪ D_b and a
  few samples of the other classes): one evaluation of ``n`` samples costs what the probe
  measured for ``n`` samples relative to a full pass (a session build per step does not
  shrink with the subset).

The report is drawn from the results and evaluates nothing. Planned figures come from the
cost model; actual ``evaluations`` and ``samples`` are counted by the evaluators, and actual
``fpe`` is a stage's seconds over the seconds of one pass.

By default everything except the CCT together costs at most ``budget`` = 0.5 times the CCT:
after the CCT, the 2-D models get what is left of ``budget × CCT`` once everything else the
audit did so far is paid (the other stages, checking the data, planning), and take the
largest design of :data:`LADDER` that fits; when none fits, the smallest still runs. ``--pairs`` and ``--grid``
given explicitly are kept as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError
from .landscape import plane_evaluations

__all__ = ["StageCost", "Speed", "Design", "AuditCost", "plan_audit", "choose_design", "pair_cost", "alternate",
           "STAGES", "LADDER", "DEFAULT_BUDGET", "GRID", "GRADIENT_PASSES", "fmt_seconds"]

STAGES = ("forward", "gradients", "cct", "interference", "interference_models")
#: Everything except the CCT costs at most this multiple of the CCT (``--budget``).
DEFAULT_BUDGET = 0.5
#: Points per axis of a budgeted 2-D model: its resolution near the minima.
GRID = 25
#: Forward passes that one sample's gradient pass costs, for the plan made before the gradients
#: run (benchmarks/bench_gradients.py measures it: 4.4 on its CNN; ResNet-18 at 64x64 takes 7-10
#: with its graph and session builds; the gradient stage's own time replaces it).
GRADIENT_PASSES = 10.0
#: Designs of the 2-D models from the cheapest up, as (models, grid, lattice): pairs are taken
#: alternately from the ranking by pair score and by confusion; a lattice smaller than the grid
#: is refined near each minimum. The first is a plain 5 x 5 grid (minima to a quarter of r).
LADDER: tuple[tuple[int, int, int], ...] = (
    (1, 5, 5), (1, GRID, 5), (2, GRID, 5), (2, GRID, 7), (3, GRID, 7), (4, GRID, 7), (4, GRID, 9), (6, GRID, 9),
    (6, GRID, 13), (6, GRID, GRID))


def fmt_seconds(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3.5 min``."""
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@dataclass(frozen=True)
class StageCost:
    """The cost of one stage.

    Attributes
    ----------
    evaluations : int
        Passes of the model over some samples (0 for the gradient pass).
    samples : int
        Samples in those passes (for the gradients: the samples differentiated).
    fpe : float
        In passes over the whole audit data.
    seconds : float
    """

    evaluations: int = 0
    samples: int = 0
    fpe: float = 0.0
    seconds: float = 0.0

    def __add__(self, other: StageCost) -> StageCost:
        return StageCost(self.evaluations + other.evaluations, self.samples + other.samples, self.fpe + other.fpe,
                         self.seconds + other.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, "samples": self.samples, "fpe": self.fpe, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageCost:
        return cls(int(d["evaluations"]), int(d["samples"]), float(d["fpe"]), float(d["seconds"]))


@dataclass(frozen=True)
class Speed:
    """The measured speed: one pass over the audit data.

    Attributes
    ----------
    n_samples : int
        N, the audit data's size.
    pass_s : float
        Seconds of one pass over the audit data (one FPE).
    strategy : str
        The perturbation strategy of the passes.
    overhead_s : float, default=0
        What an evaluation costs whatever its size: building a session with the perturbed
        weights under the ``"rebuild"`` strategy (the probe measures it), nothing with the
        weights as inputs.
    """

    n_samples: int
    pass_s: float
    strategy: str
    overhead_s: float = 0.0

    def evaluation_fpe(self, n: int) -> float:
        """FPE of one evaluation of ``n`` samples: the overhead, and the rest of a pass in proportion to ``n``."""
        overhead = min(max(self.overhead_s, 0.0), self.pass_s)
        return (overhead + (self.pass_s - overhead) * n / self.n_samples) / self.pass_s


@dataclass(frozen=True)
class Design:
    """The 2-D models: which pairs, on which grid, and why.

    Attributes
    ----------
    pairs : list of (int, int)
        The pairs modelled, in order.
    grid : int
        Points per axis.
    lattice : int
        Points per axis evaluated over the whole plane (``grid``: every point; fewer: a
        lattice refined near each class's minimum, see :func:`auditor.landscape.interference_model`).
    chosen_by : {"budget", "options"}
    reason : str
        Why this design (shown in the report's method section).
    fpe : float
        Its planned cost.
    """

    pairs: list[tuple[int, int]]
    grid: int
    lattice: int
    chosen_by: str
    reason: str
    fpe: float = 0.0

    def describe(self) -> str:
        """``4 pairs, 7×7 lattice of a 25×25 grid refined near each minimum`` or ``3 pairs, 25×25 grid``."""
        n = len(self.pairs)
        what = f"{n} pair{'' if n == 1 else 's'}"
        if self.lattice >= self.grid:
            return f"{what}, every point of a {self.grid}×{self.grid} grid"
        return (f"{what}, {self.lattice}×{self.lattice} lattice of a {self.grid}×{self.grid} grid refined near each "
                "minimum")

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": [list(p) for p in self.pairs], "grid": self.grid, "lattice": self.lattice,
                "chosen_by": self.chosen_by, "reason": self.reason, "fpe": self.fpe}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Design:
        return cls(pairs=[(int(a), int(b)) for a, b in d["pairs"]], grid=int(d["grid"]), lattice=int(d["lattice"]),
                   chosen_by=str(d["chosen_by"]), reason=str(d["reason"]), fpe=float(d.get("fpe", 0.0)))


@dataclass(frozen=True, eq=False)
class AuditCost:
    """Planned and actual cost of every stage of one audit (results.json ``cost``).

    Attributes
    ----------
    budget : float
        Everything except the CCT was to cost at most this multiple of the CCT.
    n_samples : int
        N: one FPE is a pass over this many samples.
    seconds_per_fpe : float
        The measured speed: seconds of the unperturbed pass.
    strategy : str
        The perturbation strategy of the passes over the whole data.
    planned, actual : dict of str to StageCost
        By stage (:data:`STAGES`); a stage not (yet) run is absent from ``actual``.
    design : Design or None
        The 2-D models' design (None until chosen).
    """

    budget: float
    n_samples: int
    seconds_per_fpe: float
    strategy: str
    planned: Mapping[str, StageCost]
    actual: Mapping[str, StageCost] = field(default_factory=dict)
    design: Design | None = None

    def total(self, which: str = "planned") -> StageCost:
        stages = self.planned if which == "planned" else self.actual
        out = StageCost()
        for cost in stages.values():
            out = out + cost
        return out

    def ratio(self, which: str = "actual") -> float:
        """Everything except the CCT over the CCT (in FPE); NaN before the CCT."""
        stages = self.planned if which == "planned" else self.actual
        cct = stages.get("cct")
        if cct is None or cct.fpe <= 0:
            return float("nan")
        return (self.total(which).fpe - cct.fpe) / cct.fpe

    def describe(self) -> str:
        """The plan as one log line."""
        p, total = self.planned, self.total()
        parts = [f"unperturbed pass and probe {p['forward'].fpe:.3g}", f"gradients ≈ {p['gradients'].fpe:.3g}",
                 f"CCT {p['cct'].fpe:.0f}", f"2-D models ≤ {p['interference_models'].fpe:.3g}"]
        return (f"plan: ≈ {total.fpe:.0f} FPE, ≈ {fmt_seconds(total.seconds)} at the measured speed "
                f"({fmt_seconds(self.seconds_per_fpe)} per pass over {self.n_samples} samples, strategy "
                f"{self.strategy}): {', '.join(parts)} (FPE; the 2-D models are sized to fit {self.budget:g} × "
                "the CCT, less the other stages)")

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "n_samples": self.n_samples, "seconds_per_fpe": self.seconds_per_fpe,
                "strategy": self.strategy, "planned": {k: v.to_dict() for k, v in self.planned.items()},
                "actual": {k: v.to_dict() for k, v in self.actual.items()},
                "design": None if self.design is None else self.design.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditCost:
        return cls(budget=float(d["budget"]), n_samples=int(d["n_samples"]),
                   seconds_per_fpe=float(d["seconds_per_fpe"]), strategy=str(d["strategy"]),
                   planned={k: StageCost.from_dict(v) for k, v in d["planned"].items()},
                   actual={k: StageCost.from_dict(v) for k, v in d["actual"].items()},
                   design=None if d.get("design") is None else Design.from_dict(d["design"]))


def plan_audit(speed: Speed, *, budget: float, probe_s: float, n_gradient_samples: int,
               n_cct_evaluations: int) -> AuditCost:
    """The plan made after the unperturbed pass, before the long stages.

    The CCT's count is exact; the gradients are estimated at :data:`GRADIENT_PASSES`; the
    2-D models are planned at what the budget leaves them (their design is chosen after
    the CCT, when the pairs are known).
    """
    if not (budget > 0 and math.isfinite(budget)):
        raise OptionError(f"--budget must be a finite number > 0 (a multiple of the CCT's cost, e.g. 0.5), "
                          f"got {budget}")
    n, pass_s = speed.n_samples, speed.pass_s

    def cost(evaluations: int, samples: int, fpe: float) -> StageCost:
        return StageCost(evaluations, samples, fpe, fpe * pass_s)

    forward = cost(1, n, 1.0 + probe_s / pass_s)
    gradients = cost(0, n_gradient_samples, GRADIENT_PASSES * n_gradient_samples / n)
    cct = cost(n_cct_evaluations, n_cct_evaluations * n, float(n_cct_evaluations))
    models = cost(0, 0, max(budget * cct.fpe - forward.fpe - gradients.fpe, 0.0))
    return AuditCost(budget=budget, n_samples=n, seconds_per_fpe=pass_s, strategy=speed.strategy,
                     planned={"forward": forward, "gradients": gradients, "cct": cct, "interference": cost(0, 0, 0.0),
                              "interference_models": models})


def alternate(first: Sequence[tuple[int, int]], second: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Pairs taken alternately from two rankings, each pair once."""
    out: list[tuple[int, int]] = []
    for i in range(max(len(first), len(second))):
        for ranking in (first, second):
            if i < len(ranking) and ranking[i] not in out:
                out.append(ranking[i])
    return out


def choose_design(*, allowance_fpe: float, by_score: Sequence[tuple[int, int]],
                  by_confusion: Sequence[tuple[int, int]], pair_fpe: Callable[[tuple[int, int], int, int], float],
                  pairs: int | None = None, grid: int | None = None, budget: float = DEFAULT_BUDGET,
                  fixed_fpe: float = 0.0, spent: str = "") -> Design:
    """The 2-D models' design: the largest of :data:`LADDER` that fits ``allowance_fpe``.

    Parameters
    ----------
    allowance_fpe : float
        What the budget leaves the 2-D models (may be negative: then the smallest design).
    by_score, by_confusion : sequence of (int, int)
        Candidate pairs, best first, whose classes both have an ego direction.
    pair_fpe : callable
        ``pair_fpe(pair, grid, lattice)``: planned FPE of one pair's model.
    pairs, grid : int, optional
        Given explicitly (``--pairs``: the top ``pairs`` of each ranking; ``--grid``: every
        point of that grid); the budget chooses only what is not given.
    budget : float
    fixed_fpe : float
        Paid once by any design with a pair (a session for the plane's two directions).
    spent : str
        What the other stages cost, for the reason.
    """
    def cost(chosen: Sequence[tuple[int, int]], g: int, lattice: int) -> float:  # noqa: E306
        return float(sum(pair_fpe(p, g, lattice) for p in chosen)) + (fixed_fpe if chosen else 0.0)

    if pairs is not None:
        fixed = alternate(by_score[:pairs], by_confusion[:pairs])
        options = list(dict.fromkeys((tuple(fixed), grid or g, grid or m) for _, g, m in LADDER))
    else:
        ranked = alternate(by_score, by_confusion)
        options = list(dict.fromkeys((tuple(ranked[:n]), grid or g, grid or m) for n, g, m in LADDER))
    if not options[-1][0]:
        return Design([], grid or GRID, grid or GRID, "options" if pairs is not None else "budget",
                      "--pairs 0 given" if pairs == 0 else "no pair has two classes with an ego direction")
    if pairs is not None and grid is not None:
        chosen, g, lattice = options[0]
        return Design(list(chosen), g, lattice, "options", f"--pairs {pairs} and --grid {grid} given",
                      cost(chosen, g, lattice))
    priced = [(cost(c, g, m), list(c), g, m) for c, g, m in options]
    fits = [p for p in priced if p[0] <= allowance_fpe]
    given = " and ".join(f"--{k} {v}" for k, v in (("pairs", pairs), ("grid", grid)) if v is not None)
    left = f"{budget:g} × the CCT leaves {allowance_fpe:.3g} FPE for them{spent}"
    fpe, best, g, lattice = fits[-1] if fits else priced[0]
    why = (f"the largest design that fits: {left}; this one costs ≈ {fpe:.3g} FPE" if fits else
           f"the smallest design, ≈ {fpe:.3g} FPE, though {left} (it runs so that the report has a 2-D model; "
           "--pairs 0 skips them)")
    design = Design(best, g, lattice, "budget", "", fpe)
    return Design(best, g, lattice, "budget", f"{design.describe()}: {why}" + (f" ({given} given)" if given else ""),
                  fpe)


def pair_cost(speed: Speed, n_lattice_samples: int, n_pair_samples: int, grid: int, lattice: int,
              one_dimensional: bool) -> StageCost:
    """Planned cost of one pair's model: the lattice on its subsample, the refinement on D_a ∪ D_b."""
    n_lattice, n_refined = plane_evaluations(grid, lattice, one_dimensional)
    fpe = n_lattice * speed.evaluation_fpe(n_lattice_samples)
    if n_refined:
        fpe += n_refined * speed.evaluation_fpe(n_pair_samples)
    return StageCost(n_lattice + n_refined, n_lattice * n_lattice_samples + n_refined * n_pair_samples, fpe,
                     fpe * speed.pass_s)
