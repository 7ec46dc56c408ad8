"""Flatness and 2-D interference models against numpy evaluations and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import auditor
from auditor.cct import CrossClassTestResult
from auditor.errors import OptionError
from auditor.gradients import EgoDirections
from auditor.landscape import flatness, interference_model, lattice_sizes, plane_evaluations, refine_points

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


def test_lattice_sizes_keep_the_ends_and_theta_star() -> None:
    assert lattice_sizes(25) == [3, 5, 7, 9, 13, 25]
    assert lattice_sizes(9) == [3, 5, 9]
    # a 7-point lattice over 25 points is 4 cells apart: steps of 2 and 1; 5 points: 6 -> 3, 2, 1
    assert refine_points(25, 7) == 8 * 2 and refine_points(25, 5) == 8 * 3 and refine_points(25, 25) == 0
    assert refine_points(25, 7, one_dimensional=True) == 2 * 2
    assert plane_evaluations(25, 7) == (49, 32) and plane_evaluations(5, 3) == (9, 16)  # 16: the rest of 25


def test_lattice_and_refinement_evaluate_the_same_function(setup: dict) -> None:
    a, b, k = 1, 2, setup["k"]
    kwargs = {"directions": setup["dirs"], "gradients": setup["grads"], "grid": 9}
    full = interference_model(setup["model"], setup["data"], a, b, **kwargs)
    m = interference_model(setup["model"], setup["data"], a, b, lattice=3, total_samples=30, **kwargs)
    n_lattice, n_refined = plane_evaluations(9, 3)
    assert m.evaluations == n_lattice + n_refined == 9 + 2 * refine_points(9, 3)
    assert m.lattice == 3 and m.refined == refine_points(9, 3) and m.refine_samples == 24
    evaluated = np.isfinite(m.loss_a) | np.isfinite(m.loss_b)
    assert evaluated.sum() == m.evaluations
    np.testing.assert_allclose(m.loss_a[evaluated], full.loss_a[evaluated], rtol=2e-5)
    np.testing.assert_allclose(m.loss_b[evaluated], full.loss_b[evaluated], rtol=2e-5)
    on_lattice = np.zeros((9, 9), dtype=bool)
    on_lattice[::4, ::4] = True
    assert np.isfinite(m.total[on_lattice]).all() and np.isnan(m.total[~on_lattice]).all()
    assert m.n_samples == 24 + 2 * 3  # the lattice's total loss: D_a ∪ D_b and 3 of each other class
    s_l, t_l, arrays = m.lattice_view()
    np.testing.assert_array_equal(s_l, m.s[::4])
    assert np.isfinite(arrays["total"]).all() and arrays["loss_a"].shape == (3, 3)
    assert np.isfinite(m.loss_a[m.minimum_a]) and m.loss_a[m.minimum_a] == np.nanmin(m.loss_a)
    ref_losses = ref.class_losses(setup["weights"], setup["x"], setup["y"], k)
    assert m.loss_a[4, 4] == pytest.approx(ref_losses[a], rel=1e-5)  # θ* is on the lattice


def test_a_lattice_off_the_grid_is_refused(setup: dict) -> None:
    with pytest.raises(OptionError, match="lattice of 4 points does not fit a grid of 25; choose one of 3, 5, 7"):
        interference_model(setup["model"], setup["data"], 0, 1, directions=setup["dirs"], gradients=setup["grads"],
                           lattice=4)


@pytest.fixture(scope="module")
def demo() -> dict:
    from auditor.demo import demo_paths

    paths = demo_paths()
    model = auditor.load_model(paths.model)
    data = auditor.load_data(paths.data)
    result = auditor.run_audit(model, data, auditor.AuditOptions(pairs=0), gradient_data=auditor.load_data(
        paths.train), gate=None)
    grads = auditor.class_gradients(model, auditor.load_data(paths.train), progress=False)
    pairs = []  # the pairs a default demo audit models: the top 3 by pair score and by confusion
    for a, b, _ in result.top_pairs_interference[:3] + result.top_pairs_confusion[:3]:
        if (a, b) not in pairs:
            pairs.append((a, b))
    dirs = auditor.ego_directions(model, gradients=grads)
    full = {p: interference_model(model, data, *p, directions=dirs, gradients=grads) for p in pairs}
    return {"model": model, "data": data, "grads": grads, "dirs": dirs, "pairs": pairs, "full": full}


@pytest.mark.parametrize("lattice", [5, 7])
def test_a_lattice_finds_the_minima_of_the_full_grid_on_the_demo_pairs(demo: dict, lattice: int) -> None:
    """The smaller grid's minimum of each class lies within one cell of the 25x25 grid's minimum.

    Precisely: for each pair and class c, with F the full grid's L_c and f* = min F, the
    point the lattice-and-refinement model reports is at Chebyshev distance <= 1 (grid
    indices) from some point q with F[q] <= f* + 1e-7 + 1e-5·|f*| (ties: L_c underflows to 0
    over whole regions), and its loss there equals the full grid's value at that point.
    """
    assert len(demo["pairs"]) >= 3
    for a, b in demo["pairs"]:
        kwargs = {"directions": demo["dirs"], "gradients": demo["grads"]}
        full = demo["full"][a, b]
        small = interference_model(demo["model"], demo["data"], a, b, lattice=lattice, total_samples=400, **kwargs)
        assert small.evaluations == sum(plane_evaluations(25, lattice)) < full.evaluations / 5
        for name, found in (("loss_a", small.minimum_a), ("loss_b", small.minimum_b)):
            f, fs = getattr(full, name), getattr(small, name)
            f_star = f.min()
            minimizers = np.argwhere(f <= f_star + 1e-7 + 1e-5 * abs(f_star))
            assert np.abs(minimizers - np.asarray(found)).max(axis=1).min() <= 1, (a, b, name, found)
            assert fs[found] == pytest.approx(f[found], rel=1e-4, abs=1e-7)
        assert abs(small.minimum_separation - full.minimum_separation) <= 2 * np.sqrt(2) * full.resolution


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


@pytest.mark.parametrize("seed", range(6))
def test_pair_subset_sizes_are_the_lengths_of_the_drawn_subsets(seed: int) -> None:
    """The budget prices pairs from class counts; the sizes must be those of the subsets drawn."""
    from auditor.landscape import pair_subset, pair_subset_sizes

    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 12))
    y = rng.integers(0, k, size=int(rng.integers(20, 400)))
    y[y == k - 1] = 0  # class k-1 absent: counts shorter than the class range
    counts = np.bincount(y)
    for a, b in [(0, 1), (1, 2), (2, k - 1), (k - 1, 0)]:
        for total in (0, 5, 40, 150, 10_000):
            lattice, both = pair_subset(y, a, b, total)
            assert pair_subset_sizes(counts, a, b, total) == (len(lattice), len(both))
