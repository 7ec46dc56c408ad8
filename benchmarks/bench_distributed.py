"""Serial vs Ray audits on this machine: CCT wall time, per-cell time and per-cell overhead.

Prints, in one run (serial and Ray runs interleaved, best of --repeat each):
  1. a CPU-bound audit (residual CNN, --samples images, 10 ego classes x 8 steps): CCT wall time
     serially and on Ray with 2 workers, the ratio, the mean time of one cell on its worker, and
     the overhead per cell (wall time x workers / cells - mean cell time);
  2. the same for a model with a ResNet-50-sized θ (25.6 M parameters, a 102 MB direction per
     cell) on a few samples, so the cells are short and the cost of shipping a direction shows.
The ImageNet-size estimate in benchmarks/RESULTS.md is computed from these figures.

Run: python benchmarks/bench_distributed.py [--samples 2048] [--repeat 2]   (needs auditor[ray] and torch)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data, export, machine, residual_cnn  # noqa: E402


def big_mlp(path: Path, n_in: int = 5120, hidden: int = 5000, k: int = 10) -> Path:
    """A Gemm-ReLU-Gemm classifier with ResNet-50's parameter count (25.6 M)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((hidden, n_in)) / np.sqrt(n_in)).astype(np.float32), "w0"),
             numpy_helper.from_array(np.zeros(hidden, np.float32), "b0"),
             numpy_helper.from_array((rng.standard_normal((k, hidden)) / np.sqrt(hidden)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(k, np.float32), "b1")]
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w1", "b1"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def cct_figures(result, workers: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    cells = result.cct.cells
    wall = result.timings["cct_s"]
    cell = float(np.mean([c.seconds for c in cells]))
    return {"wall": wall, "cell": cell, "overhead": wall * workers / len(cells) - cell,
            "start": result.timings.get("start_workers_s", 0.0), "n_cells": len(cells)}


def compare(label: str, model, ds, options, repeat: int) -> None:  # type: ignore[no-untyped-def]
    import auditor
    from auditor.execution import RayExecutor

    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, workers in (("serial", 1), ("ray", 2)):
            executor = RayExecutor(workers=2) if name == "ray" else None
            figures = cct_figures(auditor.run_audit(model, ds, options, executor=executor, gate=None), workers)
            if name not in best or figures["wall"] < best[name]["wall"]:
                best[name] = figures
    s, r = best["serial"], best["ray"]
    print(f"\n{label}: {s['n_cells']:.0f} cells")
    print(f"{'':28}{'serial':>12}{'Ray, 2 workers':>16}")
    print(f"{'CCT wall time (s)':28}{s['wall']:12.3f}{r['wall']:16.3f}")
    print(f"{'one cell on its worker (s)':28}{s['cell']:12.3f}{r['cell']:16.3f}")
    print(f"{'overhead per cell (ms)':28}{1000 * s['overhead']:12.1f}{1000 * r['overhead']:16.1f}")
    print(f"{'workers started in (s)':28}{s['start']:12.3f}{r['start']:16.3f}")
    print(f"serial / Ray wall time = {s['wall'] / r['wall']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray on the loopback address only
    import ray

    import auditor
    from auditor.gradients import EgoDirectionStream

    print(machine(), f"ray {ray.__version__}")
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    print(f"local Ray started in {time.perf_counter() - t:.1f} s (not counted below)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shape, k = (3, 32, 32), 10
            model = auditor.load_model(export(residual_cnn(k, width=16), Path(tmp) / "cnn.onnx", shape))
            x, y = data(args.samples, k, shape)
            options = auditor.AuditOptions(provider="cpu", strategy="rebuild", pairs=0,
                                           alphas=tuple(np.linspace(-0.2, 0.2, 9)))
            compare(f"1. CPU-bound audit: residual CNN ({model.n_parameters:,} parameters), {args.samples} images, "
                    "10 ego classes x 8 steps", model, auditor.Dataset(x, y), options, args.repeat)
            big = auditor.load_model(big_mlp(Path(tmp) / "big.onnx"))
            rng = np.random.default_rng(0)
            xb = rng.standard_normal((40, 5120)).astype(np.float32)
            yb = np.arange(40) % 10
            options = auditor.AuditOptions(provider="cpu", strategy="inputs", pairs=0, alphas=(-0.1, 0.0, 0.1),
                                           batch_size=40)
            compare(f"2. ResNet-50-sized θ ({big.n_parameters:,} parameters, {4 * big.n_parameters / 1e6:.0f} MB per "
                    "direction), 40 samples, 10 ego classes x 2 steps", big, auditor.Dataset(xb, yb), options,
                    args.repeat)
            directions = EgoDirectionStream(big, auditor.class_gradients(big, auditor.Dataset(xb, yb)))
            t = time.perf_counter()
            directions.vector(0)
            print(f"computing one such direction from its gradient on the driver: {time.perf_counter() - t:.3f} s")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
