"""Model loading on every fixture: input, logits, classes, θ; `auditor inspect` on each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import auditor
from auditor.cli import app
from auditor.errors import ModelError
from auditor.inference import predict_logits

KINDS = {"logits": ("logits", "softmax_input"), "probabilities": ("probabilities",), "sigmoid": ("sigmoid",)}


def test_zoo_model_is_read_as_the_manifest_says(zoo: dict) -> None:
    model = auditor.load_model(zoo["path"])
    assert model.n_classes == zoo["n_classes"]
    assert model.logits_name == zoo["logits"]
    assert model.logits_kind in KINDS[zoo["logits_kind"]]
    assert model.fixed_batch == zoo["batch_fixed"]
    assert model.parameters and all(p.size >= 2 for p in model.parameters)
    proto = onnx.load(zoo["path"])
    for node in proto.graph.node:  # running statistics are never parameters
        if node.op_type == "BatchNormalization":
            assert not {node.input[3], node.input[4]} & set(model.parameter_names)


def test_predicted_logits_match_the_reference(zoo: dict) -> None:
    from . import reference

    model = auditor.load_model(zoo["path"])
    got = predict_logits(model, zoo["x"], batch_size=7)  # an odd batch: a partial last batch
    expected = reference.reference_logits(onnx.load(zoo["path"]), zoo["x"], zoo["logits"], zoo["logits_kind"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_inspect_works_on_every_fixture(zoo: dict) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(zoo["path"])])
    assert result.exit_code == 0, result.output
    model = auditor.load_model(zoo["path"])
    for p in model.parameters:
        assert p.name in result.output
    data = json.loads(runner.invoke(app, ["inspect", str(zoo["path"]), "--json"]).output)
    assert data["n_classes"] == zoo["n_classes"] and data["n_parameters"] == model.n_parameters


def test_constant_node_and_subgraph_weights_are_parameters() -> None:
    from .conftest import zoo_entry

    model = auditor.load_model(zoo_entry("matmul_const")["path"])
    sources = {p.source for p in model.parameters}
    assert {"constant", "subgraph"} <= sources


def test_old_export_is_converted_and_keeps_its_batch_of_one() -> None:
    from .conftest import zoo_entry

    model = auditor.load_model(zoo_entry("old_export")["path"])
    assert model.original_opset <= 11 and model.opset >= 16 and model.fixed_batch == 1
    assert any("converted" in n for n in model.notes)


def test_external_data_loads(small_mlp: dict, tmp_path: Path) -> None:
    proto = onnx.load(small_mlp["path"])
    target = tmp_path / "ext" / "model.onnx"
    target.parent.mkdir()
    onnx.save(proto, target, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    assert (target.parent / "weights.bin").exists()
    model = auditor.load_model(target)
    np.testing.assert_array_equal(model.weights()["w0"], small_mlp["weights"][0][0].astype(np.float32))


def test_exclude_removes_a_tensor_and_rejects_unknown_names(small_mlp: dict) -> None:
    model = auditor.load_model(small_mlp["path"], exclude=["b0"])
    assert "b0" not in model.parameter_names and model.excluded == ("b0",)
    with pytest.raises(ModelError, match="cannot exclude .*nope"):
        auditor.load_model(small_mlp["path"], exclude=["nope"])


def test_softmax_and_probability_heads(tmp_path: Path) -> None:
    from .conftest import make_mlp, random_mlp_weights

    path = make_mlp(tmp_path / "sm.onnx", random_mlp_weights(4, 5, 3), softmax=True)
    model = auditor.load_model(path)
    assert model.logits_kind == "softmax_input" and model.logits_name == "h1" and model.output_name == "prob"


def test_probability_output_without_softmax_is_read_as_probabilities(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Exp", ["z"], ["e"]),
             helper.make_node("ReduceSum", ["e", "axis"], ["s"], keepdims=1),
             helper.make_node("Div", ["e", "s"], ["scores"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])],
                          [w, numpy_helper.from_array(np.array([1], np.int64), "axis")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "p.onnx")
    model = auditor.load_model(tmp_path / "p.onnx")
    assert model.logits_kind == "probabilities" and model.n_classes == 4
    x = rng.standard_normal((5, 3)).astype(np.float32)
    z = x.astype(np.float64) @ numpy_helper.to_array(w).astype(np.float64)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(predict_logits(model, x), logp, rtol=1e-5, atol=1e-5)
