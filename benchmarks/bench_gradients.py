"""Cost of all class gradients, against one plain ONNX Runtime forward pass and PyTorch autograd.

Prints, in one run, with the variants interleaved (each repetition runs every variant once,
in turn; min and median over the repetitions):

1. the whole data set: ORT forward at θ* (the audit's evaluation graph, batches of
   ``--batch-size``), ``auditor.class_gradients`` (graph construction included; default
   workers, one per core, and ``workers=1``: one batch at a time over ONNX Runtime's
   intra-op threads), PyTorch autograd forward+backward of the same network on the same
   class-sorted batches; ratios gradients / forward (goal <= 4) and gradients / PyTorch
   (goal <= 1).
2. one batch through the gradient graph: every optimisation on, each one switched off
   (``auditor.reverse_rules.disabled``), and all off (onnx-ad's own rules as emitted);
   each as a multiple of one forward batch.

The machine is shared: the load average is printed before and after; compare ratios
from one run, and prefer the minima when the medians are far apart.

Run: python benchmarks/bench_gradients.py [--samples 2560] [--repeat 5] [--batch-repeat 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data, export, machine, residual_cnn  # noqa: E402

PAUSE = 0.1  # seconds between two timed calls: idle ORT/OpenMP threads stop spinning


def interleaved(variants: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds of every variant, ``repeat`` rounds, the variants alternating.

    One warm-up round first. CPU time counts only the time this process ran, so it moves
    less than wall time when other processes take the cores (idle threads that spin count).
    """
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for round_ in range(repeat + 1):
        for name, fn in variants.items():
            time.sleep(PAUSE)
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            if round_:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def torch_gradients(net, x: np.ndarray, y: np.ndarray, k: int, batch: int) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run() -> None:
        for c in range(k):
            net.zero_grad()
            idx = torch.nonzero(yt == c).flatten()
            for s in range(0, len(idx), batch):
                b = idx[s:s + batch]
                loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b], reduction="sum") / len(idx)
                loss.backward()

    return run


def forward_pass(model, x: np.ndarray, y: np.ndarray, batch: int) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    from auditor import graph as G
    from auditor.runtime import make_session

    session = make_session(G.evaluation_graph(model), "cpu")
    batches = [(x[s:s + batch], y[s:s + batch]) for s in range(0, len(x), batch)]

    def run() -> None:
        for xb, yb in batches:
            session.run(None, {model.input_name: xb, G.LABELS: yb})

    return run


def batch_variants(model, x: np.ndarray, batch: int) -> dict[str, Callable[[], object]]:  # type: ignore[no-untyped-def]
    """One forward batch, and one gradient-graph batch per optimisation setting."""
    from auditor import graph as G
    from auditor import reverse_rules as R
    from auditor.runtime import make_session

    xb = x[:batch]
    target = np.zeros((batch, model.n_classes), np.float32)
    target[:, 0] = 1.0 / batch
    weights = model.weights()
    settings: dict[str, tuple[str, ...]] = {"all on": ()}
    settings.update({f"without {name}": (name,) for name in R.OPTIMIZATIONS})
    settings["all off (onnx-ad's rules)"] = tuple(R.OPTIMIZATIONS)
    forward = make_session(G.evaluation_graph(model), "cpu")
    labels = np.zeros(batch, np.int64)
    out: dict[str, Callable[[], object]] = {
        "forward batch": lambda: forward.run(None, {model.input_name: xb, G.LABELS: labels})}
    for label, off in settings.items():
        with R.disabled(*off):
            session = make_session(G.gradient_graph(model, batch, {model.input_name: x.shape[1:]}), "cpu",
                                   config=R.gradient_session_config())
        feeds = {model.input_name: xb, G.TARGET: target, f"adj_{G.TOTAL_LOSS}": np.ones(1, np.float32)}
        feeds.update({i.name: weights[i.name] for i in session.get_inputs() if i.name in weights})
        out[label] = (lambda s, f: lambda: s.run(None, f))(session, feeds)
    return out


def report(times: dict[str, list[tuple[float, float]]], base: str) -> None:
    def stats(name: str) -> tuple[float, float, float]:
        wall = [w for w, _ in times[name]]
        return min(wall), statistics.median(wall), statistics.median(c for _, c in times[name])

    low, mid, cpu = stats(base)
    print(f"{'':34s} {'wall min (s)':>12s} {'median':>8s} {'CPU median':>11s}   "
          f"{'/ ' + base + ': wall min':>28s} {'median':>7s} {'CPU':>6s}")
    for name in times:
        a, b, c = stats(name)
        print(f"{name:34s} {a:12.3f} {b:8.3f} {c:11.3f}   {a / low:28.2f} {b / mid:7.2f} {c / cpu:6.2f}")


def main() -> None:
    import auditor
    from auditor import graph as G
    from auditor.runtime import make_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the whole-data comparison")
    parser.add_argument("--batch-repeat", type=int, default=15, help="rounds of the one-batch comparison")
    args = parser.parse_args()
    shape, k = (3, 32, 32), 10
    net = residual_cnn(k)
    x, y = data(args.samples, k, shape)
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        model = auditor.load_model(export(net, Path(tmp) / "resnet.onnx", shape))
    ds = auditor.Dataset(x, y)
    start = time.perf_counter()
    make_session(G.gradient_graph(model, args.batch_size, {model.input_name: shape}), "cpu")
    build = time.perf_counter() - start
    print(f"model: residual CNN, {model.n_parameters:,} parameters; data: {args.samples} x {shape}, K = {k}, "
          f"batch {args.batch_size}; gradient graph + session build: {build:.2f} s (inside every "
          "class_gradients call below)")

    whole = interleaved({
        "ORT forward": forward_pass(model, x, y, args.batch_size),
        "all class gradients": lambda: auditor.class_gradients(model, ds, batch_size=args.batch_size,
                                                                provider="cpu", progress=False),
        "  the same, workers=1 (intra-op)": lambda: auditor.class_gradients(
            model, ds, batch_size=args.batch_size, provider="cpu", progress=False, workers=1),
        "PyTorch forward+backward": torch_gradients(net, x, y, k, args.batch_size),
    }, args.repeat)
    print(f"\n1. whole data set, {args.repeat} interleaved rounds")
    report(whole, "ORT forward")
    ratios = {}
    for name in ("ORT forward", "PyTorch forward+backward"):
        g = [w for w, _ in whole["all class gradients"]]
        o = [w for w, _ in whole[name]]
        ratios[name] = (min(g) / min(o), statistics.median(g) / statistics.median(o))
    print("gradients / forward: {:.2f} (wall min), {:.2f} (wall median); gradients / PyTorch: {:.2f} (wall min), "
          "{:.2f} (wall median)".format(*ratios["ORT forward"], *ratios["PyTorch forward+backward"]))
    one = [w for w, _ in whole["  the same, workers=1 (intra-op)"]]
    o = [w for w, _ in whole["ORT forward"]]
    print(f"gradients with workers=1 / forward: {min(one) / min(o):.2f} (wall min), "
          f"{statistics.median(one) / statistics.median(o):.2f} (wall median)")

    per_batch = interleaved(batch_variants(model, x, args.batch_size), args.batch_repeat)
    print(f"\n2. one batch of {args.batch_size}, {args.batch_repeat} interleaved rounds")
    report(per_batch, "forward batch")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
