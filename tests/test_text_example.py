"""The bundled text example (examples/text): the committed model is the one PyTorch trained,
and the CLI audits it from the CSV with per-class numbers equal to an independent
evaluation (our own tokenisation, padding and ONNX Runtime run, numpy metrics)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from auditor.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "text"
NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: The pairs examples/text/make_data.py made to overlap (README: the audit should find them).
DESIGNED_PAIRS = {frozenset({"billing", "refund"}), frozenset({"delivery_delay", "shipping"}),
                  frozenset({"account", "billing"})}


@pytest.fixture(scope="module")
def independent() -> dict[str, np.ndarray | list[str]]:
    """Tokenise test.csv with ``tokenizers`` (unpadded), pad by hand, run the model on CPU."""
    from tokenizers import Tokenizer

    with open(EXAMPLE / "test.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    tokenizer = Tokenizer.from_file(str(EXAMPLE / "tokenizer.json"))
    tokenizer.no_padding()
    encodings = tokenizer.encode_batch([r["text"] for r in rows])
    length = max(len(e.ids) for e in encodings)
    pad = tokenizer.token_to_id("[PAD]")

    def padded(seqs: list[list[int]], fill: int) -> np.ndarray:
        return np.array([s + [fill] * (length - len(s)) for s in seqs], dtype=np.int64)

    arrays = {"input_ids": padded([e.ids for e in encodings], pad),
              "attention_mask": padded([[1] * len(e.ids) for e in encodings], 0),
              "token_type_ids": padded([e.type_ids for e in encodings], 0)}
    class_names = sorted({r["label"] for r in rows})
    y = np.array([class_names.index(r["label"]) for r in rows])
    session = ort.InferenceSession(str(EXAMPLE / "text.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], arrays)[0].astype(np.float64)
    return {**arrays, "y": y, "logits": logits, "class_names": class_names}


def test_committed_model_computes_the_pytorch_logits(independent: dict) -> None:
    reference = np.load(EXAMPLE / "text_reference.npz")
    # The CSV and tokenizer give the token arrays the model was evaluated on at training time ...
    for name in NAMES:
        np.testing.assert_array_equal(independent[name], reference[name], err_msg=name)
    np.testing.assert_array_equal(independent["y"], reference["y"])
    # ... and the ONNX model turns them into the logits PyTorch computed.
    session = ort.InferenceSession(str(EXAMPLE / "text.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {n: reference[n] for n in NAMES})[0]
    assert logits.shape == (len(reference["y"]), 6)
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-4)


def test_example_audits_from_csv_with_independently_checked_numbers(independent: dict, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, [
        "audit", str(EXAMPLE / "text.onnx"), "--data", str(EXAMPLE / "test.csv"), "--text-column", "text",
        "--tokenizer", str(EXAMPLE / "tokenizer.json"), "--out", str(out), "--grid", "5", "--pairs", "1",
        "--device", "cpu"])
    assert result.exit_code in (0, 1), result.output  # 1: the default gate may fail; the numbers are checked below
    results = json.loads((out / "results.json").read_text())
    y, logits, k = independent["y"], independent["logits"], len(independent["class_names"])
    assert results["class_names"] == independent["class_names"]

    predicted = logits.argmax(axis=1)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    np.testing.assert_array_equal(np.array(results["errors"]["confusion"]), confusion)
    accuracy = np.array([np.mean(predicted[y == c] == c) for c in range(k)])
    np.testing.assert_allclose(results["per_class"]["accuracy"], accuracy, rtol=0, atol=1e-12)
    shifted = logits - logits.max(axis=1, keepdims=True)
    cross_entropy = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]
    loss = np.array([cross_entropy[y == c].mean() for c in range(k)])
    np.testing.assert_allclose(results["per_class"]["loss"], loss, rtol=1e-5, atol=1e-7)

    # What examples/text/README.md reports: the three designed pairs are the most confused ones and the ones with
    # the largest gradient conflict.
    names = results["class_names"]
    assert {frozenset({names[a], names[b]}) for a, b, _ in results["errors"]["pairs"][:3]} == DESIGNED_PAIRS
    conflict = np.array(results["interference"]["conflict"], dtype=float)
    a, b = np.triu_indices(k, 1)
    by_conflict = np.argsort(-conflict[a, b], kind="stable")[:3]
    assert {frozenset({names[a[j]], names[b[j]]}) for j in by_conflict} == DESIGNED_PAIRS
