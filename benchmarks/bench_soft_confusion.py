"""What the soft confusion Q costs: the unperturbed pass with and without it, and a separate pass.

Prints, for one residual CNN (K = 10 and K = 100 heads), in one run, interleaved (best of
5 each, alternating), seconds of:
  the audit's unperturbed pass (loss sums and confusion only),
  the same pass also fetching the log-probabilities and summing them by true class
  (what the audit does: ``Evaluator.evaluate([0.0], soft=True)``),
  a separate ``predict_logits`` pass plus the same sums on the host (the alternative),
and the ratios to the plain pass.

Run: python benchmarks/bench_soft_confusion.py [--samples 5120] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data, export, machine, residual_cnn  # noqa: E402


def soft_from_logits(z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    z = z.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.bincount((y[:, None] * k + np.arange(k)).ravel(), weights=p.ravel(), minlength=k * k).reshape(k, k)


def time_one(k: int, n: int, device: str, repeat: int) -> dict[str, float]:
    """Best seconds of each way, interleaved, for a K-class residual CNN."""
    import auditor
    from auditor.inference import predict_logits
    from auditor.runtime import Evaluator

    shape = (3, 32, 32)
    x, y = data(n, k, shape)
    with tempfile.TemporaryDirectory() as tmp:
        model = auditor.load_model(export(residual_cnn(k, width=16), Path(tmp) / "net.onnx", shape))
        ev = Evaluator(model, auditor.Dataset(x, y), provider=device, strategy="rebuild")
        ev.set_directions([{}])

        def separate() -> np.ndarray:
            ev.evaluate([0.0])
            return soft_from_logits(predict_logits(model, x, provider=device), y, k)

        runs = {"plain": lambda: ev.evaluate([0.0]), "soft": lambda: ev.evaluate([0.0], soft=True),
                "separate": separate}
        soft = ev.evaluate([0.0], soft=True).soft_confusion
        assert soft is not None and np.allclose(soft, separate(), atol=1e-3), "the two ways disagree"
        best = dict.fromkeys(runs, np.inf)
        for _ in range(repeat):  # interleaved
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def main() -> None:
    from auditor.runtime import resolve_provider

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = resolve_provider(args.device)
    print(f"machine: {machine()}; device {device}; {args.samples} samples of 3x32x32")
    print(f"{'K':>4} {'plain pass (s)':>15} {'with Q (s)':>11} {'ratio':>6} {'+ predict_logits (s)':>21} {'ratio':>6}")
    for k in (10, 100):
        best = time_one(k, args.samples, device, args.repeat)
        print(f"{k:>4} {best['plain']:>15.3f} {best['soft']:>11.3f} {best['soft'] / best['plain']:>6.2f} "
              f"{best['separate']:>21.3f} {best['separate'] / best['plain']:>6.2f}")


if __name__ == "__main__":
    main()
