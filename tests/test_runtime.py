"""Runtime: providers, perturbation strategies against an independent float64 evaluation.

The trap to avoid: a perturbation path that silently runs the original weights. Every
strategy is checked to (a) move the losses and (b) equal an independent evaluation, on a
model with Conv and BatchNormalization weights.
"""

from __future__ import annotations

import numpy as np
import pytest

import auditor
from auditor.errors import OptionError
from auditor.inference import predict_logits
from auditor.runtime import Evaluator, _cuda_works, resolve_provider

from .conftest import ZOO, zoo_entry

CONV_MODELS = [z["name"] for z in ZOO if z["name"] in ("cnn_bn", "resblock", "depthwise", "nhwc_folded_bn")]


def _reference():  # type: ignore[no-untyped-def]
    from . import reference

    return reference


@pytest.mark.parametrize("name", CONV_MODELS)
@pytest.mark.parametrize("strategy", ["inputs", "rebuild"])
def test_perturbed_losses_equal_an_independent_evaluation(name: str, strategy: str) -> None:
    ref = _reference()
    z = zoo_entry(name)
    model = auditor.load_model(z["path"])
    x, y = z["x"], z["y"]
    rng = np.random.default_rng(0)
    direction = {p.name: rng.standard_normal(p.shape).astype(np.float32) * 0.05 for p in model.parameters}
    ev = Evaluator(model, auditor.Dataset(x, y), strategy=strategy, batch_size=16)
    ev.set_directions([direction])
    base = ev.evaluate([0.0]).loss
    proto = __import__("onnx").load(z["path"])
    weights = model.weights()
    for alpha in (0.5, -1.0):
        stats = ev.evaluate([alpha])
        overrides = {n: weights[n] + alpha * direction[n] for n in direction}
        logits = ref.reference_logits(proto, x, z["logits"], z["logits_kind"], overrides=overrides)
        expected = ref.class_losses(logits, y, model.n_classes)
        np.testing.assert_allclose(stats.loss, expected, rtol=1e-4, atol=1e-5)
        assert np.max(np.abs(stats.loss - base)) > 1e-3  # the weights really moved


def test_two_directions_add(small_mlp: dict) -> None:
    from . import numpy_mlp as nref

    model = auditor.load_model(small_mlp["path"])
    rng = np.random.default_rng(2)
    d0 = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in model.parameters}
    d1 = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in model.parameters}
    for strategy in ("inputs", "rebuild"):
        ev = Evaluator(model, auditor.Dataset(small_mlp["x"], small_mlp["y"]), n_directions=2, strategy=strategy)
        ev.set_directions([d0, d1])
        got = ev.evaluate([0.1, -0.2]).loss
        step = {n: 0.1 * d0[n] - 0.2 * d1[n] for n in d0}
        expected = nref.class_losses(nref.moved(small_mlp["weights"], step, 1.0), small_mlp["x"], small_mlp["y"], 4)
        np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_auto_strategy_picks_the_faster_estimate_and_evaluates_the_same(small_mlp: dict) -> None:
    from . import numpy_mlp as nref

    model = auditor.load_model(small_mlp["path"])
    data = auditor.Dataset(small_mlp["x"], small_mlp["y"])
    rng = np.random.default_rng(3)
    direction = {p.name: rng.standard_normal(p.shape).astype(np.float32) * 0.1 for p in model.parameters}
    ev = Evaluator(model, data, strategy="auto")
    ev.set_directions([direction])
    got = ev.evaluate([0.7]).loss
    estimates = {s: ev.timings[f"estimated_step_{s}_s"] for s in ("inputs", "rebuild")}
    assert all(v > 0 for v in estimates.values()) and ev.timings["session_creation_s"] > 0
    if ev.timings["inputs_stopped"]:  # the inputs run was cut short: slower than a rebuilt step
        assert ev.strategy == "rebuild" and estimates["inputs"] == pytest.approx(estimates["rebuild"])
    else:
        assert ev.strategy == min(estimates, key=lambda s: estimates[s])
    costs = ev.costs
    assert costs is not None and costs.creation_s == ev.timings["session_creation_s"]
    assert costs.estimate("rebuild", len(data)) == pytest.approx(estimates["rebuild"])
    assert ev.n_evaluations == 1 and ev.samples_evaluated == len(data)  # the probe runs are not counted
    expected = nref.class_losses(nref.moved(small_mlp["weights"], direction, 0.7), small_mlp["x"], small_mlp["y"], 4)
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_probe_keeps_rebuild_when_the_inputs_run_is_stopped(small_mlp: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    model = auditor.load_model(small_mlp["path"])
    ev = Evaluator(model, auditor.Dataset(small_mlp["x"], small_mlp["y"]), strategy="auto")
    monkeypatch.setattr(Evaluator, "_timed_run", lambda *args: None)  # as if past the deadline
    ev.evaluate([0.0])
    assert ev.strategy == "rebuild" and ev.timings["inputs_stopped"] == 1.0
    assert ev.costs is not None and ev.costs.inputs_stopped
    # the stopped run's per-sample cost is a lower bound: no subset, however small, is sent to inputs
    assert ev.restricted(np.arange(1)).strategy == ev.restricted(np.arange(3)).strategy == "rebuild"


def test_a_stopped_inputs_run_never_wins_on_its_lower_bound() -> None:
    from auditor.strategy import StrategyCosts

    costs = StrategyCosts(creation_s=0.2, inputs_per_sample_s=0.001, rebuild_per_sample_s=0.0005,
                          inputs_stopped=True, rebuild_overhead_s=0.2)
    assert costs.estimate("inputs", 10) < costs.estimate("rebuild", 10)
    assert [costs.faster(n) for n in (1, 10, 1000)] == ["rebuild"] * 3
    timed = StrategyCosts(creation_s=0.2, inputs_per_sample_s=0.001, rebuild_per_sample_s=0.0005,
                          rebuild_overhead_s=0.2)
    assert [timed.faster(n) for n in (1, 10, 1000)] == ["inputs", "inputs", "rebuild"]


@pytest.mark.parametrize("inputs_batch_s", [0.0, 10.0])
def test_probe_skips_timing_a_rebuilt_run_only_when_a_whole_inputs_step_beats_a_session_build(
        small_mlp: dict, monkeypatch: pytest.MonkeyPatch, inputs_batch_s: float) -> None:
    """A rebuilt step costs at least its session build: an inputs step cheaper than that wins at any size."""
    model = auditor.load_model(small_mlp["path"])
    data = auditor.Dataset(small_mlp["x"], small_mlp["y"])
    runs: list[int] = []

    def fake_timed_run(self: Evaluator, session: object, binding: object, limit: int, deadline: float) -> float:
        runs.append(limit)
        return inputs_batch_s * limit

    monkeypatch.setattr(Evaluator, "_timed_run", fake_timed_run)
    monkeypatch.setattr(Evaluator, "_warm_batch_s", lambda *args: inputs_batch_s)
    ev = Evaluator(model, data, strategy="auto", batch_size=16)
    ev.evaluate([0.0])
    costs = ev.costs
    assert costs is not None
    if inputs_batch_s == 0.0:  # faster than any session build: no rebuilt run, inputs everywhere
        assert not costs.rebuild_timed and ev.timings["rebuild_timed"] == 0.0 and ev.strategy == "inputs"
        assert runs == []  # no run of the first batches timed against a rebuilt one
        for n in (1, 7, len(data)):
            assert costs.faster(n) == "inputs"
            assert costs.estimate("rebuild", n) >= costs.creation_s > 0
    else:  # 10 s a batch: slower than a build, so both strategies are timed on the first batches
        assert costs.rebuild_timed and ev.strategy == "rebuild"
        assert runs == [min(len(ev.spans), 3)] * 2  # stopped, then timed again warm
    from . import numpy_mlp as nref

    expected = nref.class_losses(small_mlp["weights"], small_mlp["x"], small_mlp["y"], 4)
    np.testing.assert_allclose(ev.evaluate([0.0]).loss, expected, rtol=2e-5)


def test_warm_batch_is_timed_only_when_a_cold_one_leaves_an_inputs_step_under_twice_the_build(
        small_mlp: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    model = auditor.load_model(small_mlp["path"])
    ev = Evaluator(model, auditor.Dataset(small_mlp["x"], small_mlp["y"]), strategy="inputs", batch_size=16)
    session, binding = ev._inputs_binding()
    ev._coefficients(binding, [0.0])
    warm = ev._warm_batch_s(session, binding, 60.0)
    assert warm is not None and 0 < warm < 60.0
    n = len(ev.spans)
    monkeypatch.setattr(Evaluator, "_timed_run", lambda *args: 1.0 / n)  # a cold step of 1 s: 2 x 0.5
    assert ev._warm_batch_s(session, binding, 0.5) is None
    assert ev._warm_batch_s(session, binding, 0.51) is not None
    monkeypatch.setattr(Evaluator, "_timed_run", lambda *args: None)  # stopped at its deadline
    assert ev._warm_batch_s(session, binding, 60.0) is None


def test_timed_run_stops_at_its_deadline() -> None:
    z = zoo_entry("resblock")
    model = auditor.load_model(z["path"])
    x, y = np.repeat(z["x"], 40, axis=0), np.repeat(z["y"], 40)
    ev = Evaluator(model, auditor.Dataset(x, y), strategy="inputs", batch_size=8)
    session, binding = ev._inputs_binding()
    ev._coefficients(binding, [0.0])
    full = ev._timed_run(session, binding, len(ev.spans), 60.0)
    assert full is not None and full > 0.02  # enough batches for the deadline below to land mid-run
    assert ev._timed_run(session, binding, len(ev.spans), 0.002) is None
    assert ev._timed_run(session, binding, len(ev.spans), 60.0) is not None  # the session still runs


@pytest.mark.parametrize("strategy", ["inputs", "rebuild", "auto"])
def test_restricted_evaluator_equals_a_fresh_one_on_the_subset(small_mlp: dict, strategy: str) -> None:
    model = auditor.load_model(small_mlp["path"])
    data = auditor.Dataset(small_mlp["x"], small_mlp["y"])
    rng = np.random.default_rng(4)
    d0, d1 = ({p.name: rng.standard_normal(p.shape).astype(np.float32) * 0.1 for p in model.parameters}
              for _ in range(2))
    parent = Evaluator(model, data, strategy=strategy)
    parent.set_directions([d0])
    parent.evaluate([0.3])
    idx = np.flatnonzero(small_mlp["y"] % 2 == 0)
    child = parent.restricted(idx, n_directions=2)
    assert child.strategy in ("inputs", "rebuild") if strategy == "auto" else child.strategy == strategy
    child.set_directions([d0, d1])
    fresh = Evaluator(model, data.subset(idx), n_directions=2, strategy="rebuild")
    fresh.set_directions([d0, d1])
    np.testing.assert_allclose(child.evaluate([0.5, -0.4]).loss, fresh.evaluate([0.5, -0.4]).loss, rtol=1e-5)
    assert child.n_evaluations == 1 and child.samples_evaluated == len(idx) and parent.n_evaluations == 1
    again = parent.restricted(idx, n_directions=2)
    assert again._sessions is child._sessions  # one set of sessions per model and device


def test_provider_resolution() -> None:
    assert resolve_provider("cpu") == "cpu"
    assert resolve_provider("auto") == ("cuda" if _cuda_works() else "cpu")
    with pytest.raises(OptionError, match="unknown provider"):
        resolve_provider("tpu")


def test_fixed_batch_model_runs_one_sample_at_a_time() -> None:
    ref = _reference()
    z = zoo_entry("old_export")
    model = auditor.load_model(z["path"])
    assert model.fixed_batch == 1
    got = predict_logits(model, z["x"])
    expected = ref.reference_logits(__import__("onnx").load(z["path"]), z["x"], z["logits"], z["logits_kind"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_works(), reason="no working CUDA provider on this host (CPU-only machine)")
def test_cuda_matches_cpu() -> None:
    z = zoo_entry("resblock")
    model = auditor.load_model(z["path"])
    data = auditor.Dataset(z["x"], z["y"])
    dirs = auditor.ego_directions(model, data, provider="cpu")
    cpu = auditor.cross_class_test(model, data, dirs, [-0.1, 0.0, 0.1], provider="cpu")
    gpu = auditor.cross_class_test(model, data, dirs, [-0.1, 0.0, 0.1], provider="cuda", strategy="inputs")
    assert gpu.provider == "cuda"
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-3, atol=1e-4)
    g_gpu = auditor.class_gradients(model, data, provider="cuda")
    g_cpu = auditor.class_gradients(model, data, provider="cpu")
    np.testing.assert_allclose(g_gpu.flat, g_cpu.flat, rtol=1e-3, atol=1e-5 * np.abs(g_cpu.flat).max())


@pytest.mark.parametrize("name", ["cnn_bn", "sigmoid_binary", "softmax_head", "sklearn_mlp"])
@pytest.mark.parametrize("strategy", ["inputs", "rebuild"])
def test_soft_confusion_equals_summed_reference_probabilities(name: str, strategy: str) -> None:
    """Q's class sums from the evaluation graph's extra output, against float64 softmax of reference logits."""
    ref = _reference()
    z = zoo_entry(name)
    model = auditor.load_model(z["path"])
    x, y = z["x"], z["y"]
    k = model.n_classes
    rng = np.random.default_rng(1)
    direction = {p.name: rng.standard_normal(p.shape).astype(np.float32) * 0.05 for p in model.parameters}
    ev = Evaluator(model, auditor.Dataset(x, y), strategy=strategy, batch_size=7)  # a ragged last batch
    ev.set_directions([direction])
    assert ev.evaluate([0.3]).soft_confusion is None  # only when asked for
    stats = ev.evaluate([0.3], soft=True)
    weights = model.weights()
    logits = ref.reference_logits(__import__("onnx").load(z["path"]), x, z["logits"], z["logits_kind"],
                                  overrides={n: weights[n] + 0.3 * direction[n] for n in direction})
    expected = np.zeros((k, k))
    for i in range(len(y)):
        p = np.exp(logits[i] - logits[i].max())
        expected[y[i]] += p / p.sum()
    assert stats.soft_confusion is not None
    np.testing.assert_allclose(stats.soft_confusion, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.soft_confusion.sum(axis=1), np.bincount(y, minlength=k), rtol=1e-5)
