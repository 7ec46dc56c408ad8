"""A default audit against its own cross-class test: total / CCT and the cost of every stage.

Prints, for the bundled demo (digits MLP, 899 samples; several audits, the median) and a
ResNet-18 (11M parameters, BasicBlocks with BatchNorm, random weights; 200 samples of
3x64x64, K = 10; one audit), the plan and per stage the planned and actual evaluations,
FPE (passes over the audit data) and seconds, then total / CCT (the goal: <= 1.5; the
budget's default keeps everything but the CCT to half the CCT's cost). For the ResNet-18
it also times the two perturbation strategies at that size, interleaved: weights as graph
inputs, a session rebuilt per step with the weights handed over in memory (what the
auditor does), and the same rebuild with the weights serialised into the model (before).

Run: python benchmarks/bench_audit.py [--model demo|resnet18|both] [--repeat 5] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from _resnet18 import export_resnet18, images  # noqa: E402


def print_cost(result: Any) -> None:
    from auditor.budget import STAGES

    cost = result.cost
    print(f"  one FPE = {cost.seconds_per_fpe:.4g} s (a pass over {cost.n_samples} samples, strategy "
          f"{cost.strategy}); 2-D models: {cost.design.reason if cost.design else '—'}")
    print(f"  {'stage':<20} {'planned evals':>13} {'FPE':>8} {'s':>8}   {'actual evals':>12} {'FPE':>8} {'s':>8}")
    for stage in STAGES:
        p, a = cost.planned.get(stage), cost.actual.get(stage)
        if p is None or a is None:
            continue
        print(f"  {stage:<20} {p.evaluations:13d} {p.fpe:8.1f} {p.seconds:8.3g}   {a.evaluations:12d} {a.fpe:8.1f} "
              f"{a.seconds:8.3g}")
    t = result.timings
    print(f"  total {t['total_s']:.3g} s, CCT {t['cct_s']:.3g} s: total / CCT = {t['total_s'] / t['cct_s']:.2f}")


def demo(repeat: int, device: str) -> None:
    import auditor
    from auditor.demo import demo_paths

    paths = demo_paths()
    model, data, train = (auditor.load_model(paths.model), auditor.load_data(paths.data),
                          auditor.load_data(paths.train))
    options = auditor.AuditOptions(provider=device)
    auditor.run_audit(model, data, options, gradient_data=train, gate=None)  # warm-up: imports, first sessions
    results = [auditor.run_audit(model, data, options, gradient_data=train, gate=None) for _ in range(repeat)]
    ratios = [r.timings["total_s"] / r.timings["cct_s"] for r in results]
    print(f"\ndemo (digits MLP, {model.n_parameters:,} parameters, {len(data)} samples, gradients on "
          f"{len(train)}): {repeat} default audits, total / CCT = " + ", ".join(f"{x:.2f}" for x in ratios)
          + f"; median {statistics.median(ratios):.2f}")
    print_cost(sorted(results, key=lambda r: r.timings["total_s"] / r.timings["cct_s"])[len(results) // 2])


def strategies(model: Any, data: Any, rounds: int = 2) -> None:
    """Both perturbation strategies (and the old serialised rebuild) at this size, interleaved."""
    import onnx
    from onnx import numpy_helper

    from auditor import graph as G
    from auditor.runtime import Evaluator, make_session

    rng = np.random.default_rng(0)
    direction = {p.name: rng.standard_normal(p.shape).astype(np.float32) * 1e-3 for p in model.parameters}
    evaluators = {s: Evaluator(model, data, strategy=s) for s in ("inputs", "rebuild")}
    for ev in evaluators.values():
        ev.set_directions([direction])
        ev.evaluate([0.0])  # warm-up (session builds)
    shell = G.evaluation_graph(model, keep_weights=False).SerializeToString()
    x, y = next(iter(data.features.values())), np.asarray(data.y)

    def old_rebuild(c: float) -> None:
        weights = evaluators["rebuild"].perturbed_weights([c])
        extra = onnx.ModelProto(graph=onnx.GraphProto(initializer=[numpy_helper.from_array(v, n)
                                                                   for n, v in weights.items()]))
        session = make_session(shell + extra.SerializeToString(), "cpu")
        session.run([G.LOSS], {model.input_name: x, G.LABELS: y})

    steps = {"inputs": lambda c: evaluators["inputs"].evaluate([c]),
             "rebuild (in-memory weights)": lambda c: evaluators["rebuild"].evaluate([c]),
             "rebuild (serialised, before)": old_rebuild}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step(0.01 * (r + 1))
            times[name].append(time.perf_counter() - start)
    print(f"  one step over {len(y)} samples, best of {rounds}, interleaved: "
          + "; ".join(f"{k} {min(v):.3g} s" for k, v in times.items()))


def resnet18(device: str) -> None:
    import auditor

    with tempfile.TemporaryDirectory() as tmp:
        path = export_resnet18(Path(tmp) / "resnet18.onnx")
        model = auditor.load_model(path)
        x, y = images(200, 10)
        data = auditor.Dataset(x, y)
        print(f"\nResNet-18 ({model.n_parameters:,} parameters), {len(y)} samples of 3x64x64, K = 10:")
        strategies(model, data)
        start = time.perf_counter()
        result = auditor.run_audit(model, data, auditor.AuditOptions(provider=device), gate=None,
                                   log=lambda m: print(f"  [{time.perf_counter() - start:6.1f} s] {m}"))
        print(f"  default audit: {time.perf_counter() - start:.1f} s wall clock; strategy probe: "
              + ", ".join(f"{k} {v:.3g}" for k, v in result.timings.items() if k.startswith("strategy_")))
        print_cost(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "resnet18", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=5, help="demo audits (the median is shown)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.model in ("demo", "both"):
        demo(args.repeat, args.device)
    if args.model in ("resnet18", "both"):
        resnet18(args.device)


if __name__ == "__main__":
    main()
