"""Shared fixtures: the zoo of small exported classifiers and tiny hand-built models.

The zoo (tests/fixtures/models, built by tests/fixtures/make_zoo.py) covers the
architectures and exporters the auditor must handle; tests parametrize over it with the
``zoo`` fixture. Every test is deterministic: seeds are fixed where randomness is used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

FIXTURES = Path(__file__).parent / "fixtures" / "models"
ZOO: list[dict[str, Any]] = json.loads((FIXTURES / "zoo.json").read_text()) if (FIXTURES / "zoo.json").exists() else []


def pytest_report_header(config: pytest.Config) -> list[str]:
    import onnxruntime

    return [f"auditor zoo: {len(ZOO)} fixture models in {FIXTURES} (rebuild: python tests/fixtures/make_zoo.py)",
            f"onnxruntime {onnxruntime.__version__}; chromium: {shutil.which('chromium') or 'absent'}"]


@pytest.fixture(params=ZOO, ids=[z["name"] for z in ZOO])
def zoo(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One zoo entry, with ``path`` and the loaded ``x``/``y`` added."""
    entry = dict(request.param)
    entry["path"] = FIXTURES / entry["file"]
    with np.load(FIXTURES / f"{entry['name']}.npz", allow_pickle=False) as f:
        entry["x"], entry["y"] = f["x"], f["y"]
    return entry


def zoo_entry(name: str) -> dict[str, Any]:
    entry = dict(next(z for z in ZOO if z["name"] == name))
    entry["path"] = FIXTURES / entry["file"]
    with np.load(FIXTURES / f"{entry['name']}.npz", allow_pickle=False) as f:
        entry["x"], entry["y"] = f["x"], f["y"]
    return entry


def make_mlp(path: Path, weights: list[tuple[np.ndarray, np.ndarray]], *, opset: int = 17,
             softmax: bool = False) -> Path:
    """A Gemm MLP (ReLU between layers) from explicit weights, ``W`` shaped [out, in] (transB=1)."""
    nodes, inits = [], []
    cur = "x"
    for i, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out], transB=1, name=f"fc{i}"))
        cur = out
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    k = weights[-1][0].shape[0]
    outputs = cur
    if softmax:
        nodes.append(helper.make_node("Softmax", [cur], ["prob"], axis=1))
        outputs = "prob"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", weights[0][0].shape[1]])],
                              [helper.make_tensor_value_info(outputs, TensorProto.FLOAT, ["N", k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    onnx.save(model, path)
    return path


def random_mlp_weights(n_in: int, hidden: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((hidden, n_in)) / np.sqrt(n_in), rng.standard_normal(hidden) * 0.1),
            (rng.standard_normal((k, hidden)) / np.sqrt(hidden), rng.standard_normal(k) * 0.1)]


@pytest.fixture
def small_mlp(tmp_path: Path) -> dict[str, Any]:
    """A 4-class Gemm MLP on 6 features with 48 samples (12 per class), written to tmp_path."""
    rng = np.random.default_rng(1)
    weights = random_mlp_weights(6, 8, 4, seed=1)
    path = make_mlp(tmp_path / "mlp.onnx", weights)
    x = rng.standard_normal((48, 6)).astype(np.float32)
    y = np.repeat(np.arange(4), 12)
    return {"path": path, "x": x, "y": y, "weights": weights, "k": 4}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests touch no network: any socket connection attempt fails loudly."""
    import socket

    def guard(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # restored after each test


def spec_model(shape: tuple[Any, ...], dtype: Any = np.float32, k: int = 3, *,
               extra: dict[str, tuple[Any, ...]] | None = None) -> Any:
    """A loaded model with one input of ``shape`` and ``dtype`` (None or a name: a dynamic
    dim) and K = ``k``: the input's mean times a weight row. ``extra`` adds int64 inputs
    (name -> shape) that are read (added to the mean), for multi-input checks."""
    import tempfile

    import auditor

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    dims = [d if d is not None else f"d{i}" for i, d in enumerate(shape)]
    inputs = [helper.make_tensor_value_info("x", elem, dims)]
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["xf"], ["flat"], axis=1),
             helper.make_node("ReduceMean", ["flat"], ["m"], axes=[1], keepdims=1)]
    last = "m"
    for j, (name, eshape) in enumerate((extra or {}).items()):
        inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(eshape)))
        nodes += [helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMean", [f"{name}_f"], [f"{name}_m"], axes=[1], keepdims=1),
                  helper.make_node("Add", [last, f"{name}_m"], [f"s{j}"])]
        last = f"s{j}"
    nodes.append(helper.make_node("MatMul", [last, "w"], ["z"]))
    w = numpy_helper.from_array(np.linspace(-1, 1, k, dtype=np.float32).reshape(1, k), "w")
    g = helper.make_graph(nodes, "spec", inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", k])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.onnx"
        onnx.save(m, path)
        return auditor.load_model(path)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`auditor demo`, run once per session: ``out`` (its directory) and ``output`` (stdout)."""
    from typer.testing import CliRunner

    from auditor.cli import app

    out = tmp_path_factory.mktemp("demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output}


def r_from_results(d: dict[str, Any]) -> np.ndarray:
    """The pair score R written out from a results.json dict's CCT losses (an independent reference)."""
    cct = d["cct"]
    loss = np.array([[[np.nan if v is None else v for v in row] for row in m] for m in cct["loss"]], dtype=np.float64)
    alphas, counts = np.asarray(cct["alphas"]), np.asarray(cct["counts"])
    scale = np.asarray(cct["step_scale"])
    base = loss[0, :, cct["zero_index"]]
    l_mean = np.nansum(counts * base) / counts[counts > 0].sum()
    k = len(counts)
    delta = {}
    for i, c in enumerate(cct["ego_classes"]):
        steps = scale[i] * alphas
        first = int(np.flatnonzero(steps > 0)[np.argmin(steps[steps > 0])])
        delta[c] = loss[i, :, first] - base
    r = np.full((k, k), np.nan)
    for a in range(k):
        for b in range(k):
            if a != b and a in delta and b in delta:
                r[a, b] = (delta[a][b] + delta[b][a]) / l_mean
    return r
