"""Cost of the gradient graph of grouped-convolution networks, against one ONNX Runtime forward pass.

For a MobileNetV2-like net (inverted residuals, strided depthwise convolutions deep in the
net) and a ShuffleNet-like net (grouped 1x1 convolutions, channel shuffle, strided depthwise),
prints in one run, interleaved, best of several batches:

  forward        the exported model as deployed (ONNX Runtime, weights as initializers)
  shipped        the gradient graph with the rewrites as shipped
  alternatives   the same gradient graph with one rewrite swapped for what ran before it
                 (depthwise split into one Conv per channel; grouped 1x1 split into one
                 Conv per group; onnx-ad's own Clip rule instead of the clip-mask rewrite)
  tidied         the shipped gradient graph without the nodes onnx-ad leaves unread and
                 with its seed axis fixed to 1 (so seed-axis Transposes become reshapes):
                 two changes to auditor.graph.gradient_graph this measures, not yet made
  PyTorch        autograd forward+backward of the same batch, and its forward

and each one's ratio to the forward pass.

Run: python benchmarks/bench_rewrites.py [--batch 64] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import export, machine  # noqa: E402


def _nets():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x) if self.residual else self.body(x)

    class Shuffle(nn.Module):
        def __init__(self, groups: int) -> None:
            super().__init__()
            self.groups = groups

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)

    class ShuffleUnit(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, groups: int = 3) -> None:
            super().__init__()
            mid, out = cout // 4, cout - cin if stride == 2 else cout
            self.stride = stride
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, groups=groups, bias=False), nn.BatchNorm2d(mid), nn.ReLU(), Shuffle(groups),
                nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
                nn.Conv2d(mid, out, 1, groups=groups, bias=False), nn.BatchNorm2d(out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.stride == 2:
                return torch.relu(torch.cat([nn.functional.avg_pool2d(x, 3, 2, 1), self.body(x)], 1))
            return torch.relu(x + self.body(x))

    torch.manual_seed(0)
    mobilenet = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        InvertedResidual(32, 16, 1, 1), InvertedResidual(16, 24, 2, 6), InvertedResidual(24, 24, 1, 6),
        InvertedResidual(24, 32, 2, 6), InvertedResidual(32, 32, 1, 6), InvertedResidual(32, 64, 2, 6),
        InvertedResidual(64, 64, 1, 6), nn.Conv2d(64, 256, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(256, 10))
    shufflenet = nn.Sequential(
        nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        ShuffleUnit(24, 240, 2), ShuffleUnit(240, 240, 1), ShuffleUnit(240, 480, 2), ShuffleUnit(480, 480, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(480, 10))
    for net in (mobilenet, shufflenet):
        net.train()
        with torch.no_grad():
            for _ in range(3):
                net(torch.randn(32, 3, 64, 64))
        net.eval()
    return {"MobileNetV2-like": mobilenet, "ShuffleNet-like": shufflenet}


@contextlib.contextmanager
def _swapped(kind: str) -> Iterator[None]:
    """Swap one shipped rewrite for what ran before it.

    ``kind``: "depthwise" (depthwise Convs split into one Conv per channel), "pointwise"
    (grouped 1x1 Convs split into one Conv per group) or "clip" (onnx-ad's own Clip rule).
    """
    from auditor import rewrites
    from auditor.rewrites import grouped_conv

    saved = list(rewrites.REWRITES)
    saved_pointwise = grouped_conv._pointwise
    if kind == "pointwise":
        grouped_conv._pointwise = lambda edit, node, groups: False  # type: ignore[assignment]
    else:  # without the depthwise rewrite the grouped-conv one splits depthwise layers per channel
        dropped = {"depthwise": "depthwise-conv", "clip": "clip-mask"}[kind]
        rewrites.REWRITES[:] = [r for r in saved if r.name != dropped]
    try:
        yield
    finally:
        rewrites.REWRITES[:] = saved
        grouped_conv._pointwise = saved_pointwise  # type: ignore[assignment]


def _tidied(graph: onnx.ModelProto) -> onnx.ModelProto:
    """The gradient graph without dead nodes and with the seed axis fixed to 1 (not what ships)."""
    from auditor import graph as G

    m = onnx.ModelProto()
    m.CopyFrom(graph)
    G._prune(m, [o.name for o in m.graph.output])  # onnx-ad leaves nodes no output reads
    for value in m.graph.input:
        if value.name.startswith("adj_"):
            value.type.tensor_type.shape.dim[0].Clear()
            value.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    G.simplify_transposes(m)  # seed-axis moves are now size-1 moves: free reshapes
    return m


def _gradient_runners(model, x: np.ndarray  # type: ignore[no-untyped-def]
                      ) -> tuple[Callable[[], object], Callable[[], object], float]:
    """Runners of the gradient graph as shipped and tidied, and the time to build it."""
    from auditor import graph as G
    from auditor.runtime import make_session

    start = time.perf_counter()
    graph = G.gradient_graph(model, len(x), {model.input_name: x.shape[1:]})
    built = time.perf_counter() - start
    session, tidied = make_session(graph, "cpu"), make_session(_tidied(graph), "cpu")
    target = np.zeros((len(x), model.n_classes), np.float32)
    target[np.arange(len(x)), np.arange(len(x)) % model.n_classes] = 1.0 / len(x)
    feeds = dict(model.weights())
    feeds.update({model.input_name: x, G.TARGET: target, f"adj_{G.TOTAL_LOSS}": np.ones(1, np.float32)})
    return (lambda: session.run(None, feeds)), (lambda: tidied.run(None, feeds)), built


def _bench(title: str, net, x: np.ndarray, repeat: int) -> None:  # type: ignore[no-untyped-def]
    import torch

    import auditor
    from auditor import graph as G
    from auditor.runtime import make_session

    alternatives = {"depthwise": "depthwise split per channel", "clip": "onnx-ad's Clip rule (Where)"} \
        if title.startswith("Mobile") else {"pointwise": "grouped 1x1 split per group"}
    with tempfile.TemporaryDirectory() as tmp:
        model = auditor.load_model(export(net, Path(tmp) / "net.onnx", x.shape[1:]))
    forward = make_session(G.evaluation_graph(model, with_loss=False), "cpu")
    runners: dict[str, Callable[[], object]] = {"ORT forward": lambda: forward.run(None, {model.input_name: x})}
    built = {}
    runners["gradient, shipped"], runners["gradient, shipped, tidied"], built["shipped"] = _gradient_runners(model, x)
    for kind, label in alternatives.items():
        with _swapped(kind):
            runners[f"gradient, {label}"], _, built[label] = _gradient_runners(model, x)
    xt = torch.from_numpy(x)
    yt = torch.arange(len(x)) % 10

    def torch_forward() -> None:
        with torch.no_grad():
            net(xt)

    def torch_backward() -> None:
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()

    runners["PyTorch forward"] = torch_forward
    runners["PyTorch fwd+bwd"] = torch_backward
    best = {name: float("inf") for name in runners}
    for run in runners.values():
        run()  # warm-up
    for _ in range(repeat):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    base = best["ORT forward"]
    print(f"\n{title}: {model.n_parameters:,} parameters; gradient graph built in "
          + ", ".join(f"{t:.1f} s ({label})" for label, t in built.items()))
    print(f"{'':52} {'ms':>9} {'/ ORT forward':>14}")
    for name, t in best.items():
        print(f"{name:52} {1000 * t:9.1f} {t / base:14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shape = (3, args.size, args.size)
    x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
    print(f"machine: {machine()}; batch {args.batch} of {shape}, best of {args.repeat}, interleaved")
    for title, net in _nets().items():
        _bench(title, net, x, args.repeat)


if __name__ == "__main__":
    main()
