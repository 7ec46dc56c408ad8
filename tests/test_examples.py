"""Samples of confused pairs: which samples are chosen, their thumbnails and texts, the round trip."""

from __future__ import annotations

import numpy as np
import pytest

import auditor
from auditor.examples import PER_DIRECTION, THUMBNAIL_SIDE, PairExamples, confused_examples
from auditor.inference import predict_logits

from .conftest import zoo_entry


def _expected_thumbnail(chw: np.ndarray) -> np.ndarray:
    """Block mean to at most THUMBNAIL_SIDE a side, then min-max to 0..255 (written out independently)."""
    hwc = np.transpose(chw.astype(np.float64), (1, 2, 0))
    f = int(np.ceil(max(hwc.shape[:2]) / THUMBNAIL_SIDE))
    h, w = hwc.shape[0] // f, hwc.shape[1] // f
    small = np.array([[hwc[i * f:(i + 1) * f, j * f:(j + 1) * f].mean(axis=(0, 1)) for j in range(w)]
                      for i in range(h)])
    out = np.round((small - small.min()) / (small.max() - small.min()) * 255).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out  # one channel: a grey (h, w) picture


def test_image_examples_are_the_first_errors_with_independent_thumbnails() -> None:
    z = zoo_entry("cnn_bn")
    model = auditor.load_model(z["path"])
    data = auditor.check_dataset(auditor.Dataset(z["x"], z["y"]), model)
    pred = predict_logits(model, data).argmax(axis=1)
    conf = np.zeros((model.n_classes,) * 2, int)
    np.add.at(conf, (data.y, pred), 1)
    a, b = np.unravel_index(np.argmax(conf - np.diag(np.diag(conf))), conf.shape)
    (pair,) = confused_examples(data, model, pred, [(int(a), int(b))])
    wrong_ab = np.flatnonzero((data.y == a) & (pred == b))[:PER_DIRECTION]
    wrong_ba = np.flatnonzero((data.y == b) & (pred == a))[:PER_DIRECTION]
    assert [s.index for s in pair.samples] == [*wrong_ab, *wrong_ba] and len(wrong_ab) > 0
    for s in pair.samples:
        assert (s.true, s.predicted) == (int(data.y[s.index]), int(pred[s.index]))
        assert s.image is not None and s.text is None
        np.testing.assert_array_equal(s.image, _expected_thumbnail(z["x"][s.index]))
    again = PairExamples.from_dict(pair.to_dict())
    assert [s.index for s in again.samples] == [s.index for s in pair.samples]
    for s, t in zip(pair.samples, again.samples, strict=True):
        np.testing.assert_array_equal(s.image, t.image)


def test_large_images_are_shrunk_and_feature_vectors_have_no_thumbnail(small_mlp: dict) -> None:
    from auditor.examples import thumbnail

    big = np.random.default_rng(0).random((1, 3, 200, 70))
    thumb = thumbnail(big[0], "NCHW")
    assert thumb is not None and thumb.shape == (50, 17, 3) and thumb.min() == 0 and thumb.max() == 255
    np.testing.assert_array_equal(thumb, _expected_thumbnail(big[0]))
    model = auditor.load_model(small_mlp["path"])
    data = auditor.check_dataset(auditor.Dataset(small_mlp["x"], small_mlp["y"]), model)
    pred = (np.asarray(data.y) + 1) % 4
    (pair,) = confused_examples(data, model, pred, [(0, 1)])
    assert [s.index for s in pair.samples] == [0, 1, 2] and all(s.image is None and s.text is None
                                                               for s in pair.samples)


def test_text_examples_are_the_texts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from . import text_model as tm
    from .test_text import ROWS, _csv

    model = auditor.load_model(tm.save_model(tmp_path / "t.onnx", tm.weights()))
    data = auditor.check_dataset(auditor.load_data(_csv(tmp_path / "r.csv", ROWS), text_column="text",
                                                   tokenizer=tm.save_tokenizer(tmp_path / "tok.json")), model)
    pred = np.zeros(len(data), np.int64)  # everything predicted "neg" (class 0)
    (pair,) = confused_examples(data, model, pred, [(0, 2)])
    pos = [i for i, (_, label) in enumerate(ROWS) if label == "pos"][:PER_DIRECTION]
    assert [s.index for s in pair.samples] == pos
    assert [s.text for s in pair.samples] == [ROWS[i][0] for i in pos]


@pytest.mark.parametrize("name", ["mlp", "cnn_bn"])
def test_audit_result_carries_examples_of_its_top_confused_pairs(name: str) -> None:
    z = zoo_entry(name)
    model = auditor.load_model(z["path"])
    result = auditor.run_audit(model, auditor.Dataset(z["x"], z["y"]), auditor.AuditOptions(pairs=0), gate=None)
    pairs = [(a, b) for a, b, _ in result.top_pairs_confusion[:5]]
    assert [(e.a, e.b) for e in result.examples] == pairs
    again = auditor.AuditResult.from_dict(result.to_dict())
    assert [[s.index for s in e.samples] for e in again.examples] == [[s.index for s in e.samples]
                                                                      for e in result.examples]


def test_report_draws_the_examples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re

    from auditor.report import render_report

    z = zoo_entry("cnn_bn")
    result = auditor.run_audit(auditor.load_model(z["path"]), auditor.Dataset(z["x"], z["y"]),
                               auditor.AuditOptions(pairs=0), gate=None)
    html = render_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    section = html.split('<section id="examples">')[1].split("</section>")[0]
    shown = sum(len(e.samples) for e in result.examples)
    assert shown > 0 and len(re.findall(r'<img src="data:image/png;base64,', section)) == shown
    first = result.examples[0].samples[0]
    assert f"sample {first.index}: <strong>{result.class_names[first.true]}</strong>" in section
    old = render_report(result.__class__.from_dict({**result.to_dict(), "examples": []}), tmp_path / "o.html")
    assert "holds no sample examples" in old.read_text(encoding="utf-8")
