"""The audit's stages as units of work for an executor, each finished unit kept in the checkpoint.

Units: the unperturbed pass; a chunk of classes' gradients (or their count sketches); a CCT
cell (one ego class, its grid steps); one extra step along a direction (the α_s halvings);
one row of an interference-model grid. Evaluation units ("cells") have a key and a digest of
their inputs: with a checkpoint, a stored cell is read back (after its digest is checked)
instead of computed, and a computed one is written as soon as it arrives. Gradients are not
stored: they are cheap next to the CCT, and recomputing them lets the digests check that a
resumed run moves along the very same directions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.cct import FULL_FLOW_MAX_CLASSES, CellRecord, CrossClassTestResult, _Collector, plan_cct
from auditor.data import Dataset
from auditor.execution import Checkpoint, Evaluated, Executor, Gradients, Task
from auditor.execution.checkpoint import digest
from auditor.gradients import ClassGradients, Directions, GradientStream
from auditor.landscape import GridRows
from auditor.model import Model
from auditor.progress import Progress
from auditor.runtime import StepStats

from .options import AuditOptions

if TYPE_CHECKING:
    from .pipeline import AuditRun

__all__ = ["Cell", "run_cells", "fingerprint", "run_gradients", "run_sketches", "run_cct", "step_losses",
           "grid_rows"]


def fingerprint(model: Model, data: Dataset, gradient_data: Dataset, options: AuditOptions) -> dict[str, Any]:
    """What a checkpoint must match: model and data hashes, options, and the versions that compute."""
    from .result import versions

    v = versions()
    return {"model": model.sha256, "n_classes": model.n_classes, "data": data.fingerprint(),
            "gradient_data": "the audit data" if gradient_data is data else gradient_data.fingerprint(),
            "options": options.to_dict(),
            "versions": {k: v[k] for k in ("auditor", "onnxruntime", "onnx", "onnx_ad", "numpy")}}


@dataclass(frozen=True)
class Cell:
    """One evaluation unit: ``prepare(ship)`` gives the digest of its inputs and, when ``ship``, its task.

    ``prepare(False)`` only computes the digest (to check a stored cell), so nothing is put
    in the object store for a cell that is read back.
    """

    key: str
    index: int
    prepare: Callable[[bool], tuple[str, Task | None]]


def run_cells(run: AuditRun, cells: Iterable[Cell]) -> Iterator[tuple[Cell, Evaluated]]:
    """Each cell's result: read back from the checkpoint when stored there, else computed and stored.

    Stored cells come first, one at a time; the rest go to the executor, whose results
    arrive in any order (callers place them by ``cell.index``).
    """
    checkpoint: Checkpoint | None = run.checkpoint
    todo = []
    for cell in cells:
        if checkpoint is not None and checkpoint.has(cell.key):
            expected, _ = cell.prepare(False)
            stored = checkpoint.load(cell.key, expected)
            if stored is not None:
                run.count(stored.stats)
                yield cell, stored
                continue
        todo.append(cell)
    if not todo:
        return
    digests: dict[Task, tuple[Cell, str]] = {}

    def tasks() -> Iterator[Task]:
        for cell in todo:
            expected, task = cell.prepare(True)
            assert task is not None
            digests[task] = (cell, expected)
            yield task

    for task, result in run.executor.map_unordered(tasks()):
        cell, expected = digests.pop(task)
        assert isinstance(result, Evaluated)
        if checkpoint is not None:
            checkpoint.store(cell.key, expected, result)
        run.count(result.stats)
        yield cell, result


def _digest(run: AuditRun, *parts: np.ndarray | str | float) -> str:
    """The digest of a cell's inputs when there is a checkpoint to check it against (hashing a
    ResNet-50-sized direction takes ~0.2 s), else ""."""
    return digest(*parts) if run.checkpoint is not None else ""


def _chunks(items: Sequence[int], executor: Executor) -> list[tuple[int, ...]]:
    """Contiguous chunks of classes: one per serial run (one session), a few per worker on a cluster."""
    n = 1 if executor.n_workers <= 1 else min(len(items), 4 * executor.n_workers)
    return [tuple(int(c) for c in part) for part in np.array_split(np.asarray(items, dtype=np.int64), max(n, 1))
            if len(part)]


def _gradient_results(run: AuditRun, classes: Sequence[int] | None, sketch_dim: int, label: str,
                      batch_size: int) -> tuple[GradientStream, Iterator[Gradients]]:
    # A stream on "cpu" only to learn the classes and the batch size a serial pass would use: no session opens.
    planner = GradientStream(run.model, run.gradient_data, batch_size=batch_size, provider="cpu", classes=classes)
    stream_classes = None if classes is None else tuple(int(c) for c in classes)
    tasks = [Task(f"{label} of classes {chunk[0]}..{chunk[-1]}", "gradients",
                  (run.device, batch_size, stream_classes, chunk, sketch_dim, 0))
             for chunk in _chunks(planner.classes, run.executor)]

    def results() -> Iterator[Gradients]:
        for _, result in run.executor.map_unordered(tasks):
            assert isinstance(result, Gradients)
            yield result

    return planner, results()


def run_gradients(run: AuditRun, classes: Sequence[int] | None, batch_size: int) -> ClassGradients:
    """``g_c`` of ``classes`` (default: every class present), as :func:`auditor.class_gradients` computes them."""
    start = time.perf_counter()
    planner, results = _gradient_results(run, classes, 0, "class gradients", batch_size)
    row_of = {c: i for i, c in enumerate(planner.classes)}
    flat = np.zeros((len(planner.classes), planner.n_parameters), dtype=np.float32)
    losses = np.full(run.model.n_classes, np.nan)
    with Progress(len(planner.classes), "class gradients", enabled=run.progress) as bar:
        for result in results:
            for row in result.rows:
                assert row.vector is not None
                flat[row_of[row.c]] = row.vector
                losses[row.c] = row.loss
            bar.advance(len(result.rows))
    return ClassGradients(classes=tuple(planner.classes), names=tuple(run.model.parameter_names),
                          shapes=tuple(p.shape for p in run.model.parameters), flat=flat, losses=losses,
                          counts=planner.counts, provider=run.device, seconds=time.perf_counter() - start)


def run_sketches(run: AuditRun, dim: int, batch_size: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Count sketches and exact norms of every class gradient, as :func:`auditor.gradients.gradient_sketches`."""
    planner, results = _gradient_results(run, None, dim, "gradient sketches", batch_size)
    row_of = {c: i for i, c in enumerate(planner.classes)}
    sketches = np.zeros((len(planner.classes), dim))
    norms = np.zeros(len(planner.classes))
    with Progress(len(planner.classes), "gradient sketches", enabled=run.progress) as bar:
        for result in results:
            for row in result.rows:
                assert row.sketch is not None
                sketches[row_of[row.c]], norms[row_of[row.c]] = row.sketch, row.norm
            bar.advance(len(result.rows))
    return tuple(planner.classes), sketches, norms


def run_cct(run: AuditRun, directions: Directions, ego_classes: Sequence[int]) -> CrossClassTestResult:
    """The cross-class test, one cell per ego class: each direction computed and shipped when its cell is."""
    start = time.perf_counter()
    plan = plan_cct(directions, run.options.alphas, ego_classes)
    k = run.model.n_classes
    out = _Collector(len(plan.ego_classes), k, len(plan.alphas), k <= FULL_FLOW_MAX_CLASSES)
    for i in range(len(plan.ego_classes)):
        out.store(i, plan.zero_index, run.base)
    cells = plan.cells()
    shipped: list[object] = []

    def cell(n: int) -> Cell:
        i, indices = cells[n]
        c = plan.ego_classes[i]
        label = f"CCT cell (ego class {c}, grid steps {indices[0]}-{indices[-1]})"

        def prepare(ship: bool) -> tuple[str, Task | None]:
            d = directions.vector(c)
            expected = _digest(run, "cct", d, plan.steps(i)[list(indices)])
            if not ship:
                return expected, None
            if not shipped:  # the plan (α grid, step scales) goes to the workers once
                shipped.append(run.executor.put(plan))
            return expected, Task(label, "cct_cell", (run.device, run.strategy, shipped[0], i, indices,
                                                      run.executor.put(d)))

        return Cell(f"cct-c{c}-a{indices[0]}-{indices[-1]}", n, prepare)

    records: list[CellRecord | None] = [None] * len(cells)
    samples, seconds = 0, 0.0
    with Progress(plan.n_evaluations, "cross-class test", enabled=run.progress) as bar:
        bar.advance()  # the unperturbed pass, done at the start
        for done, result in run_cells(run, (cell(n) for n in range(len(cells)))):
            i, indices = cells[done.index]
            for a, stats in zip(indices, result.stats):
                out.store(i, a, stats)
            records[done.index] = CellRecord(plan.ego_classes[i], tuple(indices), result.device, result.worker,
                                              result.seconds, result.resumed)
            if not result.resumed:
                samples += sum(int(s.count.sum()) for s in result.stats)
                seconds += result.seconds
            bar.advance(len(indices))
    return CrossClassTestResult(
        alphas=plan.alphas, step_scale=np.asarray(plan.step_scale, dtype=np.float64), ego_classes=plan.ego_classes,
        loss=out.loss, accuracy=out.accuracy, flow=out.flow, flow_top_classes=out.top_c, flow_top_share=out.top_s,
        counts=np.asarray(run.base.count, dtype=np.int64), zero_index=plan.zero_index,
        normalization=directions.normalization, provider=run.device, strategy=run.strategy,
        seconds=time.perf_counter() - start, samples_per_second=samples / seconds if seconds > 0 else 0.0,
        cells=tuple(r for r in records if r is not None))


def step_losses(run: AuditRun, directions: Directions, cct: CrossClassTestResult) -> Callable[[int, float], np.ndarray]:
    """``evaluate(i, alpha) -> loss [K]`` at ``θ* + alpha·step_scale[i]·d_c`` (the α_s halvings), one cell each."""
    calls: dict[int, int] = {}

    def evaluate(i: int, alpha: float) -> np.ndarray:
        c = cct.ego_classes[i]
        step = float(alpha * cct.step_scale[i])
        calls[c] = calls.get(c, 0) + 1

        def prepare(ship: bool) -> tuple[str, Task | None]:
            d = directions.vector(c)
            expected = _digest(run, "step", d, step)
            task = Task(f"step {step:g} along the direction of class {c}", "steps",
                        (run.device, run.strategy, run.executor.put(d), (step,))) if ship else None
            return expected, task

        for _, result in run_cells(run, [Cell(f"step-c{c}-{calls[c]}", 0, prepare)]):
            return result.stats[0].loss
        raise AssertionError("run_cells yielded nothing for one cell")  # pragma: no cover

    return evaluate


def grid_rows(run: AuditRun, a: int, b: int) -> GridRows:
    """:data:`auditor.landscape.GridRows` for the pair ``(a, b)``: each row a cell; subset and axes shipped once.

    A model calls it once for its lattice and once per refinement step; the calls are
    numbered, so every cell has its own checkpoint key (a resumed run makes the same calls:
    each refinement step follows from the values before it).
    """
    calls = [0]

    def rows(subset: np.ndarray, axes: Sequence[np.ndarray],
             points: Sequence[Sequence[tuple[float, ...]]]) -> Iterator[tuple[int, Sequence[StepStats]]]:
        grid = _digest(run, "grid", subset, *axes)
        # the worker keeps one evaluator per name: the lattice's subset and the refinement's differ
        plane = f"{a}-{b}-{digest(np.asarray(subset, dtype=np.int64))[:12]}"
        shipped: list[object] = []
        call = calls[0]
        calls[0] += 1

        def cell(i: int) -> Cell:
            label = f"interference-model row {i} of pair {a}/{b}" + (f" (refinement {call})" if call else "")

            def prepare(ship: bool) -> tuple[str, Task | None]:
                expected = _digest(run, grid, np.asarray(points[i], dtype=np.float64))
                if not ship:
                    return expected, None
                if not shipped:
                    shipped.extend([run.executor.put(subset), *(run.executor.put(axis) for axis in axes)])
                return expected, Task(label, "grid_row", (run.device, run.strategy, plane,
                                                          shipped[0], points[i], *shipped[1:]))

            return Cell(f"grid-{a}-{b}-r{i}" if not call else f"grid-{a}-{b}-c{call}-r{i}", i, prepare)

        for done, result in run_cells(run, (cell(i) for i in range(len(points)))):
            yield done.index, result.stats

    return rows
