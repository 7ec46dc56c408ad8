"""Every model of the deployed fixture zoo, audited: the numbers against independent references.

- Class gradients against PyTorch autograd (the zoo's ``.grads.npz``, themselves checked
  against finite differences in ``test_deployed_fixtures.py``) for every model torch made,
  and against float64 central differences of the ONNX reference evaluator for the hand-built
  LRN networks. Batches of 8 with the data in class order, so every model's gradient pass
  spans several batches and pads the last one.
- The cross-class test against a plain ONNX Runtime session of the float32 graph with the
  moved weights written into its initializers, and numpy losses, accuracies and flow.
- ``auditor audit`` end to end on the file and its ``.npz``: exit 0, and base accuracy and
  loss in ``results.json`` equal to those of the exported file run as is by ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

import auditor
from auditor.cct import cross_class_test
from auditor.cli import app

from . import reference
from .deployed import DEPLOYED, deployed_entry, deployed_names

#: ONNX Runtime's fused Attention has no gradient: this one is refused, in one line.
REFUSED = {"bert_ort_fused": "com.microsoft.Attention"}
ALL = [n for n in deployed_names() if n not in REFUSED]
TORCH = [n for n in deployed_names(reference="torch") if n not in REFUSED]
LRN = [n for n in ALL if deployed_entry(n)["family"] in ("alexnet", "googlenet")]


def _losses_accuracies(z: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    z = z.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    loss = np.array([-logp[y == c, c].mean() for c in range(k)])
    accuracy = np.array([np.mean(z[y == c].argmax(1) == c) for c in range(k)])
    return loss, accuracy


_FLOATS = {"tensor(float16)": np.float16, "tensor(float)": np.float32}


def _session_logits(proto: onnx.ModelProto | Path, feeds: dict[str, np.ndarray], logits: str,
                    config: dict[str, str] | None = None, batch: int | None = None) -> np.ndarray:
    """One plain ONNX Runtime session on CPU, float inputs cast to the graph's declared types.

    All samples in one call, or ``batch`` at a time for a graph with a fixed batch size.
    """
    options = ort.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    proto = onnx.load(proto) if isinstance(proto, Path) else proto
    if logits not in {o.name for o in proto.graph.output}:  # the input of a final Softmax
        proto = onnx.ModelProto.FromString(proto.SerializeToString())
        proto.graph.output.append(onnx.ValueInfoProto(name=logits))
    source = proto.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    cast = {k: v.astype(_FLOATS[types[k]]) if types[k] in _FLOATS else v for k, v in feeds.items() if k in types}
    n = len(next(iter(cast.values())))
    step = batch or n
    parts = [session.run([logits], {k: v[s:s + step] for k, v in cast.items()})[0] for s in range(0, n, step)]
    return np.concatenate(parts).reshape(n, -1).astype(np.float64)  # [N, K, 1, 1] logits too


def _loaded(name: str) -> tuple[dict, auditor.Model, auditor.Dataset]:
    e = deployed_entry(name)
    return e, auditor.load_model(e["path"]), auditor.Dataset(e["feeds"], e["y"])


@pytest.mark.parametrize("name", TORCH)
def test_class_gradients_equal_autograd(name: str) -> None:
    e, model, data = _loaded(name)
    grads = auditor.class_gradients(model, data, batch_size=8)
    matched = [m["initializer"] for m in e["torch_params_matched"]]
    assert set(matched) <= set(model.parameter_names)
    # contrib-op graphs run ONNX Runtime's fused float32 kernels forward (tanh GELU, fused LayerNorm)
    tol = 2e-3 if e["contrib_ops"] else 1e-4
    with np.load(DEPLOYED / e["grads"]) as g:
        for c in range(model.n_classes):
            # a tensor whose true gradient is zero (an attention key bias: softmax ignores a constant
            # added to a row) holds rounding noise; it is compared at the scale of the class's largest
            scale = max(np.abs(g[f"{c}/{p}"]).max() for p in matched)
            for p in matched:
                ref = g[f"{c}/{p}"]
                err = np.abs(grads[c][p] - ref).max() / max(np.abs(ref).max(), 1e-3 * scale)
                assert err <= tol, f"class {c}, {p}: relative error {err:.2e}"


@pytest.mark.parametrize("name", LRN)
def test_class_gradients_of_lrn_networks_equal_finite_differences(name: str) -> None:
    e, model, data = _loaded(name)
    grads = auditor.class_gradients(model, data, batch_size=8)
    (x,) = e["feeds"].values()
    proto = onnx.load(e["path"])
    order = [i for n in proto.graph.node for i in n.input]
    first = min(model.parameter_names, key=order.index)  # nearest the input: through every LRN
    for c in (0, model.n_classes - 1):
        flat = grads[c][first].ravel()
        indices = np.argsort(-np.abs(flat))[:3]
        fd = reference.finite_difference_gradient(proto, x, e["y"], c, first, e["logits"], e["logits_kind"],
                                                  indices=indices)
        np.testing.assert_allclose(flat[indices], fd, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("name", ALL)
def test_cross_class_test_equals_an_independent_evaluation(name: str) -> None:
    e, model, data = _loaded(name)
    dirs = auditor.ego_directions(model, gradients=auditor.class_gradients(model, data, batch_size=8))
    alphas = [-0.1, 0.0, 0.1]
    k, y = model.n_classes, e["y"]
    ego = k - 1
    # one batch: a dynamically quantised graph scales its activations over the batch it is given
    r = cross_class_test(model, data, dirs, alphas, ego_classes=[ego], batch_size=len(y))
    weights = model.weights()
    for a, alpha in enumerate(r.steps(0)):
        moved = onnx.ModelProto()
        moved.CopyFrom(model.proto)  # the float32 graph the audit evaluates (the twin of an fp16/int8 file)
        for t in moved.graph.initializer:
            if t.name in weights:
                value = weights[t.name] + alpha * dirs[ego][t.name]
                t.CopyFrom(numpy_helper.from_array(value.astype(weights[t.name].dtype), t.name))
        z = _session_logits(moved, e["feeds"], e["logits"], dict(model.session_config), e["batch_fixed"])
        loss, accuracy = _losses_accuracies(z, y, k)
        np.testing.assert_allclose(r.loss[0, :, a], loss, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(r.accuracy[0, :, a], accuracy)
        conf = np.zeros((k, k))
        np.add.at(conf, (y, z.argmax(1)), 1)
        np.testing.assert_allclose(r.flow[0, :, a], conf / conf.sum(1, keepdims=True), atol=1e-7)
    assert np.ptp(r.loss[0, ego]) > 1e-4  # the weights really moved


@pytest.mark.parametrize("name", ALL)
def test_audit_command_end_to_end(name: str, tmp_path: Path) -> None:
    e = deployed_entry(name)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", str(e["path"]), "--data", str(DEPLOYED / e["data"]), "--out", str(out),
                                      "--pairs", "1", "--grid", "3"])
    results = json.loads((out / "results.json").read_text())
    # random weights: the default gate may fail (exit 1), and then says so in results.json
    assert result.exit_code == (1 if results["gate"]["verdict"] == "fail" else 0), result.output
    assert (out / "report.html").stat().st_size > 10_000
    z = _session_logits(e["path"], e["feeds"], e["logits"], batch=e["batch_fixed"])
    loss, accuracy = _losses_accuracies(z, e["y"], e["n_classes"])
    np.testing.assert_allclose(results["per_class"]["accuracy"], accuracy)
    np.testing.assert_allclose(results["per_class"]["loss"], loss, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_models_get_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    e = deployed_entry(name)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", str(e["path"]), "--data", str(DEPLOYED / e["data"]), "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and REFUSED[name] in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


def test_inspect_lists_the_rewrites_and_the_refusal() -> None:
    def inspect(name: str) -> dict:
        result = CliRunner().invoke(app, ["inspect", str(deployed_entry(name)["path"]), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["gradients"]

    proto = onnx.load(deployed_entry("mobilenetv2_ts")["path"])
    depthwise = [n for n in proto.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    relu6 = [n for n in proto.graph.node if n.op_type == "Clip"]
    gradients = inspect("mobilenetv2_ts")
    assert gradients["refused"] is None
    assert {r["name"]: r["count"] for r in gradients["rewrites"]} == {"depthwise-conv": len(depthwise),
                                                                      "clip-mask": len(relu6)}
    lrn = sum(n.op_type == "LRN" for n in onnx.load(deployed_entry("googlenet_lrn")["path"]).graph.node)
    assert {r["name"]: r["count"] for r in inspect("googlenet_lrn")["rewrites"]} == {"lrn": lrn}
    assert "com.microsoft.Attention" in inspect("bert_ort_fused")["refused"]
