"""The work of an audit on one worker: the unperturbed pass, class gradients, CCT cells, grid rows.

A :class:`Worker` holds the model and the data and builds its ONNX Runtime sessions on first
use: one evaluator over the audit data (the unperturbed pass, CCT cells, single steps) and
one per interference-model grid. The serial executor runs one worker in this process; the
Ray executor runs one per actor. Every method returns plain results that the driver places
by index, so the numbers do not depend on which worker ran what, nor in which order.

The driver fixes the provider and the perturbation strategy (from the unperturbed pass) and
passes them with every call, so all workers compute the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from auditor.cct import CCTPlan, run_cell
from auditor.data import Dataset
from auditor.gradients import CountSketch, GradientStream, unflatten
from auditor.landscape import evaluate_points, plane_evaluator
from auditor.model import Model
from auditor.runtime import Evaluator, StepStats, resolve_provider

__all__ = ["Payload", "Worker", "Evaluated", "BasePass", "GradientRow", "Gradients", "device_label"]


@dataclass(frozen=True)
class Payload:
    """What every worker receives once: the model, the audit data and the gradient data (checked).

    Attributes
    ----------
    model : Model
    data : Dataset
        The audit data, checked for ``model``.
    gradient_data : Dataset
        The data of the gradient pass (``data`` unless a second set was given).
    batch_size : int
        Samples per runtime call of the evaluators.
    """

    model: Model
    data: Dataset
    gradient_data: Dataset
    batch_size: int


@dataclass(frozen=True)
class Evaluated:
    """Per-class sums at each point of one cell, and where they were computed.

    Attributes
    ----------
    stats : tuple of StepStats
        One per step or point, in the order asked for.
    device : str
        ``"cpu"`` or ``"cuda:<id>"``.
    worker : str
        The worker's name (``"local"`` in this process).
    seconds : float
        Wall time on the worker.
    resumed : bool
        Read back from a checkpoint rather than computed in this run.
    """

    stats: tuple[StepStats, ...]
    device: str
    worker: str
    seconds: float
    resumed: bool = False


@dataclass(frozen=True)
class BasePass:
    """The unperturbed pass, with the provider and strategy it settled on (fixed for the run)."""

    stats: StepStats
    device: str
    strategy: str
    timings: Mapping[str, float]
    worker: str


@dataclass(frozen=True)
class GradientRow:
    """One class's gradient: in full (``vector``, float32 [P]) or as a count sketch with its exact norm."""

    c: int
    loss: float
    vector: np.ndarray | None = None
    sketch: np.ndarray | None = None
    norm: float = float("nan")


@dataclass(frozen=True)
class Gradients:
    """The gradients of a chunk of classes, in the chunk's order."""

    rows: tuple[GradientRow, ...]
    device: str
    worker: str
    seconds: float


def device_label(device: str) -> str:
    """``"cpu"``, or ``"cuda:<id>"`` with the GPU id this process sees first (Ray sets CUDA_VISIBLE_DEVICES)."""
    if device != "cuda":
        return device
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return f"cuda:{visible or 0}"


@dataclass
class _Plane:
    key: str
    evaluator: Evaluator


@dataclass
class Worker:
    """Runs units of audit work on one device (see the module docstring).

    Parameters
    ----------
    payload : Payload
    name : str, default="local"
        How results name this worker (the Ray executor names the node and the actor).
    """

    payload: Payload
    name: str = "local"
    _evaluator: Evaluator | None = field(default=None, init=False, repr=False)
    _plane: _Plane | None = field(default=None, init=False, repr=False)
    _sketch: CountSketch | None = field(default=None, init=False, repr=False)

    def evaluator(self, provider: str, strategy: str) -> Evaluator:
        """The evaluator over the audit data on ``provider``, using ``strategy`` once it is fixed."""
        device = resolve_provider(provider)
        if self._evaluator is None or self._evaluator.device != device:
            self._evaluator = Evaluator(self.payload.model, self.payload.data, provider=device,
                                        batch_size=self.payload.batch_size, strategy=strategy)
        if strategy != "auto":
            self._evaluator.strategy = strategy
        return self._evaluator

    def base(self, provider: str, strategy: str) -> BasePass:
        """The unperturbed pass; with ``strategy="auto"`` it times both strategies and keeps the faster."""
        evaluator = self.evaluator(provider, strategy)
        evaluator.set_directions([{}])
        probing = evaluator.strategy == "auto"
        start = time.perf_counter()
        # per-sample predictions (the report's examples) and the soft confusion Q, from the same pass
        stats = evaluator.evaluate([0.0], keep_predictions=True, soft=True)
        timings = dict(evaluator.timings)
        # the pass itself, without the probe: an upper bound of a CCT step (it also keeps predictions and Q)
        timings["base_pass_s"] = time.perf_counter() - start - (timings.get("probe_s", 0.0) if probing else 0.0)
        return BasePass(stats, evaluator.device, evaluator.strategy, timings, self.name)

    def plane_step_s(self, provider: str, strategy: str) -> float:
        """Seconds of a one-sample evaluation along two directions, as a 2-D model's steps run:
        what its evaluations cost whatever their size (a session build under "rebuild", the
        weights formed from two directions). Timed after a warm-up, and not counted."""
        one = self.evaluator(provider, strategy).restricted(np.arange(1), n_directions=2, strategy=strategy)
        one._counted = False  # the cost model's measurement, not the audit's work
        base = one.base
        one.set_directions([base, base])  # any non-zero directions of θ's shapes
        one.evaluate([1e-3, 1e-3])
        start = time.perf_counter()
        one.evaluate([2e-3, -1e-3])
        return time.perf_counter() - start

    def cct_cell(self, provider: str, strategy: str, plan: CCTPlan, i: int, indices: Sequence[int],
                 direction: np.ndarray) -> Evaluated:
        """One CCT cell: grid steps ``indices`` of ego class ``plan.ego_classes[i]`` along ``direction`` (flat)."""
        return self.steps(provider, strategy, direction, plan.steps(i)[list(indices)])

    def steps(self, provider: str, strategy: str, direction: np.ndarray,
              steps: Sequence[float] | np.ndarray) -> Evaluated:
        """The audit data at ``θ* + step · direction`` for each step, in order (``direction`` flat over θ)."""
        start = time.perf_counter()
        evaluator = self.evaluator(provider, strategy)
        model = self.payload.model
        mapping = unflatten(model.parameter_names, tuple(p.shape for p in model.parameters), direction)
        stats = run_cell(evaluator, mapping, steps)
        return Evaluated(tuple(stats), device_label(evaluator.device), self.name, time.perf_counter() - start)

    def grid_row(self, provider: str, strategy: str, grid: str, subset: np.ndarray,
                 points: Sequence[Sequence[float]], *axes: np.ndarray) -> Evaluated:
        """One row of an interference-model grid (``grid`` names it; its subset and axes never change)."""
        start = time.perf_counter()
        if self._plane is None or self._plane.key != grid:
            self._plane = None  # free the previous grid's session first
            self._plane = _Plane(grid, plane_evaluator(self.payload.model, self.payload.data, subset, axes,
                                                       provider=provider, batch_size=self.payload.batch_size,
                                                       strategy=strategy, parent=self.evaluator(provider, strategy)))
        evaluator = self._plane.evaluator
        stats = evaluate_points(evaluator, points)
        return Evaluated(tuple(stats), device_label(evaluator.device), self.name, time.perf_counter() - start)

    def gradients(self, provider: str, batch_size: int, stream_classes: Sequence[int] | None,
                  classes: Sequence[int], sketch_dim: int = 0, seed: int = 0) -> Gradients:
        """``g_c`` for each of ``classes`` (or its count sketch when ``sketch_dim`` > 0).

        ``stream_classes`` are the classes of the whole gradient pass: the batch size depends
        on them, so a chunk computed here gets the same batches as a serial pass.
        """
        start = time.perf_counter()
        stream = GradientStream(self.payload.model, self.payload.gradient_data, batch_size=batch_size,
                                provider=provider, classes=stream_classes)
        wanted = set(classes)
        stream.classes = [c for c in stream.classes if c in wanted]
        sketch = self._count_sketch(stream.n_parameters, sketch_dim, seed) if sketch_dim else None
        rows = []
        for c, g in stream.run():
            if sketch is None:
                rows.append(GradientRow(c, float(stream.losses[c]), vector=g))
            else:
                s, norm = sketch(g)
                rows.append(GradientRow(c, float(stream.losses[c]), sketch=s, norm=norm))
        return Gradients(tuple(rows), device_label(stream.device), self.name, time.perf_counter() - start)

    def _count_sketch(self, n_parameters: int, dim: int, seed: int) -> CountSketch:
        if self._sketch is None or (len(self._sketch.bucket), self._sketch.dim, self._sketch.seed) != (
                n_parameters, dim, seed):
            self._sketch = CountSketch(n_parameters, dim, seed)
        return self._sketch
