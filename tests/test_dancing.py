"""Label dancing: every count against hand-computed values on constructed sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import auditor
from auditor.dancing import (
    CheckpointSeries,
    DanceAnalysis,
    LabelDancingRecorder,
    TruncatedLogWarning,
    dance_analysis,
    predict_checkpoints,
    probe_set,
    read_log,
)
from auditor.errors import DataError, OptionError, ResultsError
from auditor.stats import spearman

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
    out = analysis.compare_pairs(pair_score=s, pair_confusion=np.array([[0, 5, 0], [1, 0, 0], [0, 0, 0]]), top_k=1)
    # dancing (M+Mᵀ): (0,1)=3, (0,2)=0, (1,2)=5: same order as S
    assert out.interference is not None and out.confusion is not None
    assert out.interference.spearman == pytest.approx(1.0)
    assert out.interference.top_k_overlap == 1.0
    assert out.confusion.top_k_overlap == 0.0  # top by P: (0,1); top by dancing: (1,2)
    with_it = analysis.with_agreement(s, None, top_k=1)
    assert with_it.agreement == analysis.compare_pairs(s, top_k=1)
    assert type(with_it).from_dict(with_it.to_dict()).agreement == with_it.agreement


def test_log_and_checkpoint_paths_give_identical_analyses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "dance.jsonl"
    with LabelDancingRecorder(log, LABELS, class_names=["a", "b", "c"]) as rec:
        for t, p in enumerate(PRED):
            logits = np.eye(3)[p] * 2.0  # one-hot logits: argmax is p
            rec.record(t, logits, epoch=t)
    from_log = dance_analysis(log)

    from .conftest import make_mlp, random_mlp_weights

    calls = iter(PRED)  # the checkpoints "predict" the log's records
    monkeypatch.setattr("auditor.inference.predict_logits", lambda model, x, **kw: np.eye(3)[next(calls)])
    for t in range(len(PRED)):
        make_mlp(tmp_path / f"epoch_{t}.onnx", random_mlp_weights(1, 4, 3, seed=t))
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


@pytest.mark.parametrize("case", ["three classes", "a class with no probe sample (NaN entries)"])
def test_round_trip(analysis: DanceAnalysis, case: str) -> None:
    if case != "three classes":
        analysis = dance_analysis((PRED4, LABELS4), n_classes=4)
    from auditor.serialization import to_jsonable

    d = json.loads(json.dumps(to_jsonable(analysis.to_dict()), allow_nan=False))  # strict JSON: NaN -> null
    again = DanceAnalysis.from_dict(d)
    for name in DanceAnalysis._ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(analysis, name), err_msg=name)
    assert (again.window, again.n_classes, again.threshold) == (analysis.window, analysis.n_classes,
                                                               analysis.threshold)


# A second hand-worked case: K = 4 where class 3 has no probe sample, 4 probes labelled 0, 0, 1, 2.
LABELS4 = np.array([0, 0, 1, 2])
PRED4 = np.array([
    [0, 1, 1, 2],  # t=0
    [1, 1, 1, 2],  # t=1: s0 0->1
    [0, 1, 2, 2],  # t=2: s0 1->0, s2 1->2
    [0, 0, 2, 2],  # t=3: s1 1->0
    [1, 0, 1, 2],  # t=4: s0 0->1, s2 2->1
])


def test_hand_worked_case_with_a_class_missing_from_the_probe() -> None:
    a = dance_analysis((PRED4, LABELS4), n_classes=4)
    assert a.n_classes == 4
    np.testing.assert_array_equal(a.flips, [3, 1, 2, 0])
    np.testing.assert_array_equal(a.pair_flips, [[0, 2, 0, 0], [2, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    assert a.dancing_pairs() == [(0, 1, 4), (1, 2, 2)]  # pairs that never flipped are left out
    # dance curve: class 0 flips 1 of 2 at every transition; class 1 at t=2 and t=4; class 2 never
    np.testing.assert_array_equal(a.dance_curve[:3], [[.5, .5, .5, .5], [0, 1, 0, 1], [0, 0, 0, 0]])
    assert np.isnan(a.dance_curve[3]).all()
    # T = 5: W = {2, 3, 4}; class 0: 3 flips / (2 samples * 3), class 1: 2 / 3
    assert a.window == (2, 4)
    np.testing.assert_array_equal(a.dance_rate[:3], [0.5, 2 / 3, 0.0])
    assert np.isnan(a.dance_rate[3])
    # T = 4: W = {2, 3}; class 1: 1 flip / (1 * 2) (W = {1, 2, 3} would give 1/3)
    even = dance_analysis((PRED4[:4], LABELS4), n_classes=4)
    assert even.window == (2, 3)
    np.testing.assert_array_equal(even.dance_rate[:3], [0.5, 0.5, 0.0])
    # T = 2 and T = 3: the window starts at transition 1
    assert dance_analysis((PRED4[:2], LABELS4)).window == (1, 1)
    assert dance_analysis((PRED4[:3], LABELS4)).window == (1, 2)
    # correct? s0: 1,0,1,1,0 (2 forgettings); s1: 0,0,0,1,1 (0, learned); s2: 1,1,0,0,1 (1); s3: always (0)
    np.testing.assert_array_equal(a.forgetting, [2, 0, 1, 0])
    np.testing.assert_array_equal(a.never_forgotten, [1, 0, 1, 0])
    np.testing.assert_array_equal(a.notes[0], [[.5, .5, 0, 0], [0, 1, 0, 0], [.5, .5, 0, 0], [1, 0, 0, 0],
                                               [.5, .5, 0, 0]])
    np.testing.assert_array_equal(a.notes[1, :, :3], [[0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(a.notes[2, :, 2], [1, 1, 1, 1, 1])
    assert np.isnan(a.notes[3]).all()
    np.testing.assert_array_equal(a.dominant, [[1, 1, 1, -1, 1], [-1, -1, 2, 2, -1], [-1] * 5, [-1] * 5])
    g = np.zeros((4, 4), int)
    g[0, 1], g[1, 2] = 4, 2
    np.testing.assert_array_equal(a.dominance, g)


def test_dominant_note_threshold_is_strict_and_ties_go_low() -> None:
    labels = np.zeros(100, int)
    pred = np.zeros((2, 100), int)
    pred[:, 0] = 2  # exactly 1 sample in 100: F = 0.01 does not exceed τ = 0.01
    pred[1, 1] = 1  # at t=1, classes 1 and 2 tie at 0.01
    np.testing.assert_array_equal(dance_analysis((pred, labels)).dominant[0], [-1, -1])
    np.testing.assert_array_equal(dance_analysis((pred, labels), threshold=0.009).dominant[0], [2, 1])


def test_agreement_spearman_and_top_k_by_hand() -> None:
    a = dance_analysis((PRED4, LABELS4), n_classes=4)
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): dancing M+Mᵀ = 4, 0, 0, 2, 0, 0; S is NaN at (0,3)
    s = np.full((4, 4), np.nan)
    for (i, j), v in {(0, 1): .9, (0, 2): .1, (1, 2): .5, (1, 3): .3, (2, 3): .1}.items():
        s[i, j] = s[j, i] = v
    # over the 5 defined pairs: dancing ranks 5, 2, 4, 2, 2; S ranks 5, 1.5, 4, 3, 1.5;
    # centred: (2,-1,1,-1,-1) . (2,-1.5,1,0,-1.5) = 8, norms² 8 and 9.5 -> 8 / sqrt(76)
    out = a.compare_pairs(pair_score=s, top_k=3).interference
    assert out is not None
    assert out.spearman == pytest.approx(8 / np.sqrt(76))
    assert out.n_pairs == 5
    # top 3 by dancing: (0,1), (1,2), then the first tie at 0: (0,2); by S: (0,1), (1,2), (1,3)
    assert out.top_k_overlap == pytest.approx(2 / 3)
    assert a.compare_pairs(pair_score=s, top_k=3).confusion is None
    # top-k ranks only the pairs S defines: with (0,1) undefined, the top dancing pair is (1,2), as by S
    s[0, 1] = s[1, 0] = np.nan
    top1 = a.compare_pairs(pair_score=s, top_k=1).interference
    assert top1 is not None and top1.top_k_overlap == 1.0
    with pytest.raises(DataError, match="shape"):
        a.compare_pairs(pair_confusion=np.zeros((3, 3)))


@pytest.mark.parametrize(("kwargs", "values", "error", "match"), [
    ({}, np.zeros((5, 1)), DataError, "single sigmoid"),
    ({"n_classes": 3}, np.zeros((5, 4)), DataError, "4 classes"),
    ({}, np.array([0.5, 1, 1, 1, 2]), DataError, "class ids"),
    ({}, np.array([0, -1, 1, 1, 2]), DataError, "outside"),
    ({"n_classes": 3}, np.array([0, 3, 1, 1, 2]), DataError, "outside"),
    ({}, np.zeros((5, 3, 2)), DataError, "shape"),
    ({}, np.zeros(4, int), DataError, "4 predictions for a probe set of 5"),
])
def test_recorder_rejects_what_it_cannot_record(tmp_path: Path, kwargs: dict, values: np.ndarray,
                                                error: type, match: str) -> None:
    with LabelDancingRecorder(tmp_path / "log.jsonl", LABELS, **kwargs) as rec, pytest.raises(error, match=match):
        rec.record(0, values)


def test_recorder_option_errors(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="every must be >= 1"):
        LabelDancingRecorder(tmp_path / "a.jsonl", LABELS, every=0)
    with pytest.raises(DataError, match="empty"):
        LabelDancingRecorder(tmp_path / "b.jsonl", [])
    rec = LabelDancingRecorder(tmp_path / "c.jsonl", LABELS, every=5)
    assert rec.due(10) and not rec.due(11)
    rec.close()
    with pytest.raises(OptionError, match="closed"):
        rec.record(0, PRED[0])


def test_recorder_takes_framework_like_values(tmp_path: Path) -> None:
    class Tensor:  # the torch protocol: detach() -> cpu() -> numpy()
        def __init__(self, a: np.ndarray) -> None:
            self.a = a

        def detach(self) -> Tensor:
            return self

        def cpu(self) -> Tensor:
            return self

        def numpy(self) -> np.ndarray:
            return self.a

    class ArrayLike:  # jax-like: only __array__
        def __init__(self, a: np.ndarray) -> None:
            self.a = a

        def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
            return self.a

    logits = np.array([[0.1, 0.9, 0.0], [2.0, 2.0, 1.0], [0, 0, 1], [5, 0, 0], [0, 1, 0]], np.float32)
    with LabelDancingRecorder(tmp_path / "log.jsonl", LABELS, ["a", "b", "c"], meta={"run": "x"}) as rec:
        assert rec.record(0, Tensor(logits)).tolist() == [1, 0, 2, 0, 1]  # the tie at sample 1 goes to class 0
        assert rec.record(1, ArrayLike(logits[..., None, None])).tolist() == [1, 0, 2, 0, 1]
    steps, preds, epochs, header = read_log(tmp_path / "log.jsonl")
    assert header["class_names"] == ["a", "b", "c"] and header["meta"] == {"run": "x"} and header["every"] == 1
    assert header["format"] == "auditor-label-dancing" and header["version"] == 1 and "created" in header
    assert epochs.tolist() == [-1, -1]


def test_appending_after_a_crash_drops_the_partial_record(tmp_path: Path) -> None:
    log = tmp_path / "dance.jsonl"
    with LabelDancingRecorder(log, LABELS, fsync=True) as rec:
        for t, p in enumerate(PRED[:3]):
            rec.record(t, p)
    log.write_bytes(log.read_bytes()[:-5])  # the run died while writing record 2
    with pytest.warns(TruncatedLogWarning):
        assert len(read_log(log)[0]) == 2
    with LabelDancingRecorder(log, LABELS, append=True) as rec:
        assert rec.n_records == 2
        rec.record(2, PRED[2])
        rec.record(3, PRED[3])
    steps, preds, _, _ = read_log(log)  # no warning: the log is whole again
    assert steps.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(preds, PRED[:4])
    with pytest.raises(DataError, match="other probe labels"):
        LabelDancingRecorder(log, LABELS[::-1], append=True)


@pytest.mark.parametrize(("text", "match"), [
    ("", "is empty"),
    ('{"format": "auditor-label-dancing", "version": 1, "labels": [0, 1], "n_cl', "not a label-dancing log"),
    ('{"format": "something-else"}\n', "not a label-dancing log"),
    ('{"format": "auditor-label-dancing", "version": 1, "n_classes": 2}\n', "corrupt header"),
    ('{"format": "auditor-label-dancing", "version": 1, "labels": [], "n_classes": 2}\n', "corrupt header"),
    ('{"format": "auditor-label-dancing", "version": 9, "labels": [0], "n_classes": 2}\n', "version 9"),
    ('{"format": "auditor-label-dancing", "version": 1, "labels": [0], "n_classes": 2}\n'
     '{"step": 0, "pred": [-1]}\n{"step": 1, "pred": [0]}\n', "line 2 is corrupt"),
    ('{"format": "auditor-label-dancing", "version": 1, "labels": [0], "n_classes": 2}\n'
     '{"pred": [1]}\n{"step": 1, "pred": [0]}\n', "line 2 is corrupt"),
])
def test_unreadable_logs_are_results_errors(tmp_path: Path, text: str, match: str) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(text)
    with pytest.raises(ResultsError, match=match):
        dance_analysis(log)


def test_a_single_record_is_not_enough(tmp_path: Path) -> None:
    log = tmp_path / "one.jsonl"
    with LabelDancingRecorder(log, LABELS) as rec:
        rec.record(0, PRED[0])
    with pytest.raises(ResultsError, match=r"the log '.*one.jsonl' holds 1 record; label dancing needs at least 2"):
        dance_analysis(log)
    with pytest.raises(OptionError, match="window"):
        dance_analysis((PRED, LABELS), window=(0, 2))
    with pytest.raises(DataError, match="integer class ids"):
        dance_analysis((PRED.astype(float), LABELS))


def test_results_are_read_only_and_leave_the_callers_arrays_alone() -> None:
    pred = PRED.copy()
    a = dance_analysis((pred, LABELS))
    assert pred.flags.writeable
    for name in DanceAnalysis._ARRAYS:
        assert not getattr(a, name).flags.writeable, name
    with pytest.raises(ValueError):
        a.pair_flips[0, 0] = 1


def test_checkpoint_series_round_trip_and_directory_input(tmp_path: Path) -> None:
    from .conftest import make_mlp, random_mlp_weights

    x = np.random.default_rng(1).standard_normal((9, 4)).astype(np.float32)
    y = np.arange(9) % 3
    for epoch in (2, 10, 1):
        make_mlp(tmp_path / f"ckpt_epoch{epoch}.onnx", random_mlp_weights(4, 5, 3, seed=epoch))
    series = predict_checkpoints(tmp_path, (x, y), progress=False)  # a directory: its *.onnx, natural order
    assert [Path(p).name for p in series.paths] == ["ckpt_epoch1.onnx", "ckpt_epoch2.onnx", "ckpt_epoch10.onnx"]
    assert not series.predictions.flags.writeable
    again = CheckpointSeries.from_dict(json.loads(json.dumps(series.to_dict())))
    assert again.paths == series.paths and again.n_classes == 3
    np.testing.assert_array_equal(again.predictions, series.predictions)
    np.testing.assert_array_equal(again.steps, [1, 2, 10])
    with pytest.raises(DataError, match="at least 2"):
        predict_checkpoints([tmp_path / "ckpt_epoch1.onnx"], (x, y))


def test_dance_command_reads_text_probe_data_with_the_data_options(tmp_path: Path) -> None:
    """Two text checkpoints (the bundled text example, and a copy with its classifier weights
    scaled) predicting a CSV of texts: dance.json's flips are those of the two models' own
    predictions, computed here with the tokenizer and ONNX Runtime directly."""
    import json

    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from typer.testing import CliRunner

    from auditor.cli import app
    from auditor.data import load_data

    text = Path(__file__).resolve().parents[1] / "examples" / "text"
    first = onnx.load(text / "text.onnx")
    second = onnx.load(text / "text.onnx")
    biggest = max(second.graph.initializer, key=lambda t: np.prod(t.dims) if len(t.dims) == 2 else 0)
    biggest.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(biggest), biggest.name))
    onnx.save(first, tmp_path / "epoch_1.onnx")
    onnx.save(second, tmp_path / "epoch_2.onnx")
    options = ["--text-column", "text", "--tokenizer", str(text / "tokenizer.json"), "--max-length", "64"]
    result = CliRunner().invoke(app, ["dance", "--checkpoints", str(tmp_path / "epoch_*.onnx"), "--data",
                                      str(text / "test.csv"), "--out", str(tmp_path / "d"), "--max-per-class", "1000",
                                      *options])
    assert result.exit_code == 0, result.output
    data = load_data(text / "test.csv", text_column="text", tokenizer=text / "tokenizer.json", max_length=64)
    preds = []
    for name in ("epoch_1.onnx", "epoch_2.onnx"):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        feeds = {i.name: np.asarray(data.features[i.name]) for i in session.get_inputs()}
        preds.append(session.run(None, feeds)[0].argmax(1))
    changed = int(np.sum(preds[0] != preds[1]))
    assert changed > 0
    written = json.loads((tmp_path / "d" / "dance.json").read_text())
    np.testing.assert_array_equal(written["labels"], data.y)
    np.testing.assert_array_equal(written["predictions"], preds)
    np.testing.assert_array_equal(written["flips"], (preds[0] != preds[1]).astype(int))
    assert written["class_names"] == list(data.class_names)
