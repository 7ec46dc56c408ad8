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

import queue
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from . import gradient_plan as P
from . import graph as G
from .errors import ModelError, OptionError
from .runtime import _to_device, make_session, resolve_provider

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model

__all__ = ["GradientStream", "check_classes"]

def check_classes(model: Model, y: np.ndarray, classes: Sequence[int] | None) -> list[int]:
    """The classes to compute: ``classes`` (checked against the model) that are present in ``y``, ascending."""
    present = sorted(set(np.unique(y).tolist()))
    if classes is None:
        return present
    bad = [c for c in classes if not 0 <= int(c) < model.n_classes]
    if bad:
        raise OptionError(f"classes {bad} are out of range; the model has classes 0..{model.n_classes - 1}")
    return [int(c) for c in sorted(set(classes)) if c in present]


class GradientStream:
    """Yields ``(c, g_c)`` one class at a time, so a caller may reduce each gradient on the fly.

    :func:`auditor.class_gradients` stores them all; a large-K audit keeps only a sketch of
    each (:func:`auditor.gradients.gradient_sketches`) and recomputes the few it needs in full.

    Parameters
    ----------
    model : Model
    data : Dataset
    batch_size : int, default=128
        Most samples per run of the gradient graph: with several workers, fewer if a
        batch's largest tensor would not stay in the CPU cache
        (:func:`auditor.gradient_plan.cache_batch`); then the batch that pads the classes'
        last batches least (:func:`auditor.gradient_plan.graph_batch`).
    provider : {"auto", "cuda", "cpu"}, default="auto"
    classes : sequence of int, optional
        Only these classes (default: every class present). The graph batch depends on them.
    workers : int, optional
        Batches run at once on CPU, each by one thread (default: one per CPU core, fewer
        if that many runs' intermediate tensors would not fit in the available memory, one
        when a batch's forward activations are under :data:`~auditor.gradient_plan.MIN_PARALLEL_BYTES`,
        :func:`auditor.gradient_plan.memory_workers`); 1 runs one batch at a time over ONNX Runtime's intra-op
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
        wanted = P.check_workers(workers, self.device)
        forward = None
        if wanted > 1 and self.classes and not model.fixed_batch:
            try:  # only sizes the batch: a graph whose shapes do not infer here runs unsized
                forward = G.forward_shapes(model, 1, {n: a.shape[1:] for n, a in self.features.items()})
            except ModelError:
                forward = None
            top = min(batch_size, int(self.counts[self.classes].max()))
            if forward is not None and workers is None and P.run_bytes(forward) * top < P.MIN_PARALLEL_BYTES:
                wanted = 1  # a batch this small costs less than handing it to a thread
        limit = batch_size if forward is None else self._batch_limit(batch_size, wanted, forward)
        self.batch = int(model.fixed_batch or P.graph_batch(self.counts[self.classes].tolist(), limit))
        self.sizes = [p.size for p in model.parameters]
        self.n_parameters = sum(self.sizes)
        self.losses = np.full(model.n_classes, np.nan)
        self.n_batches = sum(-(-int(self.counts[c]) // self.batch) for c in self.classes)
        self.workers = max(1, min(wanted, self.n_batches))
        self._default_workers = workers is None

    def _batch_limit(self, batch_size: int, workers: int, forward: onnx.ModelProto) -> int:
        """``batch_size``, or less for one-thread workers: what keeps a batch's largest tensor in cache
        (the forward pass's largest activation times :func:`~auditor.gradient_plan.kernel_rows`:
        building a gradient graph only to measure its tensors cost a second graph build), but
        never less than what keeps the weight gradients' MatMuls efficient
        (:func:`~auditor.gradient_plan.contraction_batch`)."""
        if workers <= 1:
            return batch_size
        per_sample = P.largest_tensor(forward) * P.kernel_rows(forward)
        cached = P.cache_batch(per_sample, workers, P.last_level_cache())
        return min(batch_size, max(cached, P.contraction_batch(forward)))

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
            self.workers = min(self.workers, P.memory_workers(graph, P.available_memory()))
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
