"""The audit on a CUDA device: CCT samples per second and total / CCT of a default audit.

Runs only where ONNX Runtime's CUDA provider really works (the auditor's own check, which
runs a tiny graph on the device); elsewhere it prints one line saying why and exits 0, so
the figure can be taken the day a GPU is available. On the device it audits the bundled
demo and a ResNet-18 (11M parameters, random weights, built by ``_resnet18.py``; needs
torch to export it) with the default options, and prints per model the CCT's samples per
second, its seconds, the total and total / CCT, and the cost record's stages.

Run: python benchmarks/bench_gpu.py [--samples 1000] [--model demo|resnet18|both]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def cuda_problem() -> str | None:
    """Why the CUDA provider cannot run here, or None when it can."""
    from auditor.errors import AuditorError
    from auditor.runtime import resolve_provider

    try:
        resolve_provider("cuda")
    except AuditorError as err:
        return str(err)
    return None


def audit(label: str, model: object, data: object) -> None:
    import auditor

    start = time.perf_counter()
    result = auditor.run_audit(model, data, auditor.AuditOptions(provider="cuda"), gate=None)  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    t = result.timings
    print(f"{label}: provider {result.provider}; CCT {t['cct_s']:.3g} s, {t['cct_samples_per_second']:,.0f} samples/s; "
          f"total {t['total_s']:.3g} s (wall {wall:.3g} s): total / CCT = {t['total_s'] / t['cct_s']:.2f}")
    if result.cost is not None:
        for stage, cost in result.cost.actual.items():
            print(f"  {stage:<20} {cost.evaluations:6d} evaluations {cost.fpe:8.1f} FPE {cost.seconds:8.3g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="ResNet-18 audit samples (3x64x64)")
    parser.add_argument("--model", choices=("demo", "resnet18", "both"), default="both")
    args = parser.parse_args()
    problem = cuda_problem()
    if problem is not None:
        print(f"skipped: no working CUDA provider on this machine ({problem})")
        return
    import auditor

    print(f"machine: {machine()}")
    if args.model in ("demo", "both"):
        from auditor.demo import demo_paths

        paths = demo_paths()
        audit("demo", auditor.load_model(paths.model), auditor.load_data(paths.data))
    if args.model in ("resnet18", "both"):
        from _resnet18 import export_resnet18, images

        with tempfile.TemporaryDirectory() as tmp:
            model = auditor.load_model(export_resnet18(Path(tmp) / "resnet18.onnx"))
            x, y = images(args.samples, 10)
            audit(f"ResNet-18, {args.samples} samples of 3x64x64", model, auditor.Dataset(x, y))


if __name__ == "__main__":
    main()
