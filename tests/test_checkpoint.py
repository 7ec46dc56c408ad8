"""Resumable audits without Ray: checkpoint files, refusals, a killed serial audit resumed, and the
executor seam (results placed by index whatever order the work finishes in)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import auditor
from auditor.audit import tasks
from auditor.audit.pipeline import start_run
from auditor.cct import cross_class_test
from auditor.cli import app
from auditor.demo import demo_paths
from auditor.errors import CheckpointError
from auditor.execution import Checkpoint, Evaluated, SerialExecutor, Task
from auditor.gradients import EgoDirectionStream, class_gradients, gradient_sketches
from auditor.runtime import StepStats

from .audits import assert_same_numbers, audit_command, kill_after_cells, load_results
from .conftest import zoo_entry


def _stats(rng: np.random.Generator, k: int) -> StepStats:
    confusion = rng.integers(0, 4, size=(k, k)) * (rng.random((k, k)) < 0.4)
    return StepStats(loss_sum=rng.standard_normal(k), count=confusion.sum(axis=1), confusion=confusion)


def test_a_cell_round_trips_bit_for_bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stats = tuple(_stats(rng, 7) for _ in range(3))
    store = Checkpoint(tmp_path / "ck")
    store.open({"model": "m"})
    store.store("cct-c3-a0-20", "digest-1", Evaluated(stats, "cuda:1", "ray node ab actor 0", 1.5))
    back = store.load("cct-c3-a0-20", "digest-1")
    assert back is not None and back.resumed and (back.device, back.worker, back.seconds) == (
        "cuda:1", "ray node ab actor 0", 1.5)
    for a, b in zip(stats, back.stats, strict=True):
        np.testing.assert_array_equal(a.loss_sum, b.loss_sum)
        np.testing.assert_array_equal(a.confusion, b.confusion)
        np.testing.assert_array_equal(a.count, b.count)
    assert store.load("cct-c4-a0-20", "digest-1") is None
    assert sorted(p.name for p in (tmp_path / "ck").rglob("*")) == ["cct-c3-a0-20.npz", "cells", "manifest.json"]


def _refusal(tmp_path: Path, case: str) -> None:
    store = Checkpoint(tmp_path / "ck")
    store.open({"model": "m", "options": {"grid": 5}})
    store.fix({"provider": "cuda", "strategy": "inputs"})
    store.store("cct-c0-a0-4", "digest-1", Evaluated((), "cpu", "local", 0.0))
    if case == "another audit":
        Checkpoint(tmp_path / "ck").open({"model": "m", "options": {"grid": 7}})
    elif case == "not a checkpoint":
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("mine")
        Checkpoint(tmp_path / "other").open({"model": "m"})
    elif case == "other inputs":
        store.load("cct-c0-a0-4", "digest-2")
    elif case == "unreadable":
        (tmp_path / "ck" / "manifest.json").write_text("{")
        Checkpoint(tmp_path / "ck").open({"model": "m"})
    elif case == "other provider":
        resumed = Checkpoint(tmp_path / "ck")
        assert resumed.open({"model": "m", "options": {"grid": 5}}) == {"provider": "cuda", "strategy": "inputs"}
        resumed.fix({"provider": "cpu", "strategy": "inputs"})


@pytest.mark.parametrize(("case", "message"), [
    ("another audit", r"ck belongs to another audit: its options\.grid is 5 but this audit's is 7; give a new "
                      r"directory, or delete this one to start over$"),
    ("not a checkpoint", r"other exists and is not a checkpoint \(no manifest\.json\); give a new or empty directory$"),
    ("other inputs", r"cell cct-c0-a0-4 was computed from other inputs \(ego direction, grid axes or steps\)"),
    ("unreadable", r"manifest\.json cannot be read"),
    ("other provider", r"was computed with provider \"cuda\", this run has \"cpu\"; run where provider is \"cuda\""),
])
def test_a_checkpoint_of_another_audit_is_refused_in_one_line(tmp_path: Path, case: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as err:
        _refusal(tmp_path, case)
    assert "\n" not in str(err.value)


def test_the_cli_refuses_another_audits_checkpoint_with_exit_2(tmp_path: Path) -> None:
    paths = demo_paths()
    base = ["audit", str(paths.model), "--data", str(paths.data), "--out", str(tmp_path / "out"), "--no-report",
            "--quiet", "--pairs", "0", "--alphas", "-0.1,0,0.1", "--checkpoint", str(tmp_path / "ck")]
    first = CliRunner().invoke(app, base)
    assert first.exit_code in (0, 1), first.output  # 1: the gate failed, the audit ran
    again = CliRunner().invoke(app, [*base, "--max-per-class", "20"])
    assert again.exit_code == 2
    assert again.output.strip().splitlines()[-1].startswith(
        f"error: --checkpoint {tmp_path / 'ck'} belongs to another audit: its data is ")


def test_a_killed_serial_audit_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    paths = demo_paths()
    # One sample per runtime call makes each cell slow enough (~0.2 s) to kill the run between cells.
    options = ("--strategy", "inputs", "--batch-size", "1", "--max-per-class", "40", "--classes", "0,1,2,3,4,5",
               "--pairs", "1", "--grid", "3", "--device", "cpu")
    written = kill_after_cells(audit_command(paths.model, paths.data, tmp_path / "killed", "--checkpoint",
                                             str(tmp_path / "ck"), *options), tmp_path / "ck" / "cells", 2)
    assert 2 <= len(written) < 6 and not (tmp_path / "killed" / "results.json").exists()
    result = CliRunner().invoke(app, audit_command(paths.model, paths.data, tmp_path / "resumed", "--checkpoint",
                                                   str(tmp_path / "ck"), *options)[3:])
    assert result.exit_code in (0, 1), result.output
    whole = CliRunner().invoke(app, audit_command(paths.model, paths.data, tmp_path / "whole", *options)[3:])
    assert whole.exit_code in (0, 1), whole.output
    resumed, reference = load_results(tmp_path / "resumed"), load_results(tmp_path / "whole")
    assert_same_numbers(resumed, reference)
    read_back = [c for c in resumed.cct.cells if c.resumed]
    assert {f"cct-c{c.ego_class}-a0-20.npz" for c in read_back} == set(written)
    assert 0 < len(resumed.cct.cells) - len(read_back) < 6  # fewer cells computed than the whole test has


def test_ego_direction_stream_gives_ego_directions_rows_bit_for_bit() -> None:
    entry = zoo_entry("resblock")
    model = auditor.load_model(entry["path"])
    g = class_gradients(model, auditor.Dataset(entry["x"], entry["y"]))
    for normalization, include_1d in (("filter", False), ("layer", True), ("global", False), ("none", False)):
        whole = auditor.ego_directions(model, gradients=g, normalization=normalization, include_1d=include_1d)
        stream = EgoDirectionStream(model, g, normalization, include_1d)
        assert stream.classes == whole.classes and dict(stream.skipped) == dict(whole.skipped)
        np.testing.assert_array_equal(stream.alpha_max, whole.alpha_max)
        for c in whole.classes:
            np.testing.assert_array_equal(stream.vector(c), whole.vector(c))
            np.testing.assert_array_equal(stream[c]["fc.weight"], whole[c]["fc.weight"])


class _Reversed(SerialExecutor):
    """Three "workers" that finish every batch of tasks in reverse order: results must be placed by index."""

    @property
    def n_workers(self) -> int:
        return 3

    def map_unordered(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, object]]:
        done = list(super().map_unordered(tasks))
        yield from reversed(done)


def test_stage_work_equals_the_serial_functions_in_any_order() -> None:
    entry = zoo_entry("cnn_bn")
    model, data = auditor.load_model(entry["path"]), auditor.Dataset(entry["x"], entry["y"])
    options = auditor.AuditOptions(strategy="inputs", provider="cpu", alphas=(-0.2, -0.1, 0.0, 0.1, 0.2))
    for executor in (SerialExecutor(), _Reversed()):
        run = start_run(model, data, options, None, False, print, executor)
        try:
            g = tasks.run_gradients(run, None, 16)
            reference = class_gradients(model, data, batch_size=16, provider="cpu")
            assert g.classes == reference.classes
            np.testing.assert_array_equal(g.flat, reference.flat)
            np.testing.assert_array_equal(g.losses, reference.losses)
            classes, sketches, norms = tasks.run_sketches(run, 64, 16)
            ref_classes, ref_sketches, ref_norms = gradient_sketches(model, data, dim=64, batch_size=16,
                                                                     provider="cpu")
            assert classes == ref_classes
            np.testing.assert_array_equal(sketches, ref_sketches)
            np.testing.assert_array_equal(norms, ref_norms)
            directions = EgoDirectionStream(model, g)
            cct = tasks.run_cct(run, directions, [2, 0, 3])
            ref_cct = cross_class_test(model, data, auditor.ego_directions(model, gradients=reference),
                                       options.alphas, ego_classes=[2, 0, 3], provider="cpu", strategy="inputs")
            np.testing.assert_array_equal(cct.loss, ref_cct.loss)
            np.testing.assert_array_equal(cct.flow, ref_cct.flow)
            assert [c.ego_class for c in cct.cells] == [2, 0, 3]
        finally:
            executor.stop()
    serial = auditor.run_audit(model, data, auditor.AuditOptions(strategy="inputs", provider="cpu", pairs=1, grid=3,
                                                                 candidates=2))
    shuffled = auditor.run_audit(model, data, auditor.AuditOptions(strategy="inputs", provider="cpu", pairs=1,
                                                                   grid=3, candidates=2), executor=_Reversed())
    assert serial.candidates["conflict_screen"].startswith("count sketches")
    assert_same_numbers(serial, shuffled)


def test_ray_options_reach_the_executor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import auditor.execution as execution

    seen: list[tuple[str, int | None, bool | None]] = []

    class Fake(execution.RayExecutor):
        def start(self, payload: object) -> None:
            seen.append((self.address, self.workers, self.gpus))
            raise auditor.OptionError("stop here")

    monkeypatch.setattr(execution, "RayExecutor", Fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    paths = demo_paths()
    base = ["audit", str(paths.model), "--data", str(paths.data), "--out", str(tmp_path), "--quiet"]
    for extra in (["--ray"], ["--ray", "--ray-workers", "3"], ["--ray", "auto", "--device", "cpu"],
                  ["--ray", "10.0.0.5:6379"]):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2 and "error: stop here" in result.output
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    CliRunner().invoke(app, [*base, "--ray"])
    assert seen == [("local", None, None), ("local", 3, None), ("auto", None, False), ("10.0.0.5:6379", None, None),
                    ("head:6379", None, None)]
    alone = CliRunner().invoke(app, [*base, "--ray-workers", "2"])
    assert alone.exit_code == 2 and alone.output.strip().endswith(
        "error: --ray-workers needs --ray (a local Ray) or --ray auto / --ray ADDRESS (a cluster)")


def test_without_ray_the_ray_option_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray fails as if not installed
    paths = demo_paths()
    result = CliRunner().invoke(app, ["audit", str(paths.model), "--data", str(paths.data), "--out", str(tmp_path),
                                      "--quiet", "--ray"])
    assert result.exit_code == 2
    assert result.output.strip().endswith("error: --ray needs Ray: pip install 'auditor[ray]' (on every node of the "
                                          "cluster)")


def test_cell_records_go_through_results_json(tmp_path: Path) -> None:
    paths = demo_paths()
    result = auditor.run_audit(auditor.load_model(paths.model), auditor.load_data(paths.data).stratified(10),
                               auditor.AuditOptions(pairs=0, alphas=(-0.1, 0.0, 0.1)), checkpoint=tmp_path / "ck")
    again = auditor.AuditResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.cct.cells == result.cct.cells
    assert [c.ego_class for c in result.cct.cells] == list(result.cct.ego_classes)
    assert {(c.steps, c.device, c.worker, c.resumed) for c in result.cct.cells} == {((0, 2), "cpu", "local", False)}
