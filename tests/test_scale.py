"""A 1,000-class audit stays within a stated memory bound.

Naively the audit would hold K full gradient copies (1,000 x 265k floats: 1.06 GB) and
the whole flow tensor (n_ego x K x A x K). The bound below is what the candidate
selection, the gradient sketches and the top-destination flows must keep it under.
Runs in a subprocess so the peak resident size is the audit's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PEAK_BOUND_MB = 900

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from conftest import make_mlp, random_mlp_weights
    import auditor
    k = 1000
    weights = random_mlp_weights(32, 256, k, seed=5)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2 * k, 32)).astype(np.float32)
    y = np.repeat(np.arange(k), 2)
    model = auditor.load_model(make_mlp({path!r}, weights))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = auditor.run_audit(model, auditor.Dataset(x, y), auditor.AuditOptions(
        alphas=(-0.1, 0.0, 0.1), pairs=1, grid=3, candidates=10))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{"before": before, "peak": peak, "n_ego": len(result.cct.ego_classes),
                      "flow_is_none": result.cct.flow is None,
                      "top_shape": list(result.cct.flow_top_share.shape),
                      "n_params": model.n_parameters,
                      "gradient_samples": result.cost.actual["gradients"].samples,
                      "expected_samples": len(y) + 2 * len(result.cct.ego_classes)}}))
""")


def test_thousand_classes_stay_within_memory_bound(tmp_path: Path) -> None:
    script = SCRIPT.format(tests=str(Path(__file__).parent), path=str(tmp_path / "wide.onnx"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["n_params"] > 250_000
    assert stats["flow_is_none"] and stats["top_shape"][1:] == [1000, 3, 5]
    assert 2 <= stats["n_ego"] <= 40  # candidates: classes of the top 10 pairs by confusion and by conflict
    # differentiated: every sample for the sketches, then the candidates' 2 samples each
    assert stats["gradient_samples"] == stats["expected_samples"]
    assert stats["peak"] < PEAK_BOUND_MB, stats
