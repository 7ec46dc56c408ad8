"""fp16 and int8 exports in the audit: base metrics of the graph as deployed, the twin beside them.

The deployed graph's logits are checked against a plain ONNX Runtime session on the file
itself; the twin check's numbers against numpy on the two sets of logits.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import auditor
from auditor.inference import deployed_logits, predict_logits
from auditor.runtime import StepStats

from .deployed import deployed_entry, deployed_names

LOW_PRECISION = [n for n in deployed_names() if deployed_entry(n)["precision"] != "float32"]
KINDS = {"float16": "float16", "float16-io32": "float16-io32", "int8-qdq-per-tensor": "int8-qdq",
         "int8-qdq-per-channel": "int8-qdq", "int8-qoperator": "int8-qoperator", "int8-dynamic": "int8-dynamic"}


def _file_logits(path: object, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The exported file run as is by ONNX Runtime (default options), one call."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    cast = {k: v.astype(np.float16) if types[k] == "tensor(float16)" else v for k, v in feeds.items()}
    return np.asarray(session.run(["logits"], cast)[0], dtype=np.float64)


@pytest.mark.parametrize("name", LOW_PRECISION)
def test_deployed_graph_is_read_as_exported(name: str) -> None:
    e = deployed_entry(name)
    model = auditor.load_model(e["path"])
    assert model.precision == KINDS[e["precision"]] and model.deployed is not None
    assert model.summary()["precision"] == model.precision and model.summary()["twin"]["kind"] == model.precision
    data = auditor.Dataset(e["feeds"], e["y"])
    got = deployed_logits(model, data, batch_size=len(e["y"]))
    np.testing.assert_allclose(got, _file_logits(e["path"], e["feeds"]), rtol=0, atol=1e-6)
    if model.precision.startswith("float16"):  # the twin's weights are the fp16 weights, exactly
        assert set(model.deployed_input_types.values()) <= {"float16", "float"}  # onnx names: float16, float


def test_twin_check_numbers_are_those_of_the_two_sets_of_logits() -> None:
    e = deployed_entry("bert_int8_dynamic")
    model = auditor.load_model(e["path"])
    data = auditor.Dataset(e["feeds"], e["y"])
    result = auditor.run_audit(model, data, auditor.AuditOptions(pairs=0, grid=3), gate=None)
    check = result.twin
    assert check is not None and check.kind == "int8-dynamic"
    deployed = _file_logits(e["path"], e["feeds"])
    twin = predict_logits(model, data).astype(np.float64)
    k, y = model.n_classes, e["y"]

    def losses(z: np.ndarray) -> np.ndarray:
        logp = z - z.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        return np.array([-logp[y == c, c].mean() for c in range(k)])

    np.testing.assert_allclose(check.deployed_loss, losses(deployed), rtol=1e-6)
    np.testing.assert_allclose(check.twin_loss, losses(twin), rtol=1e-5)
    np.testing.assert_array_equal(check.deployed_accuracy,
                                  [np.mean(deployed[y == c].argmax(1) == c) for c in range(k)])
    assert check.top1_agreement == pytest.approx(np.mean(deployed.argmax(1) == twin.argmax(1)))
    assert check.max_abs_logit_difference == pytest.approx(np.abs(deployed - twin).max(), rel=1e-4)
    # the audit's base metrics are the deployed graph's
    np.testing.assert_array_equal(result.loss, check.deployed_loss)
    np.testing.assert_array_equal(result.accuracy, check.deployed_accuracy)
    conf = np.zeros((k, k), int)
    np.add.at(conf, (y, deployed.argmax(1)), 1)
    np.testing.assert_array_equal(result.errors.confusion, conf)
    assert auditor.AuditResult.from_dict(result.to_dict()).twin.to_dict() == check.to_dict()  # type: ignore[union-attr]


def test_step_stats_from_logits_equal_numpy() -> None:
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((40, 4)) * 3, rng.integers(0, 3, 40)  # class 3 absent
    s = StepStats.from_logits(z, y, 4)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(s.loss[:3], [-logp[y == c, c].mean() for c in range(3)])
    assert np.isnan(s.loss[3]) and np.isnan(s.accuracy[3])
    np.testing.assert_array_equal(s.predictions, z.argmax(1))
    np.testing.assert_array_equal(s.count, np.bincount(y, minlength=4))
