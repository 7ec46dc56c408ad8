"""What the float32 twin adds to loading a model: ``float_twin`` against ``load_model`` of the same network.

A ~1M-parameter residual CNN is exported in float32 and turned into the reduced-precision
exports users bring (onnxconverter-common float16 with and without float32 I/O, onnxruntime
QDQ per channel, QOperator, dynamic). Prints, per export, interleaved in one run (best of
``--repeat``):
  twin      float_twin(proto) on the loaded ModelProto
  load      auditor.load_model of the twin file (what loading costs anyway)
  twin/load the share the twin adds

Run: python benchmarks/bench_twin.py [--width 96] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data, export, machine, residual_cnn  # noqa: E402


def _variants(fp32: Path, x: np.ndarray) -> dict[str, Path]:
    import onnx
    from onnxconverter_common import float16
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter([{"x": x[s:s + 16]} for s in range(0, len(x), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    out = {"float32": fp32}
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice; the converter's truncation warnings
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, keep in (("float16", False), ("float16-io32", True)):
            out[name] = fp32.with_name(f"{name}.onnx")
            onnx.save(float16.convert_float_to_float16(onnx.load(fp32), keep_io_types=keep), out[name])
        for name, fmt in (("int8-qdq per-channel", QuantFormat.QDQ), ("int8-qoperator", QuantFormat.QOperator)):
            out[name] = fp32.with_name(f"{name.split()[0]}.onnx")
            quantize_static(fp32, out[name], Reader(), quant_format=fmt, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        out["int8-dynamic"] = fp32.with_name("dynamic.onnx")
        quantize_dynamic(fp32, out["int8-dynamic"], weight_type=QuantType.QInt8)
    return out


def main() -> None:
    import onnx

    import auditor
    from auditor.twin import float_twin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shape = (3, 32, 32)
    net = residual_cnn(10, args.width)
    n_parameters = sum(p.numel() for p in net.parameters())
    x, _ = data(64, 10, shape)
    print(f"{machine()}; residual CNN width {args.width}, {n_parameters:,} parameters")
    with tempfile.TemporaryDirectory() as tmp:
        paths = _variants(export(net, Path(tmp) / "fp32.onnx", shape), x)
        protos = {name: onnx.load(path) for name, path in paths.items()}
        twins = {}
        for name, proto in protos.items():
            twin = float_twin(proto)
            twins[name] = Path(tmp) / f"twin-{name.split()[0]}.onnx"
            onnx.save(twin.proto, twins[name])
        best = {name: [np.inf, np.inf] for name in protos}
        for _ in range(args.repeat):  # interleaved: every export once per round
            for name, proto in protos.items():
                start = time.perf_counter()
                float_twin(proto)
                middle = time.perf_counter()
                auditor.load_model(twins[name])
                end = time.perf_counter()
                best[name] = [min(best[name][0], middle - start), min(best[name][1], end - middle)]
    print(f"{'export':<22}{'twin ms':>10}{'load ms':>10}{'twin/load':>11}")
    for name, (t_twin, t_load) in best.items():
        print(f"{name:<22}{1e3 * t_twin:>10.1f}{1e3 * t_load:>10.1f}{t_twin / t_load:>11.2f}")


if __name__ == "__main__":
    main()
