"""The cost model and the budget: plans that match the evaluations made, designs that fit, the record.

Every evaluation goes through ``Evaluator.evaluate``; the tests count those calls with a
wrapper of their own and compare with what the plan said and what results.json records.
"""

from __future__ import annotations

import html as html_text
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import auditor
from auditor.budget import LADDER, AuditCost, Design, Speed, StageCost, alternate, choose_design, plan_audit
from auditor.cli import app
from auditor.errors import OptionError
from auditor.landscape import plane_evaluations
from auditor.runtime import Evaluator

from .conftest import make_mlp, random_mlp_weights


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Samples of every ``Evaluator.evaluate`` call, in order (the strategy probe's own runs bypass it)."""
    calls: list[int] = []
    original = Evaluator.evaluate

    def evaluate(self: Evaluator, *args: object, **kwargs: object) -> object:
        stats = original(self, *args, **kwargs)  # type: ignore[arg-type]
        if self._counted:  # the strategy probe's own one-sample runs are not the audit's work
            calls.append(int(stats.count.sum()))  # type: ignore[attr-defined]
        return stats

    monkeypatch.setattr(Evaluator, "evaluate", evaluate)
    yield calls


@pytest.fixture
def mlp(tmp_path: Path) -> dict:
    """A 5-class MLP with 100 samples, enough pairs for several 2-D models."""
    k = 5
    weights = random_mlp_weights(6, 12, k, seed=7)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((100, 6)).astype(np.float32)
    y = np.arange(100) % k
    return {"model": auditor.load_model(make_mlp(tmp_path / "m.onnx", weights)), "data": auditor.Dataset(x, y),
            "k": k}


@pytest.mark.parametrize("options", [{}, {"budget": 2.0}, {"pairs": 1, "grid": 5}, {"pairs": 2, "grid": 9}],
                         ids=["default", "budget-2", "pairs-1-grid-5", "pairs-2-grid-9"])
def test_the_plan_counts_every_evaluation_made(mlp: dict, counted: list[int], options: dict) -> None:
    log: list[str] = []
    r = auditor.run_audit(mlp["model"], mlp["data"], auditor.AuditOptions(**options), gate=None, log=log.append)
    cost = r.cost
    assert cost is not None and cost.design is not None and cost.design.pairs
    planned, actual = cost.planned, cost.actual
    # what the evaluators counted is every call of evaluate(), stage by stage
    assert sum(a.evaluations for a in actual.values()) == len(counted)
    assert sum(a.samples for k, a in actual.items() if k != "gradients") == sum(counted)
    assert actual["forward"].evaluations == 1 and actual["gradients"].evaluations == 0
    # the gradient pass differentiated every sample once, as planned
    assert actual["gradients"].samples == planned["gradients"].samples == 100
    n_ego, n_alpha = len(r.cct.ego_classes), len(r.cct.alphas)
    # the α = 0 column is the unperturbed pass, counted under "forward"
    assert planned["cct"].evaluations == actual["cct"].evaluations == n_ego * (n_alpha - 1)
    assert actual["cct"].samples == actual["cct"].evaluations * 100
    assert planned["interference"].evaluations == 0 == actual["interference"].evaluations  # no halvings here
    # the 2-D models: planned before they ran, from the design alone
    models = planned["interference_models"]
    assert models.evaluations == actual["interference_models"].evaluations == sum(m.evaluations for m in r.models)
    assert models.samples == actual["interference_models"].samples
    lattice, refined = plane_evaluations(cost.design.grid, cost.design.lattice)
    assert models.evaluations == len(cost.design.pairs) * (lattice + refined)
    assert cost.total("planned").evaluations == cost.total("actual").evaluations == len(counted)
    assert cost.actual["cct"].fpe == pytest.approx(n_ego * (n_alpha - 1))  # one FPE: a mean CCT pass
    # the plan is logged before the long stages, the design before the 2-D models
    order = [next(i for i, m in enumerate(log) if m.startswith(p)) for p in ("plan: ≈", "cross-class test",
                                                                            "2-D models:", "interference model")]
    assert order == sorted(order)


def test_halvings_are_counted_where_they_run(tmp_path: Path, counted: list[int]) -> None:
    """A grid whose only positive step is too small for the ego loss to fall by 1%: α_s halvings run,
    10 per ego class, since halving a step that small never makes the loss fall by 0.1% either."""
    weights = random_mlp_weights(6, 8, 4, seed=1)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((48, 6)).astype(np.float32), np.repeat(np.arange(4), 12)
    model = auditor.load_model(make_mlp(tmp_path / "m.onnx", weights))
    options = auditor.AuditOptions(alphas=(-1e-7, 0.0, 1e-7), pairs=0)
    r = auditor.run_audit(model, auditor.Dataset(x, y), options, gate=None)
    assert r.cost is not None and len(r.interference.reasons) == 4
    assert r.cost.actual["interference"].evaluations == 4 * 10 and r.cost.actual["interference"].samples == 40 * 48
    assert r.cost.planned["interference"].evaluations == 0  # counted, not planned
    assert sum(a.evaluations for a in r.cost.actual.values()) == len(counted)


def test_the_cct_is_the_same_as_a_standalone_one(mlp: dict) -> None:
    model, data = mlp["model"], mlp["data"]
    r = auditor.run_audit(model, data, auditor.AuditOptions(), gate=None)
    directions = auditor.ego_directions(model, gradients=auditor.class_gradients(model, data, progress=False))
    alone = auditor.cross_class_test(model, data, directions, strategy=r.cct.strategy, progress=False)
    np.testing.assert_array_equal(r.cct.loss, alone.loss)
    np.testing.assert_array_equal(r.cct.accuracy, alone.accuracy)
    np.testing.assert_array_equal(r.cct.flow, alone.flow)
    np.testing.assert_array_equal(r.cct.alphas, alone.alphas)
    # a larger budget or a given grid changes the 2-D models only
    more = auditor.run_audit(model, data, auditor.AuditOptions(budget=3.0, pairs=2, grid=9), gate=None)
    for name in ("loss", "accuracy", "flow", "alphas"):
        np.testing.assert_array_equal(getattr(more.cct, name), getattr(r.cct, name))


def test_pairs_and_grid_given_are_kept(mlp: dict) -> None:
    r = auditor.run_audit(mlp["model"], mlp["data"], auditor.AuditOptions(pairs=1, grid=5, budget=0.01), gate=None)
    assert r.cost is not None and r.cost.design is not None
    d = r.cost.design
    assert (d.grid, d.lattice, d.chosen_by) == (5, 5, "options") and d.reason == "--pairs 1 and --grid 5 given"
    top_s, top_p = r.top_pairs_interference[0][:2], r.top_pairs_confusion[0][:2]
    assert d.pairs == list(dict.fromkeys([top_s, top_p]))
    assert all(m.loss_a.shape == (5, 5) and np.isfinite(m.loss_a).all() and m.evaluations == 25 for m in r.models)
    none = auditor.run_audit(mlp["model"], mlp["data"], auditor.AuditOptions(pairs=0), gate=None)
    assert none.models == [] and none.cost is not None and none.cost.design is not None
    assert none.cost.design.reason == "--pairs 0 given"


def _design(allowance: float, **kwargs: object) -> Design:
    by_score = [(0, 1), (2, 3), (4, 5), (0, 2)]
    by_confusion = [(0, 1), (1, 2), (3, 4), (5, 6)]

    def pair_fpe(pair: tuple[int, int], grid: int, lattice: int) -> float:
        return float(sum(plane_evaluations(grid, lattice)))  # one FPE per evaluation

    return choose_design(allowance_fpe=allowance, by_score=by_score, by_confusion=by_confusion, pair_fpe=pair_fpe,
                         **kwargs)  # type: ignore[arg-type]


def test_the_budget_takes_the_largest_design_that_fits() -> None:
    assert alternate([(0, 1), (2, 3)], [(0, 1), (1, 2)]) == [(0, 1), (2, 3), (1, 2)]  # rank by rank
    costs = [n * sum(plane_evaluations(g, m)) for n, g, m in LADDER]
    assert costs == sorted(costs)  # the ladder goes up in cost
    d = _design(costs[3] + 0.5)
    assert (len(d.pairs), d.grid, d.lattice) == LADDER[3][:3] and d.fpe == costs[3]
    assert d.pairs == [(0, 1), (2, 3), (1, 2)][: LADDER[3][0]] and d.chosen_by == "budget"
    assert "the largest design that fits" in d.reason and f"≈ {costs[3]:.3g} FPE" in d.reason
    small = _design(1.0)  # nothing fits: the smallest design still runs, and the reason says so
    assert (len(small.pairs), small.grid, small.lattice) == LADDER[0] and "the smallest design" in small.reason
    big = _design(1e9)
    assert (len(big.pairs), big.grid, big.lattice) == (6, 25, 25) and big.pairs[-1] == (0, 2)
    given = _design(costs[3] + 0.5, pairs=1)  # --pairs 1: the top pair of each ranking, the budget picks the grid
    assert given.pairs == [(0, 1)] and "(--pairs 1 given)" in given.reason
    grid = _design(2 * 81 + 1.0, grid=9)  # --grid 9: every point of a 9x9 grid, as many pairs as fit
    assert (grid.grid, grid.lattice, len(grid.pairs)) == (9, 9, 2)


def test_the_plan_before_the_long_stages() -> None:
    speed = Speed(n_samples=200, pass_s=1.1, strategy="rebuild", overhead_s=0.3)
    assert speed.evaluation_fpe(200) == pytest.approx(1.0)
    assert speed.evaluation_fpe(40) == pytest.approx((0.3 + 0.8 * 40 / 200) / 1.1)  # a session build per step
    assert Speed(200, 1.1, "inputs").evaluation_fpe(40) == pytest.approx(0.2)
    plan = plan_audit(speed, budget=0.5, probe_s=2.2, n_gradient_samples=100, n_cct_evaluations=201)
    assert plan.planned["forward"].fpe == pytest.approx(3.0) and plan.planned["cct"].evaluations == 201
    assert plan.planned["gradients"].fpe == pytest.approx(5.0)  # 10 passes per sample, half the data
    assert plan.planned["interference_models"].fpe == pytest.approx(0.5 * 201 - 3.0 - 5.0)
    assert plan.total().fpe == pytest.approx(0.5 * 201 + 201)
    line = plan.describe()
    assert line.startswith("plan: ≈ 302 FPE, ≈ 5.5 min at the measured speed (1.1 s per pass over 200 samples")
    with pytest.raises(OptionError, match="--budget must be a finite number > 0"):
        auditor.AuditOptions(budget=0)


def test_the_cost_round_trips_through_results_json(mlp: dict) -> None:
    r = auditor.run_audit(mlp["model"], mlp["data"], gate=None)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert set(d["cost"]["planned"]) == set(d["cost"]["actual"]) == {"forward", "gradients", "cct", "interference",
                                                                      "interference_models"}
    assert d["cost"]["design"]["chosen_by"] == "budget" and d["options"]["pairs"] is None
    again = auditor.AuditResult.from_dict(d)
    assert isinstance(again.cost, AuditCost) and again.cost.planned == r.cost.planned  # type: ignore[union-attr]
    assert again.cost.design == r.cost.design  # type: ignore[union-attr]
    assert StageCost.from_dict(StageCost(3, 4, 1.5, 0.2).to_dict()) == StageCost(3, 4, 1.5, 0.2)


def _method_html(result: auditor.AuditResult, path: Path) -> str:
    from auditor.report import sections
    from auditor.report.render import render_template

    return html_text.unescape(render_template("method.html.j2", {"method": sections.method(result)}, path)
                              .read_text(encoding="utf-8"))


def test_the_report_states_the_grid_and_why(mlp: dict, tmp_path: Path) -> None:
    from dataclasses import replace

    r = auditor.run_audit(mlp["model"], mlp["data"], auditor.AuditOptions(pairs=1, grid=5), gate=None)
    assert ("<strong>Grid:</strong> Every point of a 5×5 grid (resolution one cell, 0.5 r). Why: --pairs 1 and "
            "--grid 5 given.") in _method_html(r, tmp_path / "g.html")
    # what the budget chose is drawn from results.json (the design's reason is written when it is chosen)
    assert r.cost is not None and r.cost.design is not None
    reason = ("2 pairs, 7×7 lattice of a 25×25 grid refined near each minimum: the largest design that fits: 0.5 × "
              "the CCT leaves 60 FPE for them; this one costs ≈ 52 FPE")
    budgeted = replace(r, cost=replace(r.cost, design=Design(r.cost.design.pairs, 25, 7, "budget", reason, 52.0)))
    method = _method_html(budgeted, tmp_path / "b.html")
    assert ("<strong>Grid:</strong> A 7×7 lattice over the whole plane (every 4th point of a 25×25 grid) on D_a ∪ "
            "D_b and a subsample of the other classes, then a search near each class's lattice minimum, halving the "
            "step down to one grid cell, on D_a ∪ D_b only: each minimum is resolved to one cell of the 25×25 grid "
            "(0.0833 r); the contours and the total loss are drawn from the lattice. Why: the largest design that "
            "fits: 0.5 × the CCT leaves 60 FPE for them; this one costs ≈ 52 FPE.") in method
    assert "<h3>Cost</h3>" in method and "<td>interference models</td>" in method
    none = replace(r, cost=replace(r.cost, design=Design([], 25, 25, "options", "--pairs 0 given")))
    assert "<strong>Grid:</strong> No 2-D model: --pairs 0 given." in _method_html(none, tmp_path / "n.html")


def test_a_lattice_model_is_drawn_from_its_lattice(mlp: dict) -> None:
    from dataclasses import replace

    from auditor.landscape import interference_model
    from auditor.report import sections

    model, data = mlp["model"], mlp["data"]
    r = auditor.run_audit(model, data, auditor.AuditOptions(pairs=0), gate=None)
    grads = auditor.class_gradients(model, data, progress=False)
    m = interference_model(model, data, 0, 1, directions=auditor.ego_directions(model, gradients=grads),
                           gradients=grads, grid=9, lattice=3)
    shown = sections.models(replace(r, models=[m]), r.class_names)
    assert shown[0]["grid"] == "9×9 (3×3 lattice, 16 points refined near each minimum)"
    assert shown[0]["uri"].startswith("data:image/png;base64,") and len(shown[0]["uri"]) > 5000
    assert shown[0]["loss_a_min"] == float(np.nanmin(m.loss_a))


@pytest.mark.parametrize(("args", "line"), [
    (["--budget", "nan"], "error: --budget must be a finite number > 0 (a multiple of the CCT's cost, e.g. 0.5), "
                          "got nan"),
    (["--budget", "inf"], "error: --budget must be a finite number > 0 (a multiple of the CCT's cost, e.g. 0.5), "
                          "got inf"),
    (["--budget", "-1"], "error: --budget must be a finite number > 0 (a multiple of the CCT's cost, e.g. 0.5), "
                         "got -1.0"),
    (["--grid", "2"], "error: --grid must be >= 3 (points per axis of the 2-D models, e.g. 25), got 2"),
    (["--pairs", "-1"], "error: --pairs must be >= 0 (0 skips the 2-D models), got -1"),
])
def test_cli_bad_budget_grid_or_pairs_is_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    model = make_mlp(tmp_path / "m.onnx", random_mlp_weights(6, 8, 4, seed=1))
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 6), dtype=np.float32), y=np.arange(8) % 4)
    bad = CliRunner().invoke(app, ["audit", str(model), "--data", str(tmp_path / "d.npz"), *args])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1] == line


def test_cli_budget_option(tmp_path: Path) -> None:
    weights = random_mlp_weights(6, 8, 4, seed=1)
    model = make_mlp(tmp_path / "m.onnx", weights)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 6)).astype(np.float32), y=np.arange(40) % 4)
    bad = CliRunner().invoke(app, ["audit", str(model), "--data", str(tmp_path / "d.npz"), "--budget", "0"])
    assert bad.exit_code == 2
    assert "error: --budget must be a finite number > 0 (a multiple of the CCT's cost, e.g. 0.5), got 0.0" in bad.output
    ok = CliRunner().invoke(app, ["audit", str(model), "--data", str(tmp_path / "d.npz"), "--out",
                                  str(tmp_path / "out"), "--budget", "3", "--no-report"])
    assert ok.exit_code in (0, 1), ok.output
    d = json.loads((tmp_path / "out" / "results.json").read_text())
    assert d["options"]["budget"] == 3.0 and d["cost"]["budget"] == 3.0
    assert "plan: ≈" in ok.output and "2-D models: " in ok.output


def test_the_two_direction_step_is_measured_and_prices_the_2d_models(mlp: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2-D models' evaluations are priced with a measured two-direction step (not counted as
    the audit's work); no 2-D model, nothing measured."""
    from auditor.audit import costing
    from auditor.execution.worker import Worker

    measured = Worker.plane_step_s
    calls: list[tuple[str, str, float]] = []

    def spy(self: Worker, provider: str, strategy: str) -> float:
        seconds = measured(self, provider, strategy)
        calls.append((provider, strategy, seconds))
        return seconds

    speeds: list[Speed] = []
    original = costing.PlaneCosts.__init__

    def capture(self: costing.PlaneCosts, y: np.ndarray, directions: object, options: object, speed: Speed) -> None:
        speeds.append(speed)
        original(self, y, directions, options, speed)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "plane_step_s", spy)
    monkeypatch.setattr(costing.PlaneCosts, "__init__", capture)
    r = auditor.run_audit(mlp["model"], mlp["data"], auditor.AuditOptions(), gate=None)
    assert len(calls) == 1 and calls[0][:2] == (r.provider, r.cct.strategy) and calls[0][2] > 0
    assert r.timings["plane_step_s"] == calls[0][2] == speeds[0].overhead_s
    assert speeds[0].pass_s == pytest.approx(r.cost.seconds_per_fpe)  # type: ignore[union-attr]
    none = auditor.run_audit(mlp["model"], mlp["data"], auditor.AuditOptions(pairs=0), gate=None)
    assert "plane_step_s" not in none.timings and len(calls) == 1
