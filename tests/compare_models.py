"""Model pairs for the comparison tests, built from the bundled demo MLP's weights.

The reference for every number is tests/numpy_mlp.py (float64 numpy) on these weights,
independent of ONNX Runtime and of the auditor's graph handling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from auditor.demo import demo_paths

FIXTURES = Path(__file__).parent / "fixtures" / "compare"


def demo_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W1 [16, 64], b1), (W2 [10, 16], b2)] of the demo model (two Gemm with transB=1)."""
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(demo_paths().model).graph.initializer}
    return [(inits["1.weight"], inits["1.bias"]), (inits["3.weight"], inits["3.bias"])]


def demo_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    with np.load(demo_paths().data, allow_pickle=False) as f:
        return f["x"], f["y"], [str(n) for n in f["class_names"]]


def degraded(weights: list[tuple[np.ndarray, np.ndarray]], cls: int, delta: float
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same weights with the output bias of class ``cls`` lowered by ``delta``: only that class loses."""
    (w1, b1), (w2, b2) = weights
    b2 = b2.copy()
    b2[cls] -= delta
    return [(w1, b1), (w2, b2)]


def old_style_mlp(path: Path, weights: list[tuple[np.ndarray, np.ndarray]], *, opset: int = 9) -> Path:
    """The demo MLP as a model-zoo-era export: opset 9, IR 3, weights listed as inputs, batch fixed at 1
    and baked into a Reshape, logits [1, K, 1, 1], input named "data"."""
    (w1, b1), (w2, b2) = weights
    k = w2.shape[0]
    inits = [numpy_helper.from_array(w1.astype(np.float32), "fc1_w"), numpy_helper.from_array(b1.astype(np.float32),
                                                                                              "fc1_b"),
             numpy_helper.from_array(w2.astype(np.float32), "fc2_w"), numpy_helper.from_array(b2.astype(np.float32),
                                                                                              "fc2_b"),
             numpy_helper.from_array(np.array([1, 64], np.int64), "flat_shape"),
             numpy_helper.from_array(np.array([1, k, 1, 1], np.int64), "out_shape")]
    nodes = [helper.make_node("Reshape", ["data", "flat_shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "fc2_w", "fc2_b"], ["z"], transB=1),
             helper.make_node("Reshape", ["z", "out_shape"], ["scores"])]
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 1, 8, 8])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "old", inputs,
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, k, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="old-exporter")
    model.ir_version = 3
    onnx.save(model, path)
    return path
