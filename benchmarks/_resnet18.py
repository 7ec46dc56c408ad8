"""A ResNet-18 (11M parameters, BasicBlocks, BatchNorm) written in torch, for the audit benchmarks.

torchvision's CPU wheel does not match the pinned torch here, so the architecture is written
out: the torchvision layout (7x7 stem, max pool, four stages of two BasicBlocks with 64, 128,
256, 512 channels, global average pool, one linear layer), exported with the TorchScript
exporter. The weights are random with BatchNorm statistics from a few training-mode passes,
so activations stay in range; an audit only needs a model of the right size and shape.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def resnet18(n_classes: int = 10, seed: int = 0):  # type: ignore[no-untyped-def]
    """ResNet-18 in eval mode (BatchNorm running statistics from random 64x64 inputs)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.down = None if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + (x if self.down is None else self.down(x)))

    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    c = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(c, width, stride), BasicBlock(width, width, 1)]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes)]
    net = nn.Sequential(*layers)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 3, 64, 64))
    return net.eval()


def export_resnet18(path: Path, n_classes: int = 10, size: int = 64) -> Path:
    """Write the ResNet-18 to ``path`` (TorchScript exporter, opset 17, dynamic batch)."""
    import torch

    net = resnet18(n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, size, size), str(path), input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                          opset_version=17, dynamo=False)
    return path


def n_parameters() -> int:
    return sum(p.numel() for p in resnet18().parameters())


def images(n: int, n_classes: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random images 3 x size x size and balanced labels."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, size, size)).astype(np.float32), (np.arange(n) % n_classes).astype(np.int64)
