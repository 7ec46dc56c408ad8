"""Label dancing: every count against hand-computed values on constructed sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import auditor
from auditor.dancing import (
    DanceAnalysis,
    LabelDancingRecorder,
    TruncatedLogWarning,
    dance_analysis,
    predict_checkpoints,
    probe_set,
    read_log,
    spearman,
)
from auditor.errors import OptionError, ResultsError

# 3 classes, 5 probe samples (labels 0, 0, 1, 1, 2), T = 5 records.
LABELS = np.array([0, 0, 1, 1, 2])
PRED = np.array([
    [0, 1, 1, 1, 2],   # t=0
    [0, 0, 1, 2, 2],   # t=1: s1 1->0, s3 1->2
    [1, 0, 1, 1, 2],   # t=2: s0 0->1, s3 2->1
    [0, 0, 1, 2, 1],   # t=3: s0 1->0, s3 1->2, s4 2->1
    [0, 0, 2, 2, 1],   # t=4: s2 1->2
])


@pytest.fixture
def analysis() -> DanceAnalysis:
    return dance_analysis((PRED, LABELS))


def test_flips_and_pair_flips(analysis: DanceAnalysis) -> None:
    np.testing.assert_array_equal(analysis.flips, [2, 1, 1, 3, 1])
    m = np.zeros((3, 3), int)
    for a, b in [(1, 0), (1, 2), (0, 1), (2, 1), (1, 0), (1, 2), (2, 1), (1, 2)]:
        m[a, b] += 1
    np.testing.assert_array_equal(analysis.pair_flips, m)
    assert analysis.dancing_pairs(2) == [(1, 2, 5), (0, 1, 3)]


def test_dance_curve_and_rate_with_the_default_window(analysis: DanceAnalysis) -> None:
    # transitions t = 1..4; flips per class: class 0 (2 samples): [1,1,1,0]; class 1: [1,1,1,1]; class 2: [0,0,1,0]
    np.testing.assert_allclose(analysis.dance_curve, [[0.5, 0.5, 0.5, 0.0], [0.5, 0.5, 0.5, 0.5], [0, 0, 1, 0]])
    assert analysis.window == (2, 4)  # T = 5: max(1, 5 // 2) = 2 .. 4
    np.testing.assert_allclose(analysis.dance_rate, [2 / 6, 3 / 6, 1 / 3])
    even = dance_analysis((PRED[:4], LABELS))  # T = 4: transitions 2..3
    assert even.window == (2, 3)
    np.testing.assert_allclose(even.dance_rate, [2 / 4, 2 / 4, 1 / 2])
    custom = dance_analysis((PRED, LABELS), window=(1, 1))
    np.testing.assert_allclose(custom.dance_rate, [0.5, 0.5, 0.0])


def test_notes_dominant_and_dominance(analysis: DanceAnalysis) -> None:
    np.testing.assert_allclose(analysis.notes[0, :, :], [[.5, .5, 0], [1, 0, 0], [.5, .5, 0], [1, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(analysis.notes[1, 1], [0, .5, .5])
    np.testing.assert_array_equal(analysis.dominant[0], [1, -1, 1, -1, -1])
    np.testing.assert_array_equal(analysis.dominant[1], [-1, 2, -1, 2, 2])
    np.testing.assert_array_equal(analysis.dominant[2], [-1, -1, -1, 1, 1])
    np.testing.assert_array_equal(analysis.dominance, [[0, 2, 0], [0, 0, 3], [0, 2, 0]])
    # ties go to the lowest class; the threshold is strict
    tie = dance_analysis((np.array([[1, 2, 0, 0]]).repeat(2, axis=0), np.array([0, 0, 0, 0])), threshold=0.25)
    np.testing.assert_array_equal(tie.dominant[0], [-1, -1])  # 0.25 does not exceed 0.25
    tie = dance_analysis((np.array([[1, 2, 0, 0]]).repeat(2, axis=0), np.array([0, 0, 0, 0])), threshold=0.2)
    np.testing.assert_array_equal(tie.dominant[0], [1, 1])


def test_forgetting_and_never_forgotten(analysis: DanceAnalysis) -> None:
    # correct? s0: 1,1,0,1,1 (1 forgetting); s1: 0,1,1,1,1 (0); s2: 1,1,1,1,0 (1); s3: 1,0,1,0,0 (2); s4: 1,1,1,0,0 (1)
    np.testing.assert_array_equal(analysis.forgetting, [1, 0, 1, 2, 1])
    np.testing.assert_array_equal(analysis.never_forgotten, [1, 0, 0])
    never_learned = dance_analysis((np.array([[1], [1], [1]]), np.array([0])))
    assert never_learned.never_forgotten[0] == 0  # never correct: not counted


def test_spearman_and_agreement(analysis: DanceAnalysis) -> None:
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ties: ranks [1.5, 1.5, 3] vs [1, 2, 3] -> r = 0.866...
    assert spearman(np.array([5, 5, 7]), np.array([1, 2, 3])) == pytest.approx(np.sqrt(3) / 2)
    s = np.array([[np.nan, 0.3, 0.1], [0.2, np.nan, 0.9], [0.0, 0.4, np.nan]])  # symmetrised: (0,1)=.3 (0,2)=.1 (1,2)=.9
    out = analysis.agreement(pair_score=s, pair_confusion=np.array([[0, 5, 0], [1, 0, 0], [0, 0, 0]]), top_k=1)
    # dancing (M+Mᵀ): (0,1)=3, (0,2)=0, (1,2)=5: same order as S
    assert out["interference"]["spearman"] == pytest.approx(1.0)
    assert out["interference"]["top_k_overlap"] == 1.0
    assert out["confusion"]["top_k_overlap"] == 0.0  # top by P: (0,1); top by dancing: (1,2)


def test_log_and_checkpoint_paths_give_identical_analyses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "dance.jsonl"
    with LabelDancingRecorder(log, LABELS, class_names=["a", "b", "c"]) as rec:
        for t, p in enumerate(PRED):
            logits = np.eye(3)[p] * 2.0  # one-hot logits: argmax is p
            rec.record(t, logits, epoch=t)
    from_log = dance_analysis(log)

    class FakeModel:
        n_classes = 3
        input_shape = (None, 1)
        input_dtype = np.float32

    calls = iter(PRED)
    monkeypatch.setattr("auditor.model.load_model", lambda path: FakeModel())
    monkeypatch.setattr("auditor.runtime.predict_logits", lambda model, x, **kw: np.eye(3)[next(calls)])
    for t in range(len(PRED)):
        (tmp_path / f"epoch_{t}.onnx").write_bytes(b"")
    probe = auditor.Dataset(np.zeros((5, 1), np.float32), LABELS, ("a", "b", "c"))
    series = predict_checkpoints(str(tmp_path / "epoch_*.onnx"), probe)
    from_ckpt = dance_analysis(series)
    for name in DanceAnalysis._ARRAYS:
        np.testing.assert_array_equal(getattr(from_log, name), getattr(from_ckpt, name), err_msg=name)
    assert from_log.class_names == ["a", "b", "c"]


def test_checkpoints_are_ordered_naturally_with_real_models(tmp_path: Path) -> None:
    from .conftest import make_mlp, random_mlp_weights

    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 4)).astype(np.float32)
    y = np.arange(12) % 3
    weights = {}
    for epoch in (1, 2, 10):
        weights[epoch] = random_mlp_weights(4, 5, 3, seed=epoch)
        make_mlp(tmp_path / f"epoch_{epoch}.onnx", weights[epoch])
    series = predict_checkpoints(str(tmp_path / "epoch_*.onnx"), auditor.Dataset(x, y))
    assert [Path(p).name for p in series.paths] == ["epoch_1.onnx", "epoch_2.onnx", "epoch_10.onnx"]
    np.testing.assert_array_equal(series.steps, [1, 2, 10])
    from . import numpy_mlp

    for row, epoch in enumerate((1, 2, 10)):
        np.testing.assert_array_equal(series.predictions[row], numpy_mlp.logits(weights[epoch], x).argmax(axis=1))


def test_a_log_cut_mid_record_still_loads(tmp_path: Path) -> None:
    log = tmp_path / "dance.jsonl"
    with LabelDancingRecorder(log, LABELS) as rec:
        for t, p in enumerate(PRED):
            rec.record(t, p)
    data = log.read_bytes()
    log.write_bytes(data[:-7])  # the crash hit the last line
    with pytest.warns(TruncatedLogWarning, match="incomplete"):
        steps, preds, _, _ = read_log(log)
    assert len(steps) == 4
    np.testing.assert_array_equal(preds, PRED[:4])


def test_corrupt_logs_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ResultsError, match="not a label-dancing log"):
        read_log(bad)
    log = tmp_path / "dance.jsonl"
    with LabelDancingRecorder(log, LABELS) as rec:
        for t, p in enumerate(PRED):
            rec.record(t, p)
    lines = log.read_text().splitlines()
    lines[2] = "{garbage"
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match="line 3 is corrupt"):
        read_log(log)
    with pytest.raises(ResultsError, match="does not exist"):
        read_log(tmp_path / "missing.jsonl")
    one = tmp_path / "one.jsonl"
    with LabelDancingRecorder(one, LABELS) as rec:
        rec.record(0, PRED[0])
    with pytest.raises(ResultsError, match="at least 2"):
        dance_analysis(one)


def test_recorder_input_checks_and_append(tmp_path: Path) -> None:
    log = tmp_path / "dance.jsonl"
    rec = LabelDancingRecorder(log, LABELS)
    with pytest.raises(Exception, match="5 samples"):
        rec.record(0, np.zeros((4, 3)))
    rec.record(0, PRED[0])
    rec.close()
    with pytest.raises(OptionError, match="exists"):
        LabelDancingRecorder(log, LABELS)
    with LabelDancingRecorder(log, LABELS, append=True) as again:
        assert again.n_records == 1
        again.record(1, PRED[1])
    assert len(read_log(log)[0]) == 2
    header = json.loads(log.read_text().splitlines()[0])
    assert header["labels"] == LABELS.tolist() and header["n_classes"] == 3


def test_probe_set_is_stratified_and_deterministic() -> None:
    y = np.repeat(np.arange(3), [5, 50, 200])
    idx = probe_set(y, max_per_class=20, seed=1)
    assert np.bincount(y[idx]).tolist() == [5, 20, 20]
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, probe_set(y, max_per_class=20, seed=1))


def test_round_trip(analysis: DanceAnalysis) -> None:
    d = json.loads(json.dumps(analysis.to_dict()))
    again = DanceAnalysis.from_dict(d)
    for name in DanceAnalysis._ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(analysis, name))
    assert again.window == analysis.window
