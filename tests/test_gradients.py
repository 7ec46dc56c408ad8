"""Class gradients against PyTorch autograd fixtures and float64 finite differences; ego
directions against their formulas (docs/concepts.md, "Class ego direction")."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import auditor
from auditor.gradients import ClassGradients, ego_directions, normalize_direction

from .conftest import FIXTURES, ZOO, zoo_entry


@pytest.fixture
def computed(zoo: dict) -> dict:
    model = auditor.load_model(zoo["path"])
    grads = auditor.class_gradients(model, auditor.Dataset(zoo["x"], zoo["y"]), batch_size=16)
    return {**zoo, "model": model, "grads": grads}


@pytest.mark.parametrize("name", [z["name"] for z in ZOO if z["reference"] == "torch"])
def test_gradients_match_pytorch_autograd(name: str) -> None:
    entry = zoo_entry(name)
    model = auditor.load_model(entry["path"])
    computed = {**entry, "model": model,
                "grads": auditor.class_gradients(model, auditor.Dataset(entry["x"], entry["y"]), batch_size=16)}
    with np.load(FIXTURES / f"{computed['name']}.grads.npz") as ref:
        theta = set(computed["model"].parameter_names)
        keys = [k for k in ref.files if not k.startswith("loss/") and k.split("/", 1)[1] in theta]
        # every stored tensor is in θ except single-element ones (scalars are not parameters)
        skipped = {k.split("/", 1)[1] for k in ref.files if not k.startswith("loss/")} - theta
        assert all(ref[f"0/{n}"].size < 2 for n in skipped), skipped
        assert keys, "no autograd references stored"
        for key in keys:
            c, name = key.split("/", 1)
            expected = ref[key]
            got = computed["grads"][int(c)][name]
            err = np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12)
            assert err <= 1e-4, f"{key}: relative error {err:.2e}"
        for key in (k for k in ref.files if k.startswith("loss/")):
            assert computed["grads"].losses[int(key.split("/")[1])] == pytest.approx(float(ref[key]), rel=1e-5)


def test_gradients_match_finite_differences(computed: dict) -> None:
    from . import reference

    proto = onnx.load(computed["path"])
    model, grads = computed["model"], computed["grads"]
    classes = list(grads.classes)[:2]
    for c in classes:
        for p in model.parameters:
            got = grads[c][p.name].reshape(-1)
            idx = reference_indices(got)
            fd = reference.finite_difference_gradient(proto, computed["x"], computed["y"], c, p.name, computed["logits"],
                                                      computed["logits_kind"], indices=idx)
            scale = max(np.abs(got).max(), 1e-8)
            err = np.abs(got[idx] - fd).max() / scale
            assert err <= 1e-4, f"class {c}, {p.name}: relative error {err:.2e}"


def reference_indices(g: np.ndarray, n: int = 4) -> np.ndarray:
    """The largest-|g| entry plus a few spread ones (deterministic)."""
    return np.unique(np.concatenate([[int(np.argmax(np.abs(g)))], np.linspace(0, g.size - 1, n).astype(int)]))


def test_losses_match_the_reference(computed: dict) -> None:
    from . import reference

    logits = reference.reference_logits(onnx.load(computed["path"]), computed["x"], computed["logits"],
                                        computed["logits_kind"])
    expected = reference.class_losses(logits, computed["y"], computed["model"].n_classes)
    np.testing.assert_allclose(computed["grads"].losses, expected, rtol=1e-5, atol=1e-7)


def _slice_norms(a: np.ndarray, axis: int) -> np.ndarray:
    return np.linalg.norm(np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).astype(np.float64), axis=1)


@pytest.mark.parametrize("include_1d", [False, True])
def test_filter_directions_have_the_weight_slice_norms(computed: dict, include_1d: bool) -> None:
    model, grads = computed["model"], computed["grads"]
    d = ego_directions(model, gradients=grads, normalization="filter", include_1d=include_1d)
    w = model.weights()
    for c in d.classes:
        dc, gc = d[c], grads[c]
        assert float(d.vector(c).astype(np.float64) @ grads.vector(c).astype(np.float64)) < 0  # a descent direction
        for p in model.parameters:
            if p.one_dimensional:
                if include_1d:
                    np.testing.assert_allclose(np.abs(dc[p.name]), np.where(gc[p.name] != 0, np.abs(w[p.name]), 0),
                                               rtol=1e-6)
                    assert np.all(np.sign(dc[p.name]) * np.sign(gc[p.name]) <= 0)
                else:
                    assert not np.any(dc[p.name])
                continue
            nd, nt = _slice_norms(dc[p.name], p.output_axis), _slice_norms(w[p.name], p.output_axis)
            ng = _slice_norms(gc[p.name], p.output_axis)
            np.testing.assert_allclose(nd, np.where(ng > 0, nt, 0.0), rtol=1e-5, atol=1e-7)
            # each slice points along -g
            gs = np.moveaxis(gc[p.name], p.output_axis, 0).reshape(len(ng), -1)
            ds = np.moveaxis(dc[p.name], p.output_axis, 0).reshape(len(ng), -1)
            cos = np.sum(gs * ds, axis=1) / np.maximum(ng * nd, 1e-30)
            assert np.all(cos[ng > 0] < -0.9999)


def test_layer_global_and_none_normalisations(computed: dict) -> None:
    model, grads = computed["model"], computed["grads"]
    w = model.weights()
    c = grads.classes[0]
    layer = ego_directions(model, gradients=grads, normalization="layer")
    for p in model.parameters:
        if not p.one_dimensional and np.any(grads[c][p.name]):
            assert np.linalg.norm(layer[c][p.name]) == pytest.approx(np.linalg.norm(w[p.name]), rel=1e-5)
    unit = ego_directions(model, gradients=grads, normalization="global")
    assert np.linalg.norm(unit.vector(c).astype(np.float64)) == pytest.approx(1.0, rel=1e-5)
    theta = np.sqrt(sum(np.sum(np.square(v, dtype=np.float64)) for v in w.values()))
    assert unit.alpha_max[0] == pytest.approx(0.2 * theta, rel=1e-6)
    none = ego_directions(model, gradients=grads, normalization="none")
    np.testing.assert_array_equal(none.vector(c), -grads.vector(c))
    assert none.alpha_max[0] == pytest.approx(0.2 * theta / np.linalg.norm(grads.vector(c).astype(np.float64)),
                                              rel=1e-5)


def test_zero_gradient_class_has_no_direction() -> None:
    from auditor.model import Parameter

    p = Parameter("w", (2, 3), "initializer", "fc", "Gemm", 0, False)
    model = type("M", (), {"parameters": (p,), "weights": staticmethod(lambda: {"w": np.ones((2, 3), np.float32)})})
    flat = np.array([[1.0, 0, 0, 0, 2.0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    grads = ClassGradients(classes=(0, 1), names=("w",), shapes=((2, 3),), flat=flat, losses=np.ones(2),
                           counts=np.ones(2, dtype=np.int64))
    d = ego_directions(model, gradients=grads)
    assert d.classes == (0,) and "zero" in d.skipped[1]
    expected = normalize_direction({"w": flat[0].reshape(2, 3)}, {"w": np.ones((2, 3))}, [p])["w"]
    np.testing.assert_allclose(d[0]["w"], expected)
    np.testing.assert_allclose(expected, [[-np.sqrt(3), 0, 0], [0, -np.sqrt(3), 0]])


def test_gradient_sketches_estimate_the_conflict_screen(tmp_path) -> None:
    """Count sketches (K x 2048) estimate gradient cosines; their norms are exact."""
    from auditor.gradients import gradient_sketches

    from .conftest import make_mlp, random_mlp_weights

    k = 12
    rng = np.random.default_rng(4)
    model = auditor.load_model(make_mlp(tmp_path / "m.onnx", random_mlp_weights(40, 200, k, seed=4)))
    data = auditor.Dataset(rng.standard_normal((6 * k, 40)).astype(np.float32), np.arange(6 * k) % k)
    assert model.n_parameters > 10_000
    classes, sketches, norms = gradient_sketches(model, data, dim=2048)
    exact = auditor.class_gradients(model, data)
    assert classes == exact.classes
    np.testing.assert_allclose(norms, exact.norms(), rtol=1e-6)
    g = exact.flat.astype(np.float64)
    cos_exact = g @ g.T / np.outer(exact.norms(), exact.norms())
    s = sketches / np.linalg.norm(sketches, axis=1, keepdims=True)
    assert np.max(np.abs(s @ s.T - cos_exact)) < 0.1
