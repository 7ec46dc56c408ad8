"""The cross-class test against a plain numpy evaluation of the perturbed model, and against
the gradients (the slope at α → 0 is the directional derivative: I1 is the limit of I)."""

from __future__ import annotations

import numpy as np
import pytest

import auditor
from auditor.cct import cross_class_test, default_alphas

from . import numpy_mlp as ref


@pytest.fixture
def setup(small_mlp: dict) -> dict:
    model = auditor.load_model(small_mlp["path"])
    data = auditor.Dataset(small_mlp["x"], small_mlp["y"])
    grads = auditor.class_gradients(model, data)
    dirs = auditor.ego_directions(model, gradients=grads)
    return {**small_mlp, "model": model, "data": data, "grads": grads, "dirs": dirs}


@pytest.mark.parametrize("strategy", ["inputs", "rebuild"])
def test_cct_equals_numpy_evaluation_of_perturbed_weights(setup: dict, strategy: str) -> None:
    alphas = [-0.2, -0.05, 0.0, 0.1, 0.2]
    r = cross_class_test(setup["model"], setup["data"], setup["dirs"], alphas, strategy=strategy)
    assert r.strategy == strategy
    k = setup["k"]
    for i, c in enumerate(r.ego_classes):
        d = setup["dirs"][c]
        for a, alpha in enumerate(r.steps(i)):
            w = ref.moved(setup["weights"], d, alpha)
            np.testing.assert_allclose(r.loss[i, :, a], ref.class_losses(w, setup["x"], setup["y"], k), rtol=2e-5,
                                       atol=1e-6)
            np.testing.assert_allclose(r.accuracy[i, :, a], ref.class_accuracies(w, setup["x"], setup["y"], k))
            conf = ref.confusion(w, setup["x"], setup["y"], k)
            np.testing.assert_allclose(r.flow[i, :, a], conf / conf.sum(axis=1, keepdims=True), atol=1e-7)
    # the perturbation really happened: losses move with α
    assert np.ptp(r.loss[0, r.ego_classes[0]]) > 1e-2


def test_alpha_zero_column_is_the_unperturbed_loss(setup: dict) -> None:
    r = cross_class_test(setup["model"], setup["data"], setup["dirs"])
    base = ref.class_losses(setup["weights"], setup["x"], setup["y"], setup["k"])
    for i in range(len(r.ego_classes)):
        np.testing.assert_allclose(r.loss[i, :, r.zero_index], base, rtol=1e-5)
    np.testing.assert_allclose(r.base_loss(), setup["grads"].losses, rtol=1e-5)
    assert r.alphas[r.zero_index] == 0.0 and len(r.alphas) == 21
    np.testing.assert_allclose(r.alphas, default_alphas() * 0.2)  # filter: α_max = 0.2


def test_slope_at_zero_is_the_directional_derivative(setup: dict) -> None:
    """Central differences of L_c'(θ*+α d_c) at α = ±1e-3 equal ∇L_c'·d_c from the gradients."""
    h = 1e-3
    r = cross_class_test(setup["model"], setup["data"], setup["dirs"], [-h, 0.0, h])
    g = setup["grads"]
    for i, c in enumerate(r.ego_classes):
        d = setup["dirs"].vector(c).astype(np.float64)
        slope = (r.loss[i, :, 2] - r.loss[i, :, 0]) / (2 * h)
        expected = np.array([g.vector(c2).astype(np.float64) @ d for c2 in range(setup["k"])])
        np.testing.assert_allclose(slope, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
        # so the finite-step interference tends to I1
        i1 = expected / -expected[c]
        fin = (r.loss[i, :, 2] - r.loss[i, :, 1]) / (r.loss[i, c, 1] - r.loss[i, c, 2])
        np.testing.assert_allclose(fin, i1, rtol=1e-2, atol=1e-2)


def test_gradients_match_handwritten_backprop(setup: dict) -> None:
    expected = ref.class_gradients(setup["weights"], setup["x"], setup["y"], setup["k"])
    for c, tensors in expected.items():
        for name, value in tensors.items():
            np.testing.assert_allclose(setup["grads"][c][name], value, rtol=1e-4, atol=1e-6 * np.abs(value).max())


def test_ego_curve_falls_for_small_positive_alpha(setup: dict) -> None:
    r = cross_class_test(setup["model"], setup["data"], setup["dirs"])
    for i in range(len(r.ego_classes)):
        curve = r.ego_curve(i)
        assert curve[r.zero_index + 1] < curve[r.zero_index]


def test_none_normalisation_scales_the_grid_per_class(setup: dict) -> None:
    dirs = auditor.ego_directions(setup["model"], gradients=setup["grads"], normalization="none")
    r = cross_class_test(setup["model"], setup["data"], dirs, ego_classes=[0, 2])
    theta = np.sqrt(sum(np.sum(np.square(w)) + np.sum(np.square(b)) for w, b in setup["weights"]))
    for i, c in enumerate(r.ego_classes):
        gnorm = np.linalg.norm(setup["grads"].vector(c))
        assert r.steps(i).max() == pytest.approx(0.2 * theta / gnorm, rel=1e-5)
        # θ* + α d with d = -g is one SGD step of rate α on class c alone
        w = ref.moved(setup["weights"], {k: -v for k, v in setup["grads"][c].items()}, r.steps(i)[-1])
        np.testing.assert_allclose(r.loss[i, :, -1], ref.class_losses(w, setup["x"], setup["y"], setup["k"]),
                                   rtol=2e-5)


def test_many_classes_keep_top_destinations(tmp_path) -> None:
    from .conftest import make_mlp, random_mlp_weights

    k = 70
    weights = random_mlp_weights(5, 16, k, seed=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3 * k, 5)).astype(np.float32)
    y = np.repeat(np.arange(k), 3)
    model = auditor.load_model(make_mlp(tmp_path / "wide.onnx", weights))
    data = auditor.Dataset(x, y)
    dirs = auditor.ego_directions(model, data, classes=[0, 1])
    r = cross_class_test(model, data, dirs, [-0.1, 0.0, 0.1])
    assert r.flow is None and r.flow_top_share.shape == (2, k, 3, 5)
    conf = ref.confusion(ref.moved(weights, dirs[1], 0.1), x, y, k)
    share = conf / conf.sum(axis=1, keepdims=True)
    expected_top = -np.sort(-share, axis=1)[:, :5]
    np.testing.assert_allclose(r.flow_top_share[1, :, 2], expected_top, atol=1e-7)
    picked = np.take_along_axis(share, r.flow_top_classes[1, :, 2].astype(int), axis=1)
    np.testing.assert_allclose(picked, expected_top, atol=1e-7)
