"""What `auditor compare` costs next to two plain forward passes (one per model).

Prints, for a residual CNN, its candidate (the same network with its weights moved by 1%),
and >= 10,000 samples, in one run with the timings interleaved (best of --repeat, as wall
time and as process CPU time, which the other jobs of a shared machine disturb less):
  plain ORT inference of the baseline and of the candidate over the data (sessions on the
  original files, the same batch size): the ceiling, two forward passes;
  `auditor.compare` without --interference and without a gate, files loaded inside (what
  the command runs before writing files), and its own stage timings;
and the ratio compare / two plain passes (goal: about 1; the statistics are numpy on [N, K]).

Run: python benchmarks/bench_compare.py [--samples 10240] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data, export, machine, residual_cnn  # noqa: E402


def plain_passes(sessions: list[object], x: np.ndarray, batch: int) -> None:
    """One plain ORT pass of each model over ``x``."""
    for session in sessions:
        name = session.get_inputs()[0].name  # type: ignore[attr-defined]
        for s in range(0, len(x), batch):
            session.run(None, {name: x[s:s + batch]})  # type: ignore[attr-defined]


def timed(fn: object) -> tuple[float, float, object]:
    """Wall seconds, process CPU seconds (all threads) and the result of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu, out


def spread_logits(proto: onnx.ModelProto, x: np.ndarray) -> onnx.ModelProto:
    """An untrained network's logits barely depend on the input (one class wins everywhere): scale the last
    layer's weights by 100 and set its bias to minus the mean logit on ``x``, so predictions spread over the
    classes and a perturbed copy disagrees on some samples."""
    import onnxruntime as ort
    from onnx import numpy_helper

    last = next(n for n in proto.graph.node if "logits" in n.output)
    inits = {t.name: t for t in proto.graph.initializer}
    weight, bias = (inits[name] for name in last.input[1:3])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(100), weight.name))
    bias.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(bias)), bias.name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    z = session.run(None, {session.get_inputs()[0].name: x})[0]
    bias.CopyFrom(numpy_helper.from_array(-z.mean(axis=0).astype(np.float32), bias.name))
    return proto


def main() -> None:
    from onnx import numpy_helper

    import auditor
    from auditor.comparison import CompareOptions
    from auditor.runtime import make_session, resolve_provider

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10240)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    shape, k = (3, 32, 32), 10
    x, y = data(args.samples, k, shape)
    device = resolve_provider(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline.onnx"
        onnx.save(spread_logits(onnx.load(export(residual_cnn(k, width=16), base, shape)), x[:512]), base)
        proto = onnx.load(base)
        rng = np.random.default_rng(0)
        for t in proto.graph.initializer:
            w = numpy_helper.to_array(t)
            if w.dtype == np.float32 and w.size > 1:
                noisy = w * (1 + 0.01 * rng.standard_normal(w.shape))
                t.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), t.name))
        cand = Path(tmp) / "candidate.onnx"
        onnx.save(proto, cand)
        dataset = auditor.Dataset(x, y)
        options = CompareOptions(batch_size=args.batch_size, provider=device, examples=0)
        auditor.compare(base, cand, auditor.Dataset(x[:512], y[:512]), options, gate=None)  # warm-up
        sessions = [make_session(path.read_bytes(), device) for path in (base, cand)]
        plain, full = [], []
        for _ in range(args.repeat):  # interleaved: the machine's load hits both alike
            plain.append(timed(lambda: plain_passes(sessions, x, args.batch_size))[:2])
            full.append(timed(lambda: auditor.compare(base, cand, dataset, options, gate=None)))
    best = int(np.argmin([f[0] for f in full]))
    result = full[best][2]
    t = result.timings  # type: ignore[attr-defined]
    wall_two, cpu_two = min(p[0] for p in plain), min(p[1] for p in plain)
    wall, cpu = min(f[0] for f in full), min(f[1] for f in full)
    print(f"# bench_compare: {machine()}, device {device}")
    print(f"residual CNN (width 16), {args.samples:,} samples of 3x32x32, K = {k}, batch {args.batch_size}, "
          f"best of {args.repeat} interleaved runs; agreement of the pair {result.agreement.overall_top1:.3f}")
    print()
    print("| what | wall s | / two plain passes | CPU s | / two plain passes |")
    print("|---|---:|---:|---:|---:|")
    print(f"| plain ORT inference, baseline + candidate | {wall_two:.3f} | 1.00 | {cpu_two:.3f} | 1.00 |")
    print(f"| `auditor.compare` (loading, checks, both passes, statistics) | {wall:.3f} | {wall / wall_two:.2f} | "
          f"{cpu:.3f} | {cpu / cpu_two:.2f} |")
    for key, label in (("forward_baseline_s", "forward pass of the baseline"),
                       ("forward_candidate_s", "forward pass of the candidate"),
                       ("analysis_s", "statistics, flips, agreement")):
        print(f"| of which: {label} (fastest run) | {t[key]:.3f} | {t[key] / wall_two:.2f} | | |")

if __name__ == "__main__":
    main()
