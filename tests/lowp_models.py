"""Reduced-precision exports of one small CNN, made as users make them, for tests/test_twin.py.

A seeded float32 CNN (Conv-ReLU, Conv-ReLU, strided Conv-ReLU, global mean, Linear: a deep
chain, so gradients of the first layer flow through every quantised activation) is exported
by PyTorch's TorchScript exporter and then:

- ``half``: ``module.half()`` exported (float16 weights, inputs and outputs);
- ``fp16`` / ``fp16_io32``: ``onnxconverter_common.float16.convert_float_to_float16`` with
  ``keep_io_types`` False / True;
- ``qdq_*`` / ``qop_*``: ``onnxruntime.quantization.quantize_static`` in QDQ or QOperator
  format, per tensor or per channel, int8 weights, int8 or uint8 activations, calibrated on
  ``calibration`` (data apart from the audit data, so no audited activation sits exactly on
  a calibrated range end);
- ``dynamic``: ``quantize_dynamic`` (DynamicQuantizeLinear, ConvInteger, MatMulInteger).

Needs torch, onnxconverter-common and onnxruntime's quantization tools (in onnxruntime-gpu).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

IMAGE = (3, 8, 8)
N_CLASSES = 4
# name -> (QuantFormat name, per_channel, activation QuantType name)
STATIC = {
    "qdq_s8": ("QDQ", False, "QInt8"),
    "qdq_u8": ("QDQ", False, "QUInt8"),
    "qdq_u8_pc": ("QDQ", True, "QUInt8"),
    "qop_u8": ("QOperator", False, "QUInt8"),
    "qop_u8_pc": ("QOperator", True, "QUInt8"),
}


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration x, audit x, audit y): 16 and 24 samples, classes shifted apart a little."""
    rng = np.random.default_rng(7)
    calibration = rng.standard_normal((16, *IMAGE)).astype(np.float32)
    y = np.arange(24) % N_CLASSES
    x = (rng.standard_normal((24, *IMAGE)) + 0.3 * (y.reshape(-1, 1, 1, 1) - 1.5)).astype(np.float32)
    return calibration, x, y.astype(np.int64)


def network() -> Any:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.c3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.fc = nn.Linear(8, N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.c1(x))
            h = torch.relu(self.c2(h))
            h = torch.relu(self.c3(h))
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(3)
    return Net().eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantiser logs advice (pre-processing, formats) through the root logger: not test output."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(net: Any, path: Path, dummy: Any) -> None:
    import torch

    with _quiet():
        torch.onnx.export(net, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False, opset_version=17)


def build(out: Path) -> dict[str, Path]:
    """Write every variant into ``out``; return name -> path."""
    import torch
    from onnxconverter_common import float16
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    calibration, _, _ = data()
    net = network()
    paths = {name: out / f"{name}.onnx" for name in ("fp32", "half", "fp16", "fp16_io32", "dynamic", *STATIC)}
    _export(net, paths["fp32"], torch.zeros(2, *IMAGE))
    _export(copy.deepcopy(net).half(), paths["half"], torch.zeros(2, *IMAGE, dtype=torch.float16))
    fp32 = onnx.load(paths["fp32"])
    with _quiet():
        onnx.save(float16.convert_float_to_float16(fp32, keep_io_types=False), paths["fp16"])
        onnx.save(float16.convert_float_to_float16(fp32, keep_io_types=True), paths["fp16_io32"])

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration[s:s + 4]} for s in range(0, len(calibration), 4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    for name, (fmt, per_channel, activations) in STATIC.items():
        with _quiet():
            quantize_static(paths["fp32"], paths[name], Reader(), quant_format=getattr(QuantFormat, fmt),
                            per_channel=per_channel, activation_type=getattr(QuantType, activations),
                            weight_type=QuantType.QInt8)
    with _quiet():
        quantize_dynamic(paths["fp32"], paths["dynamic"], weight_type=QuantType.QInt8)
    return paths
