"""Text data and multi-input models: tokenisation checked against hand-made token ids,
gradients through the embedding tables against float64 finite differences, the CCT against
a numpy evaluation, input matching and filling, and the one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import auditor
from auditor.cli import app
from auditor.errors import DataError, OptionError

from . import text_model as tm
from .conftest import spec_model

ROWS = [("good movie", "pos"), ("very bad plot", "neg"), ("the actor was fine", "neu"), ("awful", "neg"),
        ("great great movie", "pos"), ("not good not bad", "neu"), ("poor plot", "neg"), ("a fine movie", "neu"),
        ("very good actor", "pos"), ("the plot was awful", "neg"), ("fine", "neu"), ("great actor", "pos")]


def _csv(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("text", "label")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def text_files(tmp_path: Path) -> dict[str, Path]:
    return {"csv": _csv(tmp_path / "reviews.csv", ROWS), "tok": tm.save_tokenizer(tmp_path / "tokenizer.json"),
            "model": tm.save_model(tmp_path / "text.onnx", tm.weights())}


def _padded(seqs: list[list[int]], length: int, fill: int = 0) -> np.ndarray:
    return np.array([s + [fill] * (length - len(s)) for s in seqs], dtype=np.int64)


def test_csv_text_is_tokenised_as_by_hand(text_files: dict[str, Path]) -> None:
    d = auditor.load_data(text_files["csv"], text_column="text", tokenizer=text_files["tok"])
    expected = [tm.expected_ids(t)[0] for t, _ in ROWS]
    length = max(map(len, expected))
    np.testing.assert_array_equal(d.features["input_ids"], _padded(expected, length, tm.VOCAB["[PAD]"]))
    np.testing.assert_array_equal(d.features["attention_mask"], _padded([[1] * len(e) for e in expected], length))
    np.testing.assert_array_equal(d.features["token_type_ids"], np.zeros((len(ROWS), length), np.int64))
    assert d.class_names == ("neg", "neu", "pos")  # sorted names found
    assert d.y.tolist() == [("neg", "neu", "pos").index(label) for _, label in ROWS]
    assert d.texts == tuple(t for t, _ in ROWS)
    assert any("tokenised" in n for n in d.notes)


def test_jsonl_gives_the_same_arrays_as_csv(tmp_path: Path, text_files: dict[str, Path]) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps({"review": t, "stars": label}) for t, label in ROWS) + "\n\n")
    j = auditor.load_data(path, text_column="review", label_column="stars", tokenizer=text_files["tok"])
    c = auditor.load_data(text_files["csv"], text_column="text", tokenizer=text_files["tok"])
    for name in c.features:
        np.testing.assert_array_equal(j.features[name], c.features[name])
    np.testing.assert_array_equal(j.y, c.y)


def test_text_pairs_use_the_pair_template(tmp_path: Path, text_files: dict[str, Path]) -> None:
    rows = [("good movie", "the plot", "pos"), ("bad", "awful actor was", "neg")]
    path = _csv(tmp_path / "pairs.csv", rows, ("premise", "hypothesis", "label"))
    d = auditor.load_data(path, text_column=["premise", "hypothesis"], tokenizer=text_files["tok"])
    expected = [tm.expected_ids(a, b) for a, b, _ in rows]
    length = max(len(ids) for ids, _ in expected)
    np.testing.assert_array_equal(d.features["input_ids"], _padded([ids for ids, _ in expected], length))
    np.testing.assert_array_equal(d.features["token_type_ids"], _padded([t for _, t in expected], length))
    assert d.texts == ("good movie ‖ the plot", "bad ‖ awful actor was")


def test_truncation_and_fixed_length_padding(text_files: dict[str, Path]) -> None:
    d = auditor.load_data(text_files["csv"], text_column="text", tokenizer=text_files["tok"], max_length=5,
                          padding="max_length")
    assert d.features["input_ids"].shape == (len(ROWS), 5)
    long_rows = sum(len(tm.expected_ids(t)[0]) > 5 for t, _ in ROWS)
    assert long_rows > 0 and any(f"{long_rows} of {len(ROWS)} texts were longer than 5 tokens" in n for n in d.notes)
    ids, _ = tm.expected_ids("fine")
    np.testing.assert_array_equal(d.features["input_ids"][10], ids + [0] * (5 - len(ids)))
    assert d.features["input_ids"][2].tolist()[-1] == tm.VOCAB["[SEP]"]  # truncated rows keep their [SEP]


TEXT_ERRORS = [
    ("missing column", lambda f, t: auditor.load_data(f["csv"], text_column="body", tokenizer=f["tok"]),
     DataError, r"has no column 'body' \(columns: text, label\); name the text column"),
    ("no tokenizer", lambda f, t: auditor.load_data(f["csv"], text_column="text"), OptionError,
     r"text data need a tokenizer: give --tokenizer tokenizer\.json"),
    ("tokenizer without text column", lambda f, t: auditor.load_data(f["csv"], tokenizer=f["tok"]), OptionError,
     r"--tokenizer needs --text-column"),
    ("missing tokenizer file", lambda f, t: auditor.load_data(f["csv"], text_column="text", tokenizer=t / "no.json"),
     OptionError, r"tokenizer file '.*no\.json' does not exist"),
    ("not a tokenizer", lambda f, t: auditor.load_data(f["csv"], text_column="text", tokenizer=f["csv"]),
     OptionError, r"is not a tokenizers file"),
    ("no pad token", lambda f, t: auditor.load_data(f["csv"], text_column="text",
                                                    tokenizer=tm.save_tokenizer(t / "nopad.json", pad=False)),
     OptionError, r"defines no padding token and has none of \[PAD\]"),
    ("pairs without template", lambda f, t: auditor.load_data(
        _csv(t / "p.csv", [("a", "b", "pos")], ("x1", "x2", "label")), text_column=["x1", "x2"],
        tokenizer=tm.save_tokenizer(t / "notemplate.json", pair_template=False)),
     OptionError, r"has no pair template"),
    ("bad json line", lambda f, t: (t / "b.jsonl").write_text('{"text": "good", "label": "pos"}\n{oops\n')
     and auditor.load_data(t / "b.jsonl", text_column="text", tokenizer=f["tok"]), DataError,
     r"line 2 is not JSON"),
    ("jsonl without text column", lambda f, t: (t / "c.jsonl").write_text('{"text": "good"}\n')
     and auditor.load_data(t / "c.jsonl"), OptionError, r"is JSON lines: name its text column with --text-column"),
    ("three text columns", lambda f, t: auditor.load_data(f["csv"], text_column=["a", "b", "c"], tokenizer=f["tok"]),
     OptionError, r"give one text column, or two for text pairs"),
]


@pytest.mark.parametrize(("case", "make", "error", "message"), TEXT_ERRORS, ids=[e[0] for e in TEXT_ERRORS])
def test_text_errors_are_one_clear_line(case: str, make, error: type, message: str, text_files: dict[str, Path],
                                        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message) as info:
        make(text_files, tmp_path)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the model


@pytest.fixture
def text_setup(text_files: dict[str, Path]) -> dict:
    model = auditor.load_model(text_files["model"])
    data = auditor.check_dataset(auditor.load_data(text_files["csv"], text_column="text",
                                                   tokenizer=text_files["tok"]), model)
    return {"model": model, "data": data, "w": tm.weights(), "arrays": dict(data.features)}


def test_text_model_inputs_have_roles(text_setup: dict) -> None:
    model = text_setup["model"]
    assert [(i.name, i.role, i.dtype.name, i.shape) for i in model.inputs] == [
        ("input_ids", "token_ids", "int64", (None, None)), ("attention_mask", "attention_mask", "int64", (None, None)),
        ("token_type_ids", "token_type_ids", "int64", (None, None))]
    assert model.input_name == "input_ids" and model.layout == "tokens"
    assert {p.name for p in model.parameters} == {"emb", "types", "w1", "b1", "w2", "b2"}  # ids are not θ


def test_text_model_gradients_equal_finite_differences(text_setup: dict) -> None:
    model, data, w, arrays = (text_setup[k] for k in ("model", "data", "w", "arrays"))
    grads = auditor.class_gradients(model, data, batch_size=3)  # several batches per class, a padded last one
    k, eps = model.n_classes, 1e-6
    used = np.unique(arrays["input_ids"][arrays["attention_mask"] == 1])
    for c in range(k):
        for name, flat_idx in (("emb", [used[0] * 5, used[-1] * 5 + 4, tm.VOCAB["[PAD]"] * 5]), ("types", [0, 3]),
                               ("w1", [0, 7, 29]), ("b2", [0, 2])):
            for i in flat_idx:
                plus = {n: v.astype(np.float64).copy() for n, v in w.items()}
                minus = {n: v.astype(np.float64).copy() for n, v in w.items()}
                plus[name].reshape(-1)[i] += eps
                minus[name].reshape(-1)[i] -= eps
                fd = (tm.class_losses(plus, arrays, data.y, k)[c] - tm.class_losses(minus, arrays, data.y, k)[c]) / (
                    2 * eps)
                got = float(grads[c][name].reshape(-1)[i])
                assert got == pytest.approx(fd, rel=1e-3, abs=1e-6), (c, name, i)
    # padding tokens are masked out, so their embedding row gets no gradient
    assert not np.any(grads[0]["emb"][tm.VOCAB["[PAD]"]])


def test_text_model_cct_equals_numpy_evaluation(text_setup: dict) -> None:
    model, data, w, arrays = (text_setup[k] for k in ("model", "data", "w", "arrays"))
    dirs = auditor.ego_directions(model, data)
    alphas = [-0.1, 0.0, 0.15]
    for strategy in ("inputs", "rebuild"):
        r = auditor.cross_class_test(model, data, dirs, alphas, strategy=strategy)
        for i, c in enumerate(r.ego_classes):
            d = dirs[c]
            for a, alpha in enumerate(r.steps(i)):
                moved = {n: w[n].astype(np.float64) + alpha * np.asarray(d[n], np.float64) for n in w}
                np.testing.assert_allclose(r.loss[i, :, a], tm.class_losses(moved, arrays, data.y, model.n_classes),
                                           rtol=2e-5, atol=1e-6)
        assert np.ptp(r.loss[0, r.ego_classes[0]]) > 1e-3


def test_omitted_mask_and_token_types_are_filled_as_the_model_would(text_setup: dict) -> None:
    model = text_setup["model"]
    ids = np.array([[2, 4, 3], [2, 9, 3]], np.int64)
    partial = auditor.check_dataset(auditor.Dataset({"input_ids": ids}, [0, 1]), model)
    np.testing.assert_array_equal(partial.features["attention_mask"], np.ones_like(ids))
    np.testing.assert_array_equal(partial.features["token_type_ids"], np.zeros_like(ids))
    assert sum("filled as a model fills an omitted" in n for n in partial.notes) == 2
    one = auditor.check_dataset(auditor.Dataset(ids, [0, 1]), model)  # a single unnamed array: the token ids
    np.testing.assert_array_equal(one.features["input_ids"], ids)
    assert list(partial.features) == [i.name for i in model.inputs]


def test_model_input_the_data_cannot_fill_is_named(tmp_path: Path) -> None:
    model = spec_model((None, 4), k=2, extra={"pixel_scale": (None, 1)})
    assert [i.role for i in model.inputs] == ["features", "features"]
    with pytest.raises(DataError, match=r"the model's input 'pixel_scale' cannot be filled from the data \(its "
                                        r"arrays: x\); give one array per model input"):
        auditor.check_dataset(auditor.Dataset(np.zeros((2, 4), np.float32), [0, 1]), model)
    ok = auditor.check_dataset(auditor.Dataset({"x": np.zeros((2, 4)), "pixel_scale": np.ones((2, 1))}, [0, 1]), model)
    assert ok.features["pixel_scale"].dtype == np.int64 and ok.features["x"].dtype == np.float32


def test_token_arrays_of_different_lengths_are_refused(text_setup: dict) -> None:
    bad = auditor.Dataset({"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.ones((2, 3), np.int64)},
                          [0, 1])
    with pytest.raises(DataError, match=r"the token-level arrays differ in shape \(input_ids \(4,\), "
                                        r"attention_mask \(3,\)"):
        auditor.check_dataset(bad, text_setup["model"])
    with pytest.raises(DataError, match=r"holds non-integer values but input 'input_ids' takes int64"):
        auditor.check_dataset(auditor.Dataset({"input_ids": np.full((2, 4), 1.5)}, [0, 1]), text_setup["model"])


def test_audit_a_text_model_from_csv_on_the_command_line(text_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", str(text_files["model"]), "--data", str(text_files["csv"]),
                                      "--text-column", "text", "--tokenizer", str(text_files["tok"]), "--grid", "3",
                                      "--out", str(out), "--gate", "worst_class_accuracy=0:0"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["class_names"] == ["neg", "neu", "pos"]
    assert results["data"]["texts"] is True and results["data"]["arrays"]["input_ids"]["dtype"] == "int64"
    assert any("tokenised" in n for n in results["data"]["notes"])
    inspect = CliRunner().invoke(app, ["inspect", str(text_files["model"])]).output
    assert re.search(r"attention_mask\s+\[Nx\?\] int64 \(attention_mask\)", inspect), inspect
