"""Cross-class-test throughput against plain inference, PyTorch, and a session rebuilt per step.

Prints, for one residual CNN and >= 10,000 samples, in one run, samples/s of:
  plain ORT inference of the unperturbed model (the ceiling),
  the auditor's CCT with each perturbation strategy (inputs, rebuild, auto),
  a straightforward rebuild: ModelProto copy + replaced initializers + new session per step,
  a straightforward PyTorch CCT (torch.func.functional_call with perturbed parameters),
and the ratios: CCT / inference (goal >= 0.9), CCT / PyTorch (goal >= 2), CCT / naive rebuild.

Run: python benchmarks/bench_cct.py [--samples 10240] [--device auto]
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


def main() -> None:
    import onnx
    import torch
    from onnx import numpy_helper

    import auditor
    from auditor import graph as G
    from auditor.inference import predict_logits
    from auditor.runtime import make_session, resolve_provider

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10240)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ego", type=int, default=2, help="ego classes")
    parser.add_argument("--steps", type=int, default=5, help="α grid points (odd; 0 is shared)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    shape, k = (3, 32, 32), 10
    net = residual_cnn(k, width=16)
    x, y = data(args.samples, k, shape)
    device = resolve_provider(args.device)
    alphas = list(np.linspace(-0.2, 0.2, args.steps))
    n_steps = args.ego * (args.steps - 1)  # perturbed passes per CCT (α = 0 runs once, not counted)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = auditor.load_model(export(net, Path(tmp) / "resnet.onnx", shape))
        ds = auditor.Dataset(x, y)
        grads = auditor.class_gradients(model, auditor.Dataset(x[:1000], y[:1000]),
                                        provider=device, progress=False)
        dirs = auditor.ego_directions(model, gradients=grads)
        ego = list(dirs.classes[: args.ego])

        predict_logits(model, x[:512], batch_size=args.batch_size, provider=device)  # warm-up
        t = time.perf_counter()
        predict_logits(model, x, batch_size=args.batch_size, provider=device)
        plain = args.samples / (time.perf_counter() - t)
        rows.append(("plain ORT inference", plain))

        for strategy in ("inputs", "rebuild", "auto"):
            r = auditor.cross_class_test(model, ds, dirs, alphas, ego_classes=ego, provider=device,
                                         batch_size=args.batch_size, strategy=strategy, progress=False)
            rows.append((f"auditor CCT, strategy={strategy} (ran {r.strategy})", r.samples_per_second))

        # Straightforward rebuild: copy the model, replace initializers, new session, per step.
        evaluation = G.evaluation_graph(model)
        base = model.weights()
        t = time.perf_counter()
        for c in ego:
            d = dirs[c]
            for a in alphas:
                if a == 0:
                    continue
                m = onnx.ModelProto()
                m.CopyFrom(evaluation)
                for init in m.graph.initializer:
                    if init.name in d:
                        init.CopyFrom(numpy_helper.from_array(base[init.name] + np.float32(a) * d[init.name],
                                                              init.name))
                session = make_session(m, device)
                for s in range(0, args.samples, args.batch_size):
                    session.run(None, {model.input_name: x[s:s + args.batch_size],
                                       G.LABELS: y[s:s + args.batch_size]})
        naive = n_steps * args.samples / (time.perf_counter() - t)
        rows.append(("naive rebuild per step", naive))

    # PyTorch: functional_call with perturbed parameters, eval mode, per-class loss in float64.
    params = dict(net.named_parameters())
    onnx_to_torch = {}
    for name, p in params.items():  # match ONNX initializers by value (BN may be folded)
        for on, w in base.items():
            if w.shape == tuple(p.shape) and np.array_equal(w, p.detach().numpy()):
                onnx_to_torch[on] = name
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t = time.perf_counter()
    with torch.no_grad():
        for c in ego:
            d = dirs[c]
            for a in alphas:
                if a == 0:
                    continue
                new = {n: p + a * torch.from_numpy(d[o]) for o, n in onnx_to_torch.items() for p in [params[n]]}
                sums = torch.zeros(k, dtype=torch.float64)
                for s in range(0, args.samples, args.batch_size):
                    z = torch.func.functional_call(net, new, (xt[s:s + args.batch_size],))
                    loss = torch.nn.functional.cross_entropy(z, yt[s:s + args.batch_size], reduction="none")
                    sums.index_add_(0, yt[s:s + args.batch_size], loss.double())
    torch_rate = n_steps * args.samples / (time.perf_counter() - t)
    rows.append(("PyTorch functional_call CCT", torch_rate))

    best = max(v for name, v in rows if name.startswith("auditor CCT, strategy=auto"))
    print(f"machine: {machine()}; provider {device}")
    print(f"model: residual CNN, {model.n_parameters:,} parameters; {args.samples} samples of {shape}; "
          f"{len(ego)} ego classes x {args.steps - 1} steps; batch {args.batch_size}")
    print(f"{'path':<52} {'samples/s':>11} {'auto CCT / this':>16}")
    for name, v in rows:
        print(f"{name:<52} {v:11.0f} {best / v:16.2f}")
    print(f"\nCCT(auto) / plain inference = {best / plain:.2f} (goal >= 0.9); CCT(auto) / PyTorch = "
          f"{best / torch_rate:.2f} (goal >= 2); CCT(auto) / naive rebuild = {best / naive:.2f}")


if __name__ == "__main__":
    main()
