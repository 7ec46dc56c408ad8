"""The cross-class test's speed and a default audit's total / CCT on a CUDA device.

Runs only where ONNX Runtime's CUDA provider really runs (a session on it works); anywhere
else it prints one line saying why it skipped and exits 0, so it can sit in a benchmark
sweep on CPU-only machines. On the device it prints, for the bundled demo (digits MLP) and a
ResNet-18 (11M parameters, random weights, ``--samples`` images of 3x64x64, K = 10):

- the CCT's samples per second (cells x samples / CCT seconds) and its strategy;
- total / CCT of a default audit (the goal: <= 1.5), with the planned and actual FPE per
  stage (as ``bench_audit.py`` prints them).

Each model runs a warm-up audit first (CUDA context, kernel tuning), then ``--repeat``
audits; the median ratio is shown beside every run's.

Run: python benchmarks/bench_gpu.py [--model demo|resnet18|both] [--repeat 3] [--samples 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from _resnet18 import export_resnet18, images  # noqa: E402
from bench_audit import print_cost  # noqa: E402


def cuda_unavailable() -> str | None:
    """Why the CUDA provider cannot run here, or None when it can."""
    from auditor.errors import OptionError
    from auditor.runtime import resolve_provider

    try:
        resolve_provider("cuda")
    except OptionError as e:
        return str(e)
    return None


def audits(name: str, model: Any, data: Any, repeat: int, gradient_data: Any = None) -> None:
    import auditor

    options = auditor.AuditOptions(provider="cuda")
    auditor.run_audit(model, data, options, gradient_data=gradient_data, gate=None)  # warm-up
    results = [auditor.run_audit(model, data, options, gradient_data=gradient_data, gate=None)
               for _ in range(repeat)]
    ratios = [r.timings["total_s"] / r.timings["cct_s"] for r in results]
    rates = [r.timings["cct_samples_per_second"] for r in results]
    print(f"\n{name} ({model.n_parameters:,} parameters, {len(data)} samples) on CUDA, {repeat} default audits:")
    print("  CCT samples/s: " + ", ".join(f"{x:,.0f}" for x in rates) + f"; median {statistics.median(rates):,.0f}"
          f" (strategy {results[0].cct.strategy})")
    print("  total / CCT: " + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")
    print_cost(sorted(results, key=lambda r: r.timings["total_s"] / r.timings["cct_s"])[len(results) // 2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "resnet18", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=3, help="audits per model after a warm-up")
    parser.add_argument("--samples", type=int, default=2000, help="ResNet-18 audit samples")
    args = parser.parse_args()
    why = cuda_unavailable()
    if why is not None:
        print(f"skipped: no working CUDA provider on this machine ({why})")
        return
    print(f"machine: {machine()}")
    import auditor

    if args.model in ("demo", "both"):
        from auditor.demo import demo_paths

        paths = demo_paths()
        audits("demo (digits MLP)", auditor.load_model(paths.model), auditor.load_data(paths.data), args.repeat,
               auditor.load_data(paths.train))
    if args.model in ("resnet18", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            model = auditor.load_model(export_resnet18(Path(tmp) / "resnet18.onnx"))
            x, y = images(args.samples, 10)
            audits("ResNet-18", model, auditor.Dataset(x, y), args.repeat)


if __name__ == "__main__":
    main()
