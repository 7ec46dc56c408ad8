"""Cost of all class gradients, against one plain ONNX Runtime forward pass and PyTorch autograd.

Prints, for one model and data set, in one run:
  gradients / ORT forward     (goal <= 4; a backward pass costs about twice a forward)
  gradients / PyTorch fwd+bwd (PyTorch autograd, the same class-sorted batches)

Run: python benchmarks/bench_gradients.py [--samples 2560] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, data, export, machine, residual_cnn  # noqa: E402


def main() -> None:
    import torch

    import auditor
    from auditor.runtime import predict_logits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    shape, k = (3, 32, 32), 10
    net = residual_cnn(k)
    x, y = data(args.samples, k, shape)
    with tempfile.TemporaryDirectory() as tmp:
        model = auditor.load_model(export(net, Path(tmp) / "resnet.onnx", shape))
        ds = auditor.Dataset(x, y)
        t_forward = best_of(lambda: predict_logits(model, x, batch_size=args.batch_size, provider=args.device), 2)
        t_grad = best_of(lambda: auditor.class_gradients(model, ds, batch_size=args.batch_size,
                                                          provider=args.device, progress=False), 2)
        grads = auditor.class_gradients(model, ds, batch_size=args.batch_size, provider=args.device,
                                        progress=False)

    torch.set_num_threads(torch.get_num_threads())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_gradients() -> None:
        for c in range(k):
            net.zero_grad()
            idx = torch.nonzero(yt == c).flatten()
            for s in range(0, len(idx), args.batch_size):
                b = idx[s:s + args.batch_size]
                loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b], reduction="sum") / len(idx)
                loss.backward()

    t_torch = best_of(torch_gradients, 2)
    print(f"machine: {machine()}; provider {grads.provider}")
    print(f"model: residual CNN, {model.n_parameters:,} parameters; data: {args.samples} x {shape}, K = {k}, "
          f"batch {args.batch_size}")
    print(f"{'ORT forward (s)':>18} {'gradients (s)':>14} {'PyTorch f+b (s)':>16} "
          f"{'grad/forward':>13} {'grad/PyTorch':>13}")
    print(f"{t_forward:18.3f} {t_grad:14.3f} {t_torch:16.3f} {t_grad / t_forward:13.2f} {t_grad / t_torch:13.2f}")


if __name__ == "__main__":
    main()
