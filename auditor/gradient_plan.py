"""How the gradient pass is cut up: the graph batch, and how many workers run batches at once.

See :mod:`auditor.gradient_stream`. Every choice here is a pure function of its arguments
(class sizes, the machine's cores, memory and cache), so a planner and a worker on the
same machine make the same choices.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import numpy as np
import onnx

from .errors import OptionError

__all__ = ["NEAR_TIE", "MIN_CACHE_BATCH", "MIN_PARALLEL_BYTES", "padded_samples", "graph_batch", "default_workers",
           "check_workers", "run_bytes", "available_memory", "memory_workers", "last_level_cache", "largest_tensor",
           "cache_batch", "kernel_rows", "MIN_CONTRACTION", "contraction_batch"]

#: The smallest batch :func:`cache_batch` gives (batches of 4 ran slower than 8-16).
MIN_CACHE_BATCH = 8
#: A Conv's weight gradient contracts over batch x output positions: at least this many, or
#: its MatMuls run far below speed (ResNet-18 at 64x64, whose last Convs have 2x2 outputs:
#: batches of 8 took 1.4x the time of batches of 40).
MIN_CONTRACTION = 256
#: By default a gradient batch whose forward activations total less than this runs on one
#: worker: handing it to a thread costs more than it saves (the demo's MLP: ~40 KB a batch).
MIN_PARALLEL_BYTES = 4 << 20
#: Batch sizes whose padded work is within this fraction of the least count as ties
#: (the larger batch wins: fewer runs of the graph).
NEAR_TIE = 0.01


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
    """The CPU cores this process may run on (its affinity mask where the OS has one), at most
    ``OMP_NUM_THREADS`` when that is set: a Ray actor given one CPU gets ``OMP_NUM_THREADS=1``,
    and several actors on one machine would otherwise each run a worker per core."""
    if hasattr(os, "sched_getaffinity"):
        cores = max(1, len(os.sched_getaffinity(0)))
    else:
        cores = max(1, os.cpu_count() or 1)
    told = os.environ.get("OMP_NUM_THREADS", "").strip()
    return min(cores, int(told)) if told.isdigit() and int(told) >= 1 else cores


def run_bytes(graph: onnx.ModelProto) -> int:
    """Bytes of every intermediate tensor of ``graph`` with a static shape: what one run could hold.

    An upper bound: ONNX Runtime reuses buffers (the benchmark's gradient graph holds a
    fifth to an eighth of it at once).
    """
    return sum(_tensor_bytes(info) for info in graph.graph.value_info)


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


def check_workers(workers: int | None, device: str) -> int:
    """The worker count asked for, validated: CUDA always runs one; None means one per core."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or int(workers) < 1):
        raise OptionError(f"gradient workers must be a whole number >= 1 (or None for one per CPU core), "
                          f"got {workers!r}")
    if device == "cuda":
        return 1
    return default_workers() if workers is None else int(workers)


def last_level_cache() -> int | None:
    """Bytes of the largest CPU cache the OS lists (Linux sysfs), or None if unknown."""
    sizes = []
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(index, encoding="ascii") as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
        except (OSError, ValueError):
            continue
    return max(sizes) if sizes else None


def largest_tensor(graph: onnx.ModelProto) -> int:
    """Bytes of the largest intermediate tensor of ``graph`` with a static shape (0 if none)."""
    return max([_tensor_bytes(info) for info in graph.graph.value_info] or [0])


def kernel_rows(graph: onnx.ModelProto) -> int:
    """The most kernel rows of any Conv in ``graph`` (1 without one).

    A Conv's weight gradient stacks that many row-shifted copies of its padded input
    (:mod:`auditor.conv_gradient`), the gradient pass's largest tensors: the largest forward
    activation times this sizes them without building the gradient graph.
    """
    shapes = {t.name: list(t.dims) for t in graph.graph.initializer}
    rows = 1
    for node in graph.graph.node:
        if node.op_type != "Conv":
            continue
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
        if kernel is None and len(node.input) > 1:
            kernel = shapes.get(node.input[1], [])[2:]
        if kernel:
            rows = max(rows, int(kernel[0]))
    return rows


def contraction_batch(graph: onnx.ModelProto) -> int:
    """The batch that gives every Conv's weight gradient :data:`MIN_CONTRACTION` terms to sum:
    ``ceil(MIN_CONTRACTION / positions)`` for the Conv with the fewest output positions in
    ``graph`` (shapes inferred at batch 1; 1 without a Conv of known shape)."""
    outputs = {n.output[0] for n in graph.graph.node if n.op_type == "Conv"}
    fewest = None
    for info in [*graph.graph.value_info, *graph.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if info.name in outputs and len(dims) > 2 and all(d.HasField("dim_value") for d in dims[2:]):
            positions = int(np.prod([d.dim_value for d in dims[2:]]))
            fewest = positions if fewest is None else min(fewest, positions)
    return 1 if not fewest else -(-MIN_CONTRACTION // fewest)


def cache_batch(largest_per_sample: int, workers: int, cache: int | None) -> int:
    """The largest batch whose biggest gradient-graph tensor fits in half of one worker's share of ``cache``.

    With one-thread workers, small batches keep a layer's operands (the weight gradient's
    shifted input copies, its MatMul operands) in the shared cache: batches of 8-16 ran the
    benchmark's gradient pass ~12% faster than batches of 128 (benchmarks/RESULTS.md,
    "Gradient pass"). At least :data:`MIN_CACHE_BATCH`; 32 MiB when the cache is unknown.
    """
    share = (cache or 32 << 20) // max(1, workers)
    return max(MIN_CACHE_BATCH, share // 2 // max(1, largest_per_sample))


def _tensor_bytes(info: onnx.ValueInfoProto) -> int:
    kind = info.type.tensor_type
    if not kind.HasField("shape") or not kind.elem_type:
        return 0
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in kind.shape.dim]
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type)).itemsize
    except (KeyError, TypeError):
        itemsize = 4
    return int(np.prod(dims, dtype=np.int64)) * itemsize
