"""The cross-class test: move θ along each ego direction, measure every class.

See docs/concepts.md, "Cross-class test". One pass over the data per (ego class, α)
evaluates every class at once; the unperturbed pass (α = 0) is shared by all ego classes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import OptionError
from .gradients import Directions
from .progress import Progress
from .runtime import Evaluator, StepStats

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model
from .serialization import array_from_json, json_array

__all__ = ["CrossClassTestResult", "CellRecord", "CCTPlan", "cross_class_test", "plan_cct", "run_cell",
           "default_alphas", "FULL_FLOW_MAX_CLASSES"]

#: Above this many classes the flow tensor keeps only the top destinations per row.
FULL_FLOW_MAX_CLASSES = 64
TOP_DESTINATIONS = 5


def default_alphas(n: int = 21) -> np.ndarray:
    """``n`` evenly spaced points in [-1, 1] with 0 included (``n`` odd), in units of α_max."""
    if n < 3 or n % 2 == 0:
        raise OptionError(f"the α grid needs an odd number of points >= 3 (so α = 0 is on it), got {n}")
    grid = np.linspace(-1.0, 1.0, n)
    grid[n // 2] = 0.0
    return grid


@dataclass(frozen=True)
class CellRecord:
    """Where and how one cell of the test ran (one ego class, some of its grid steps).

    Attributes
    ----------
    ego_class : int
    steps : tuple of int
        Grid indices evaluated.
    device : str
        ``"cpu"`` or ``"cuda:<id>"`` (the GPU id the worker saw).
    worker : str
        Who ran it: ``"local"`` in this process, else the executor's name for the worker
        (e.g. the Ray node and actor).
    seconds : float
        Wall time of the cell on its worker.
    resumed : bool
        True when read back from a checkpoint instead of computed in this run.
    """

    ego_class: int
    steps: tuple[int, ...]
    device: str
    worker: str = "local"
    seconds: float = 0.0
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"ego_class": self.ego_class, "steps": list(self.steps), "device": self.device,
                "worker": self.worker, "seconds": self.seconds, "resumed": self.resumed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellRecord:
        return cls(ego_class=int(d["ego_class"]), steps=tuple(int(a) for a in d["steps"]), device=str(d["device"]),
                   worker=str(d.get("worker", "local")), seconds=float(d.get("seconds", 0.0)),
                   resumed=bool(d.get("resumed", False)))


@dataclass(frozen=True, eq=False)
class CrossClassTestResult:
    """Cross-class test of every ego class (docs/concepts.md, "Cross-class test").

    Attributes
    ----------
    alphas : ndarray of shape (A,)
        The α grid, ascending, 0 included. The step actually taken along the direction
        of ``ego_classes[i]`` is ``step_scale[i] * alphas[a]`` (:meth:`steps`).
    step_scale : ndarray of shape (n_ego,)
        1 when every ego class shares the grid; α_max of each class when the grid is
        given in units of α_max (the default under ``normalization="none"``).
    ego_classes : tuple of int
        The classes whose directions were used.
    loss : ndarray of shape (n_ego, K, A)
        ``loss[i, c, a]``: ``L_c`` after a step ``alphas[a]`` along ``d_{ego_classes[i]}``;
        NaN for a class with no samples.
    accuracy : ndarray of shape (n_ego, K, A)
        ``A_c`` at the same points.
    flow : ndarray of shape (n_ego, K, A, K) or None
        ``flow[i, c, a, k]``: share of class c predicted as k. ``None`` when K is above
        :data:`FULL_FLOW_MAX_CLASSES`; then ``flow_top`` holds the largest shares.
    flow_top_classes, flow_top_share : ndarray of shape (n_ego, K, A, m) or None
        The ``m`` largest destinations of each row, by share (ties: lower class first).
    counts : ndarray of shape (K,)
        Samples per class.
    zero_index : int
        Index of α = 0.
    normalization : str
        How the ego directions were normalised.
    provider, strategy : str
        The device that ran and the perturbation strategy used (see auditor.runtime).
    seconds : float
        Wall time of the test.
    samples_per_second : float
        Throughput of the perturbed passes.
    cells : tuple of CellRecord
        Where each cell ran, in plan order.
    """

    alphas: np.ndarray
    step_scale: np.ndarray
    ego_classes: tuple[int, ...]
    loss: np.ndarray
    accuracy: np.ndarray
    flow: np.ndarray | None
    flow_top_classes: np.ndarray | None
    flow_top_share: np.ndarray | None
    counts: np.ndarray
    zero_index: int
    normalization: str
    provider: str = "cpu"
    strategy: str = "inputs"
    seconds: float = 0.0
    samples_per_second: float = 0.0
    cells: tuple[CellRecord, ...] = ()

    def __post_init__(self) -> None:
        for a in (self.alphas, self.step_scale, self.loss, self.accuracy, self.flow, self.flow_top_classes,
                  self.flow_top_share, self.counts):
            if a is not None:
                a.flags.writeable = False

    @property
    def n_classes(self) -> int:
        return int(self.loss.shape[1])

    def steps(self, i: int) -> np.ndarray:
        """The α values actually taken along the direction of ``ego_classes[i]``."""
        return np.asarray(self.step_scale[i] * self.alphas)

    def base_loss(self) -> np.ndarray:
        """``L_c(θ*)`` for every class (the α = 0 column)."""
        return np.asarray(self.loss[0, :, self.zero_index]) if len(self.ego_classes) else np.full(
            self.n_classes, np.nan)

    def cctm(self) -> np.ndarray | None:
        """The paper's cross-class test matrix: the row-normalised confusion at θ*."""
        if self.flow is None or not len(self.ego_classes):
            return None
        return np.asarray(self.flow[0, :, self.zero_index, :])

    def ego_curve(self, i: int) -> np.ndarray:
        """``φ_c(α) = L_c(θ* + α d_c)`` for ``c = ego_classes[i]``."""
        return np.asarray(self.loss[i, self.ego_classes[i]])

    def to_dict(self) -> dict[str, Any]:
        def arr(a: np.ndarray | None) -> Any:
            return None if a is None else json_array(a)

        return {
            "alphas": self.alphas.tolist(), "step_scale": self.step_scale.tolist(),
            "ego_classes": list(self.ego_classes), "loss": arr(self.loss), "accuracy": arr(self.accuracy),
            "flow": arr(self.flow), "flow_top_classes": arr(self.flow_top_classes),
            "flow_top_share": arr(self.flow_top_share), "counts": self.counts.tolist(),
            "zero_index": self.zero_index, "normalization": self.normalization, "provider": self.provider,
            "strategy": self.strategy, "seconds": self.seconds, "samples_per_second": self.samples_per_second,
            "cells": [c.to_dict() for c in self.cells],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CrossClassTestResult:
        def arr(v: Any, dtype: Any = np.float64) -> np.ndarray | None:
            return None if v is None else array_from_json(v, dtype)

        return cls(
            alphas=np.asarray(d["alphas"], dtype=np.float64), step_scale=np.asarray(d["step_scale"], np.float64),
            ego_classes=tuple(int(c) for c in d["ego_classes"]), loss=array_from_json(d["loss"], np.float64),
            accuracy=array_from_json(d["accuracy"], np.float64), flow=arr(d["flow"]),
            flow_top_classes=arr(d["flow_top_classes"], np.int64), flow_top_share=arr(d["flow_top_share"]),
            counts=np.asarray(d["counts"], dtype=np.int64), zero_index=int(d["zero_index"]),
            normalization=d["normalization"], provider=d["provider"], strategy=d["strategy"],
            seconds=float(d["seconds"]), samples_per_second=float(d["samples_per_second"]),
            cells=tuple(CellRecord.from_dict(c) for c in d.get("cells", [])))


def _top_destinations(stats: StepStats, m: int) -> tuple[np.ndarray, np.ndarray]:
    flow = np.nan_to_num(stats.flow, nan=0.0)
    order = np.argsort(-flow, axis=1, kind="stable")[:, :m]
    return order.astype(np.int32), np.take_along_axis(flow, order, axis=1)


@dataclass(frozen=True)
class CCTPlan:
    """What a cross-class test evaluates: the α grid, the ego classes and their step scales.

    The work is a list of cells (:meth:`cells`): one ego class and some of its grid steps,
    each evaluated over the whole audit data; the unperturbed pass is shared by all.

    Attributes
    ----------
    alphas : ndarray of shape (A,)
        Ascending, 0 included.
    step_scale : ndarray of shape (n_ego,)
    ego_classes : tuple of int
    zero_index : int
    """

    alphas: np.ndarray
    step_scale: np.ndarray
    ego_classes: tuple[int, ...]
    zero_index: int

    def steps(self, i: int) -> np.ndarray:
        """The α values taken along the direction of ``ego_classes[i]``."""
        return np.asarray(self.step_scale[i] * self.alphas)

    def cells(self) -> list[tuple[int, tuple[int, ...]]]:
        """``(i, grid indices)``: every perturbed step of ego class ``ego_classes[i]``, in grid order."""
        steps = tuple(a for a in range(len(self.alphas)) if a != self.zero_index)
        return [(i, steps) for i in range(len(self.ego_classes))]

    @property
    def n_evaluations(self) -> int:
        """Passes over the data: the shared unperturbed one and one per perturbed step."""
        return 1 + len(self.ego_classes) * (len(self.alphas) - 1)


def plan_cct(directions: Directions, alphas: Sequence[float] | None = None,
             ego_classes: Sequence[int] | None = None) -> CCTPlan:
    """The α grid and ego classes of a cross-class test (see :func:`cross_class_test`)."""
    if alphas is None:
        grid = default_alphas()
    else:
        grid = np.asarray(sorted(float(a) for a in alphas), dtype=np.float64)
        if not np.any(grid == 0.0):
            raise OptionError("the α grid must contain 0 (the unperturbed model); add 0 to --alphas")
    chosen = list(directions.classes) if ego_classes is None else [int(c) for c in ego_classes]
    missing = [c for c in chosen if c not in directions.classes]
    if missing:
        raise OptionError(f"no ego direction for classes {missing}; they have no samples or a zero gradient")
    amax = directions.alpha_max[[directions.classes.index(c) for c in chosen]] if chosen else np.zeros(0)
    step_scale = np.ones(len(chosen))
    if alphas is None:  # the default grid spans [-α_max, α_max]; α_max is shared except under "none"
        if directions.normalization == "none":
            step_scale = np.asarray(amax, dtype=np.float64)
        else:
            grid = grid * (float(amax[0]) if len(amax) else 1.0)
    return CCTPlan(alphas=grid, step_scale=step_scale, ego_classes=tuple(chosen),
                   zero_index=int(np.flatnonzero(grid == 0.0)[0]))


def run_cell(evaluator: Evaluator, direction: Mapping[str, np.ndarray],
             steps: Sequence[float] | np.ndarray) -> list[StepStats]:
    """Evaluate one cell: the data at ``θ* + step · direction`` for each step, in order."""
    evaluator.set_directions([direction])
    return [evaluator.evaluate([float(step)]) for step in steps]


class _Collector:
    """The CCT arrays, filled cell by cell (placed by index, whatever order cells finish in)."""

    def __init__(self, n_ego: int, k: int, n_alpha: int, keep_flow: bool) -> None:
        self.loss = np.full((n_ego, k, n_alpha), np.nan)
        self.accuracy = np.full((n_ego, k, n_alpha), np.nan)
        self.m = min(TOP_DESTINATIONS, k)
        self.flow = np.full((n_ego, k, n_alpha, k), np.nan, dtype=np.float32) if keep_flow else None
        self.top_c = None if keep_flow else np.zeros((n_ego, k, n_alpha, self.m), dtype=np.int32)
        self.top_s = None if keep_flow else np.zeros((n_ego, k, n_alpha, self.m), dtype=np.float32)

    def store(self, i: int, a: int, stats: StepStats) -> None:
        self.loss[i, :, a] = stats.loss
        self.accuracy[i, :, a] = stats.accuracy
        if self.flow is not None:
            self.flow[i, :, a, :] = stats.flow
        elif self.top_c is not None and self.top_s is not None:
            self.top_c[i, :, a], self.top_s[i, :, a] = _top_destinations(stats, self.m)


def cross_class_test(model: Model, data: Dataset, directions: Directions, alphas: Sequence[float] | None = None,
                     *, ego_classes: Sequence[int] | None = None, provider: str = "auto", batch_size: int = 256,
                     strategy: str = "auto", full_flow: bool | None = None, progress: bool | None = None,
                     evaluator: Evaluator | None = None) -> CrossClassTestResult:
    """Run the cross-class test (docs/concepts.md, "Cross-class test").

    Parameters
    ----------
    model : Model
    data : Dataset
        The audit data; every class in it is evaluated at every step.
    directions : EgoDirections or EgoDirectionStream
        From :func:`auditor.ego_directions`.
    alphas : sequence of float, optional
        The α grid (must contain 0). Default: 21 points over [-α_max, α_max]; under
        ``normalization="none"`` the grid is in units of each class's α_max.
    ego_classes : sequence of int, optional
        Restrict the ego classes (default: every class with a direction).
    provider : {"auto", "cuda", "cpu"}, default="auto"
    batch_size : int, default=256
    strategy : {"auto", "inputs", "rebuild"}, default="auto"
        How perturbed weights reach the runtime (see :mod:`auditor.runtime`).
    full_flow : bool, optional
        Keep the whole flow tensor (default: when K <= 64; else the top 5 destinations
        of each row).
    progress : bool, optional
    evaluator : Evaluator, optional
        Reuse an evaluator (its data and device) instead of building one.

    Returns
    -------
    CrossClassTestResult
    """
    if evaluator is None:
        evaluator = Evaluator(model, data, provider=provider, batch_size=batch_size, strategy=strategy)
    plan = plan_cct(directions, alphas, ego_classes)
    k = model.n_classes
    keep_flow = (k <= FULL_FLOW_MAX_CLASSES) if full_flow is None else full_flow
    out = _Collector(len(plan.ego_classes), k, len(plan.alphas), keep_flow)
    start = time.perf_counter()
    samples_before = evaluator.samples_evaluated
    evaluated_seconds = 0.0
    with Progress(plan.n_evaluations, "cross-class test", enabled=progress) as bar:
        evaluator.set_directions([{}])
        base = evaluator.evaluate([0.0])
        bar.advance()
        for i in range(len(plan.ego_classes)):
            out.store(i, plan.zero_index, base)
        cells = []
        for i, indices in plan.cells():
            t0 = time.perf_counter()
            results = run_cell(evaluator, directions[plan.ego_classes[i]], plan.steps(i)[list(indices)])
            seconds = time.perf_counter() - t0
            evaluated_seconds += seconds
            for a, stats in zip(indices, results):
                out.store(i, a, stats)
            cells.append(CellRecord(plan.ego_classes[i], indices, evaluator.device, "local", seconds))
            bar.advance(len(indices))
    samples = evaluator.samples_evaluated - samples_before - len(evaluator.y)
    return CrossClassTestResult(
        alphas=plan.alphas, step_scale=np.asarray(plan.step_scale, dtype=np.float64), ego_classes=plan.ego_classes,
        loss=out.loss, accuracy=out.accuracy, flow=out.flow, flow_top_classes=out.top_c, flow_top_share=out.top_s,
        counts=np.asarray(base.count, dtype=np.int64), zero_index=plan.zero_index,
        normalization=directions.normalization, provider=evaluator.device, strategy=evaluator.strategy,
        seconds=time.perf_counter() - start,
        samples_per_second=samples / evaluated_seconds if evaluated_seconds > 0 else 0.0, cells=tuple(cells))
