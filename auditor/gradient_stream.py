"""The gradient pass itself: class-pure batches through the gradient graph, one class's ``g_c`` at a time.

:class:`GradientStream` runs the reverse-mode graph of :func:`auditor.graph.gradient_graph`
under ONNX Runtime. Two ways to use the CPU's cores (benchmarks/RESULTS.md, "Gradient
pass"):

- one worker: one session whose ops use ONNX Runtime's intra-op threads (always on CUDA);
- several workers (the default on CPU): one session with one intra-op thread, run by
  several Python threads at once, each on its own batches with its own IOBinding and input
  buffers. The gradient graph's many small, memory-bound ops scale badly over intra-op
  threads; whole batches on separate cores scale almost linearly.

Either way the batch results of a class are summed in batch order on the calling thread,
so a class's gradient does not depend on which worker ran which batch.
"""

from __future__ import annotations

import os
import queue
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from . import graph as G
from .errors import OptionError
from .runtime import _to_device, make_session, resolve_provider

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model

__all__ = ["GradientStream", "graph_batch", "padded_samples", "default_workers", "memory_workers", "run_bytes",
           "available_memory", "check_classes"]

#: Batch sizes whose padded work is within this fraction of the least count as ties
#: (the larger batch wins: fewer runs of the graph).
NEAR_TIE = 0.01


def check_classes(model: Model, y: np.ndarray, classes: Sequence[int] | None) -> list[int]:
    """The classes to compute: ``classes`` (checked against the model) that are present in ``y``, ascending."""
    present = sorted(set(np.unique(y).tolist()))
    if classes is None:
        return present
    bad = [c for c in classes if not 0 <= int(c) < model.n_classes]
    if bad:
        raise OptionError(f"classes {bad} are out of range; the model has classes 0..{model.n_classes - 1}")
    return [int(c) for c in sorted(set(classes)) if c in present]


def padded_samples(counts: Sequence[int], batch: int) -> int:
    """Samples the gradient graph runs for class sizes ``counts`` at graph batch ``batch`` (last batches padded)."""
    return sum(-(-int(n) // batch) * batch for n in counts)


def graph_batch(counts: Sequence[int], batch_size: int) -> int:
    """The gradient graph's batch: the ``b`` that pads the class-pure batches least.

    Every class runs ``ceil(n_c / b)`` batches of ``b`` samples (the last one padded with
    zero-weight copies), so the work is ``Σ_c ceil(n_c / b)·b`` samples. ``b`` ranges over
    ``[ceil(top / 2), top]`` with ``top = min(batch_size, largest class)``: never under half
    the batch asked for, so small batches' per-run costs do not come back. The largest
    ``b`` whose work is within :data:`NEAR_TIE` of the least wins: 10 classes of 130
    samples with ``batch_size=128`` run batches of 65 (1,300 samples), not 128 (2,560).
    """
    sizes = [int(n) for n in counts if int(n) > 0]
    if not sizes:
        return 1
    top = max(1, min(int(batch_size), max(sizes)))
    candidates = np.arange(-(-top // 2), top + 1)
    n = np.asarray(sizes)[:, None]
    work = (-(-n // candidates[None, :]) * candidates[None, :]).sum(axis=0)
    within = np.flatnonzero(work <= work.min() * (1.0 + NEAR_TIE))
    return int(candidates[within[-1]])


def default_workers() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def run_bytes(graph: onnx.ModelProto) -> int:
    """Bytes of every intermediate tensor of ``graph`` with a static shape: what one run could hold.

    An upper bound: ONNX Runtime reuses buffers (the benchmark's gradient graph holds a
    fifth to an eighth of it at once).
    """
    total = 0
    for info in graph.graph.value_info:
        kind = info.type.tensor_type
        if not kind.HasField("shape") or not kind.elem_type:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in kind.shape.dim]
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type)).itemsize
        except (KeyError, TypeError):
            itemsize = 4
        total += int(np.prod(dims, dtype=np.int64)) * itemsize
    return total


def available_memory() -> int | None:
    """Bytes the OS says a new allocation can get without swapping (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_workers(graph: onnx.ModelProto, available: int | None) -> int:
    """How many runs of ``graph`` fit in ``available`` bytes by :func:`run_bytes` (at least 1; no limit if unknown)."""
    per_run = run_bytes(graph)
    if available is None or per_run <= 0:
        return 1 << 30
    return max(1, available // per_run)


def _check_workers(workers: int | None, device: str, n_batches: int) -> int:
    """Validated worker count: CUDA always runs one; never more workers than batches."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or int(workers) < 1):
        raise OptionError(f"gradient workers must be a whole number >= 1 (or None for one per CPU core), "
                          f"got {workers!r}")
    if device == "cuda":
        return 1
    wanted = default_workers() if workers is None else int(workers)
    return max(1, min(wanted, n_batches))


class GradientStream:
    """Yields ``(c, g_c)`` one class at a time, so a caller may reduce each gradient on the fly.

    :func:`auditor.class_gradients` stores them all; a large-K audit keeps only a sketch of
    each (:func:`auditor.gradients.gradient_sketches`) and recomputes the few it needs in full.

    Parameters
    ----------
    model : Model
    data : Dataset
    batch_size : int, default=128
        Most samples per run of the gradient graph (see :func:`graph_batch`).
    provider : {"auto", "cuda", "cpu"}, default="auto"
    classes : sequence of int, optional
        Only these classes (default: every class present). The graph batch depends on them.
    workers : int, optional
        Batches run at once on CPU, each by one thread (default: one per CPU core, fewer
        if that many runs' intermediate tensors would not fit in the available memory,
        :func:`memory_workers`); 1 runs one batch at a time over ONNX Runtime's intra-op
        threads. CUDA always runs one. Each worker holds one batch's intermediates.
    """

    def __init__(self, model: Model, data: Dataset, *, batch_size: int = 128, provider: str = "auto",
                 classes: Sequence[int] | None = None, workers: int | None = None) -> None:
        from .data import check_dataset

        data = check_dataset(data, model)
        self.model = model
        self.features, self.y = data.features, np.asarray(data.y)
        self.device = resolve_provider(provider)
        self.classes = check_classes(model, self.y, classes)
        self.counts = np.bincount(self.y, minlength=model.n_classes).astype(np.int64)
        if isinstance(batch_size, bool) or batch_size < 1:
            raise OptionError(f"batch size must be >= 1, got {batch_size}")
        self.batch = int(model.fixed_batch or graph_batch(self.counts[self.classes].tolist(), batch_size))
        self.sizes = [p.size for p in model.parameters]
        self.n_parameters = sum(self.sizes)
        self.losses = np.full(model.n_classes, np.nan)
        self.n_batches = sum(-(-int(self.counts[c]) // self.batch) for c in self.classes)
        self.workers = _check_workers(workers, self.device, self.n_batches)
        self._default_workers = workers is None

    def _batches(self) -> Iterator[tuple[int, np.ndarray, bool]]:
        """``(c, sample indices, last batch of c)`` in class order, then batch order."""
        for c in self.classes:
            idx_all = np.flatnonzero(self.y == c)
            starts = range(0, len(idx_all), self.batch)
            for s in starts:
                yield c, idx_all[s:s + self.batch], s == starts[-1]

    def run(self, tick: Callable[[], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(c, g_c)`` for every class in :attr:`classes`, in order; ``tick`` after each batch."""
        from .reverse_rules import gradient_session_config

        shapes = {n: a.shape[1:] for n, a in self.features.items()}
        graph = G.gradient_graph(self.model, self.batch, shapes)
        if self._default_workers and self.workers > 1:  # each worker's run holds its own intermediates
            self.workers = min(self.workers, memory_workers(graph, available_memory()))
        # On CPU, no planned memory block per run: one warm-up run instead of two (CUDA as before).
        session = make_session(graph, self.device, threads=1 if self.workers > 1 else 0,
                               memory_pattern=self.device == "cuda",
                               config=gradient_session_config(self.model.session_config))
        slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for _ in range(self.workers):
            slots.put(_Slot(self, session))
        results = self._serial(slots.get()) if self.workers == 1 else self._parallel(slots)
        try:
            yield from self._sums(results, tick)
        finally:
            results.close()  # a caller that stops early stops the workers too

    def _sums(self, results: Iterator[tuple[int, bool, list[np.ndarray]]],
              tick: Callable[[], None] | None) -> Iterator[tuple[int, np.ndarray]]:
        """Each class's batch results summed in batch order (the same sums whichever worker ran them)."""
        g = np.zeros(self.n_parameters, dtype=np.float32)
        loss = 0.0
        for c, last, values in results:
            loss += float(values[0])
            offset = 0
            for size, value in zip(self.sizes, values[1:]):
                g[offset:offset + size] += value.reshape(-1)
                offset += size
            if tick is not None:
                tick()
            if last:
                self.losses[c] = loss
                yield c, g
                g = np.zeros(self.n_parameters, dtype=np.float32)
                loss = 0.0

    def _serial(self, slot: _Slot) -> Generator[tuple[int, bool, list[np.ndarray]]]:
        """Batch results in batch order, one batch at a time."""
        for c, idx, last in self._batches():
            yield c, last, slot.run(c, idx)

    def _parallel(self, slots: queue.SimpleQueue[_Slot]) -> Generator[tuple[int, bool, list[np.ndarray]]]:
        """Batch results in batch order, computed ``workers`` at a time (at most 2x that many ahead)."""

        def job(c: int, idx: np.ndarray) -> list[np.ndarray]:
            slot = slots.get()
            try:
                return slot.run(c, idx)
            finally:
                slots.put(slot)

        pending: deque[tuple[int, bool, Future[list[np.ndarray]]]] = deque()
        batches = self._batches()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="auditor-gradients")
        try:
            for c, idx, last in batches:
                pending.append((c, last, pool.submit(job, c, idx)))
                if len(pending) >= 2 * self.workers:
                    c0, last0, future = pending.popleft()
                    yield c0, last0, future.result()
            while pending:
                c0, last0, future = pending.popleft()
                yield c0, last0, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _Slot:
    """One worker's IOBinding (θ* and the seed bound once) and input buffers of one graph batch."""

    def __init__(self, stream: GradientStream, session: ort.InferenceSession) -> None:
        model, device = stream.model, stream.device
        self.stream, self.session = stream, session
        self.binding = session.io_binding()
        weights = model.weights()
        inputs = {i.name for i in session.get_inputs()}
        for p in model.parameters:  # θ* is baked into the graph unless that optimisation is off
            if p.name in inputs:
                self.binding.bind_ortvalue_input(p.name, _to_device(weights[p.name].astype(p.dtype, copy=False),
                                                                    device))
        self.binding.bind_ortvalue_input(f"adj_{G.TOTAL_LOSS}", _to_device(np.ones(1, np.float32), device))
        for output in session.get_outputs():
            self.binding.bind_output(output.name, "cpu")
        self.buffers = {n: np.zeros((stream.batch, *a.shape[1:]), dtype=a.dtype) for n, a in stream.features.items()}
        self.target = np.zeros((stream.batch, model.n_classes), dtype=np.float32)

    def run(self, c: int, idx: np.ndarray) -> list[np.ndarray]:
        """The loss and the weight gradients of one batch of class ``c`` (samples ``idx``), host arrays."""
        stream, device = self.stream, self.stream.device
        for name, xb in self.buffers.items():
            # The last batch is padded with copies of a real sample (weight 0): zero rows
            # could make a model divide by zero (an all-zero attention mask) and NaN
            # times a zero weight is still NaN in the adjoint.
            xb[: len(idx)] = stream.features[name][idx]
            xb[len(idx):] = stream.features[name][idx[0]]
            self.binding.bind_ortvalue_input(name, _to_device(xb, device))
        self.target[:] = 0
        self.target[: len(idx), c] = 1.0 / stream.counts[c]
        self.binding.bind_ortvalue_input(G.TARGET, _to_device(self.target, device))
        self.session.run_with_iobinding(self.binding)
        values: list[np.ndarray] = self.binding.copy_outputs_to_cpu()
        return values
