"""Flatness and 2-D interference models against numpy evaluations and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import auditor
from auditor.cct import CrossClassTestResult
from auditor.gradients import EgoDirections
from auditor.landscape import flatness, interference_model

from . import numpy_mlp as ref


@pytest.fixture
def setup(small_mlp: dict) -> dict:
    model = auditor.load_model(small_mlp["path"])
    data = auditor.Dataset(small_mlp["x"], small_mlp["y"])
    grads = auditor.class_gradients(model, data)
    return {**small_mlp, "model": model, "data": data, "grads": grads,
            "dirs": auditor.ego_directions(model, gradients=grads)}


def _unflatten(vec: np.ndarray, grads) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    out, s = {}, 0
    for n, shape in zip(grads.names, grads.shapes):
        size = int(np.prod(shape))
        out[n] = vec[s:s + size].reshape(shape)
        s += size
    return out


def test_orthonormal_model_matches_numpy(setup: dict) -> None:
    a, b = 0, 2
    m = interference_model(setup["model"], setup["data"], a, b, directions=setup["dirs"], gradients=setup["grads"],
                           grid=5)
    k = setup["k"]
    base = ref.class_losses(setup["weights"], setup["x"], setup["y"], k)
    assert m.s[2] == 0 and m.t[2] == 0
    assert m.loss_a[2, 2] == pytest.approx(base[a], rel=1e-5) and m.loss_b[2, 2] == pytest.approx(base[b], rel=1e-5)
    da, db = setup["dirs"].vector(a).astype(float), setup["dirs"].vector(b).astype(float)
    u = da / np.linalg.norm(da)
    v = db - (u @ db) * u
    v /= np.linalg.norm(v)
    assert m.radius == pytest.approx(0.2 * max(np.linalg.norm(da), np.linalg.norm(db)), rel=1e-6)
    for i, j in [(0, 0), (4, 1), (3, 4)]:
        w = ref.moved(setup["weights"], _unflatten(m.s[i] * u + m.t[j] * v, setup["grads"]), 1.0)
        losses = ref.class_losses(w, setup["x"], setup["y"], k)
        assert m.loss_a[i, j] == pytest.approx(losses[a], rel=2e-5)
        assert m.loss_b[i, j] == pytest.approx(losses[b], rel=2e-5)
        pi = np.bincount(setup["y"], minlength=k) / len(setup["y"])
        assert m.total[i, j] == pytest.approx(float(pi @ losses), rel=2e-5)  # 48 samples: all in the subsample
        acc = ref.class_accuracies(w, setup["x"], setup["y"], k)
        assert m.accuracy_a[i, j] == acc[a]
    ga, gb = setup["grads"].vector(a).astype(float), setup["grads"].vector(b).astype(float)
    angle = np.degrees(np.arccos(ga @ gb / np.linalg.norm(ga) / np.linalg.norm(gb)))
    assert m.conflict_angle == pytest.approx(angle, rel=1e-6)
    ia, ib = np.unravel_index(np.argmin(m.loss_a), m.loss_a.shape), np.unravel_index(np.argmin(m.loss_b), m.loss_b.shape)
    assert m.minimum_a == tuple(ia) and m.minimum_b == tuple(ib)
    assert m.minimum_separation == pytest.approx(np.hypot(m.s[ia[0]] - m.s[ib[0]], m.t[ia[1]] - m.t[ib[1]]) / m.radius)
    assert m.resolution == pytest.approx(0.5)


def test_gradients_basis_reproduces_the_paper_axes(setup: dict) -> None:
    a, b = 1, 3
    m = interference_model(setup["model"], setup["data"], a, b, gradients=setup["grads"], basis="gradients", grid=9,
                           learning_rate=0.05)
    np.testing.assert_allclose(m.s, np.linspace(-0.5, 0.5, 9))
    ga, gb = setup["grads"][a], setup["grads"][b]
    for i, j in [(0, 8), (6, 2)]:
        step = {n: -m.s[i] * ga[n] - m.t[j] * gb[n] for n in ga}
        losses = ref.class_losses(ref.moved(setup["weights"], step, 1.0), setup["x"], setup["y"], setup["k"])
        assert m.loss_a[i, j] == pytest.approx(losses[a], rel=2e-5)
        assert m.loss_b[i, j] == pytest.approx(losses[b], rel=2e-5)


def test_parallel_directions_give_a_one_dimensional_model(setup: dict) -> None:
    d = setup["dirs"]
    flat = np.stack([d.vector(0), 2 * d.vector(0)])
    parallel = EgoDirections(classes=(0, 1), names=d.names, shapes=d.shapes, flat=flat, normalization="filter",
                             include_1d=False, alpha_max=np.array([0.2, 0.2]))
    m = interference_model(setup["model"], setup["data"], 0, 1, directions=parallel, gradients=setup["grads"], grid=5)
    assert m.one_dimensional and m.loss_a.shape == (5, 1) and "parallel" in m.note


def test_flatness_on_a_known_parabola() -> None:
    alphas = np.linspace(-0.2, 0.2, 21)
    kappa, beta = 3.0, -0.7
    loss = np.zeros((1, 2, 21))
    loss[0, 0] = 1.0 + beta * alphas + 0.5 * kappa * alphas**2 + 2.0 * alphas**4
    loss[0, 1] = 2.0
    cct = CrossClassTestResult(alphas=alphas, step_scale=np.ones(1), ego_classes=(0,), loss=loss,
                               accuracy=np.zeros_like(loss), flow=None, flow_top_classes=None, flow_top_share=None,
                               counts=np.ones(2, dtype=np.int64), zero_index=10, normalization="filter")
    f = flatness(cct)
    h = 0.02
    assert f.curvature[0] == pytest.approx(kappa + 2.0 * 24 * h**2 / 12, rel=1e-6)  # central difference of α^4 term
    # symmetric part only: the slope β does not count; ρ = 0.1
    assert f.sharpness[0] == pytest.approx(0.5 * kappa * 0.1**2 + 2.0 * 0.1**4, rel=1e-9)
    assert f.rho[0] == pytest.approx(0.1)
    assert np.isnan(f.curvature[1]) and np.isnan(f.sharpness[1])
