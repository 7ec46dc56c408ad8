"""Cost of recording label dancing, against one training step of a small CNN.

Prints, in one run, the median wall time of:
  recorder.record       logits of a 1,000-sample probe x 10 classes (numpy) -> one JSON line
  recorder.record       the same from a torch tensor (detach/cpu/numpy path)
  recorder.record       with fsync=True (survives a power loss, not just a crash)
  record_predictions    the probe forward pass of the CNN (eval, no_grad) + record
  training step         forward + backward + SGD step, batch 128 of 3x32x32
and each one's ratio to the training step.

Run: python benchmarks/bench_recorder.py [--probe 1000] [--classes 10] [--batch 128] [--repeat 200]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, residual_cnn  # noqa: E402


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    """Median wall time of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    import torch

    from auditor.dancing import LabelDancingRecorder
    from auditor.hooks.torch import record_predictions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    n, k = args.probe, args.classes
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, k)).astype(np.float32)
    labels = np.arange(n) % k
    logits_t = torch.from_numpy(logits).requires_grad_(False)

    net = residual_cnn(k).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xb, yb = torch.randn(args.batch, 3, 32, 32), torch.randint(0, k, (args.batch,))
    probe_x = torch.randn(n, 3, 32, 32)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        step = iter(range(10**9))
        with LabelDancingRecorder(Path(tmp) / "a.jsonl", labels, n_classes=k) as rec:
            rows.append((f"record, numpy logits {n}x{k}", median_time(lambda: rec.record(next(step), logits),
                                                                      args.repeat)))
            rows.append((f"record, torch logits {n}x{k}", median_time(lambda: rec.record(next(step), logits_t),
                                                                      args.repeat)))
        with LabelDancingRecorder(Path(tmp) / "b.jsonl", labels, n_classes=k, fsync=True) as rec:
            rows.append(("record, fsync=True", median_time(lambda: rec.record(next(step), logits),
                                                           max(args.repeat // 4, 10))))
        t_train = median_time(train_step, max(args.repeat // 10, 10))
        with LabelDancingRecorder(Path(tmp) / "c.jsonl", labels, n_classes=k) as rec:
            rows.append((f"record_predictions: CNN on the {n}-sample probe + record",
                         median_time(lambda: record_predictions(rec, net, probe_x, next(step)),
                                     max(args.repeat // 20, 5), warmup=1)))
    rows.append((f"training step: CNN fwd+bwd+SGD, batch {args.batch} of 3x32x32", t_train))

    n_params = sum(p.numel() for p in net.parameters())
    print(f"machine: {machine()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads")
    print(f"CNN: residual, BatchNorm, {n_params:,} parameters; probe {n} samples x {k} classes")
    print(f"{'what':<62} {'median ms':>10} {'/ train step':>13}")
    for name, t in rows:
        print(f"{name:<62} {t * 1e3:>10.3f} {t / t_train:>13.4f}")


if __name__ == "__main__":
    main()
