"""The whole audit: permuting the class order permutes every number; results round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import auditor

from .conftest import make_mlp, random_mlp_weights


def _audit(path: Path, x: np.ndarray, y: np.ndarray) -> auditor.AuditResult:
    options = auditor.AuditOptions(alphas=(-0.1, -0.05, 0.0, 0.05, 0.1), pairs=1, grid=3)
    return auditor.run_audit(auditor.load_model(path), auditor.Dataset(x, y), options)


def test_permuting_class_order_permutes_every_matrix(tmp_path: Path) -> None:
    k = 5
    weights = random_mlp_weights(6, 10, k, seed=11)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    y = np.arange(60) % k
    perm = np.array([3, 0, 4, 1, 2])  # new class j is old class perm[j]
    inverse = np.argsort(perm)
    (w0, b0), (w1, b1) = weights
    permuted = [(w0, b0), (w1[perm], b1[perm])]
    a = _audit(make_mlp(tmp_path / "a.onnx", weights), x, y)
    b = _audit(make_mlp(tmp_path / "b.onnx", permuted), x, inverse[y])

    def same(old: np.ndarray, new: np.ndarray, axes: int = 2) -> None:
        index = np.ix_(perm, perm) if axes == 2 else perm
        np.testing.assert_allclose(new, old[index], rtol=2e-4, atol=1e-6)

    same(a.loss, b.loss, 1)
    same(a.accuracy, b.accuracy, 1)
    same(a.gradient_norm, b.gradient_norm, 1)
    np.testing.assert_array_equal(b.errors.confusion, a.errors.confusion[np.ix_(perm, perm)])
    for name in ("conflict", "first_order", "finite", "pair_score"):
        same(getattr(a.interference, name), getattr(b.interference, name))
    same(a.flatness.curvature, b.flatness.curvature, 1)
    same(a.flatness.sharpness, b.flatness.sharpness, 1)
    # CCT: ego row i of b is ego class perm[i] of a; evaluated classes permuted too
    assert b.cct.ego_classes == tuple(range(k)) and a.cct.ego_classes == tuple(range(k))
    np.testing.assert_allclose(b.cct.loss, a.cct.loss[perm][:, perm], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(b.cct.flow, a.cct.flow[perm][:, perm][..., perm], atol=1e-6)
    top_a = {(min(perm[i], perm[j]), max(perm[i], perm[j])) for i, j, _ in b.top_pairs_interference[:3]}
    assert top_a == {(i, j) for i, j, _ in a.top_pairs_interference[:3]}


def test_results_round_trip_through_json(small_mlp: dict) -> None:
    r = _audit(small_mlp["path"], small_mlp["x"], small_mlp["y"])
    text = json.dumps(r.to_dict(), allow_nan=False)
    again = auditor.AuditResult.from_dict(json.loads(text))
    assert json.dumps(again.to_dict(), allow_nan=False) == text
    np.testing.assert_array_equal(again.cct.loss, r.cct.loss)
    assert again.options == r.options and again.models[0].minimum_a == r.models[0].minimum_a


def test_gradient_data_is_used_for_directions_only(small_mlp: dict) -> None:
    x, y = small_mlp["x"], small_mlp["y"]
    model = auditor.load_model(small_mlp["path"])
    other = auditor.Dataset(x[::-1] * 0.5, y[::-1])
    options = auditor.AuditOptions(alphas=(-0.1, 0.0, 0.1), pairs=0)
    r = auditor.run_audit(model, auditor.Dataset(x, y), options, gradient_data=other)
    g = auditor.class_gradients(model, other)
    np.testing.assert_allclose(r.gradient_norm, g.norms(), rtol=1e-6)
    from . import numpy_mlp

    np.testing.assert_allclose(r.loss, numpy_mlp.class_losses(small_mlp["weights"], x, y, 4), rtol=1e-5)
    assert r.gradient_data["sha256"] != r.data["sha256"]


def test_absent_class_is_nan_and_reported(small_mlp: dict) -> None:
    keep = small_mlp["y"] != 2
    r = _audit(small_mlp["path"], small_mlp["x"][keep], small_mlp["y"][keep])
    assert np.isnan(r.loss[2]) and np.isnan(r.accuracy[2])
    assert r.skipped[2] == "no samples in the audit data"
    assert 2 not in r.cct.ego_classes
    assert np.isnan(r.interference.pair_score[2]).all()
    assert all(2 not in (a, b) for a, b, _ in r.top_pairs_interference)
