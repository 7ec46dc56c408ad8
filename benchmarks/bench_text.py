"""Text models against image models: the gradient pass and one CCT step, each over one ORT forward pass.

Prints, in one run and interleaved (each round times every model's forward, gradients and
CCT step in turn; medians over rounds), the ratios gradients / forward and CCT step /
forward for a residual CNN and for transformer text classifiers (the committed BERT and
DistilBERT fixtures and the bundled text example), so the text models can be seen to stay
within the image models' ratios.

Run: python benchmarks/bench_text.py [--samples 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import data, export, machine, residual_cnn  # noqa: E402


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _tile(arrays: dict[str, np.ndarray], y: np.ndarray, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    reps = -(-n // len(y))
    return {k: np.concatenate([v] * reps)[:n] for k, v in arrays.items()}, np.concatenate([y] * reps)[:n]


def _cases(tmp: Path, n: int) -> list[tuple[str, Path, dict[str, np.ndarray], np.ndarray]]:
    from tests.deployed import deployed_entry

    x, y = data(n, 10, (3, 32, 32))
    cases = [("residual CNN 3x32x32", export(residual_cnn(10), tmp / "cnn.onnx", (3, 32, 32)), {"x": x}, y)]
    for name in ("bert_ts", "distilbert_ts"):
        e = deployed_entry(name)
        feeds, labels = _tile(e["feeds"], e["y"], n)
        cases.append((f"{name} (T={feeds['input_ids'].shape[1]})", e["path"], feeds, labels))
    with np.load(ROOT / "examples" / "text" / "text_reference.npz") as f:
        feeds = {k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        feeds, labels = _tile(feeds, f["y"], n)
    cases.append((f"text example (T={feeds['input_ids'].shape[1]})", ROOT / "examples" / "text" / "text.onnx",
                  feeds, labels))
    return cases


def _plain_forward(model: object, ds: object, batch: int) -> Callable[[], object]:
    """One pass of the exported graph over the data, on a session built once (as the CCT reuses its own)."""
    from auditor import graph
    from auditor.runtime import make_session

    session = make_session(graph.evaluation_graph(model, with_loss=False), "cpu")  # type: ignore[arg-type]
    features = ds.features  # type: ignore[attr-defined]
    n = len(next(iter(features.values())))

    def run() -> None:
        for s in range(0, n, batch):
            session.run(None, {k: v[s:s + batch] for k, v in features.items()})

    return run


def _build(model: object, ds: object, batch: int) -> Callable[[], object]:
    """Building the gradient graph and its session: the fixed cost inside every ``class_gradients`` call."""
    from auditor import graph
    from auditor.runtime import make_session

    features = ds.features  # type: ignore[attr-defined]
    shapes = {k: v.shape[1:] for k, v in features.items()}
    n = len(next(iter(features.values())))
    return lambda: make_session(graph.gradient_graph(model, min(batch, n), shapes), "cpu")


def main() -> None:
    import auditor
    from auditor.runtime import Evaluator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for label, path, feeds, y in _cases(Path(tmp), args.samples):
            model = auditor.load_model(path)
            ds = auditor.check_dataset(auditor.Dataset(feeds, y), model)
            grads = auditor.class_gradients(model, ds, batch_size=args.batch_size, progress=False)
            direction = auditor.ego_directions(model, gradients=grads)
            ev = Evaluator(model, ds, batch_size=args.batch_size, strategy="auto")
            ev.set_directions([direction[direction.classes[0]]])
            ev.evaluate([0.05])  # settles the strategy
            runs.append({"label": label, "params": model.n_parameters, "strategy": ev.strategy, "times": {
                "forward": _plain_forward(model, ds, args.batch_size),
                "gradients": lambda m=model, d=ds: auditor.class_gradients(m, d, batch_size=args.batch_size,
                                                                            progress=False),
                "build": _build(model, ds, args.batch_size),
                "cct step": lambda e=ev: e.evaluate([0.05])},
                "samples": {k: [] for k in ("forward", "gradients", "build", "cct step")}})
        for _ in range(args.rounds):  # interleaved: every model and stage once per round
            for run in runs:
                for stage, fn in run["times"].items():
                    run["samples"][stage].append(_timed(fn))
    print(f"machine: {machine()}; {args.samples} samples, batch {args.batch_size}, median of {args.rounds} "
          "interleaved rounds")
    print("grad/fwd: class_gradients (graph and session built inside) / one forward pass; build s: building the "
          "gradient graph and its session alone; pass/fwd: (class_gradients - build) / forward")
    print(f"{'model':<28} {'θ':>9} {'forward s':>10} {'grad/fwd':>9} {'build s':>8} {'pass/fwd':>9} "
          f"{'CCT step/fwd':>13} {'strategy':>9}")
    for run in runs:
        med = {k: statistics.median(v) for k, v in run["samples"].items()}
        print(f"{run['label']:<28} {run['params']:>9,} {med['forward']:>10.3f} "
              f"{med['gradients'] / med['forward']:>9.2f} {med['build']:>8.3f} "
              f"{(med['gradients'] - med['build']) / med['forward']:>9.2f} {med['cct step'] / med['forward']:>13.2f} "
              f"{run['strategy']:>9}")


if __name__ == "__main__":
    main()
