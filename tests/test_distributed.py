"""Distributed audits on Ray, against the serial audit, bit for bit.

One Ray cluster serves the whole module (``ray.cluster_utils.Cluster``: a head without
resources for the driver and two worker nodes with one CPU and one fake GPU each), bound to
the loopback address and shut down at the end. Every wait is bounded: the executor fails a
unit after ``TASK_TIMEOUT`` seconds, subprocesses and helper threads have timeouts. Skipped,
with the reason, where Ray is not installed (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import auditor
from auditor.cct import CCTPlan
from auditor.demo import demo_paths
from auditor.errors import WorkerError
from auditor.execution import Evaluated, RayExecutor, Worker

from .audits import assert_same_numbers, audit_command, kill_after_cells, subprocess_env

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed; pip install -e '.[ray]' to run the distributed tests")

TASK_TIMEOUT = 90.0
#: Environment of the cluster, its workers and driver subprocesses: loopback only (Ray's
#: own _node_ip_address is rewritten, this variable is honoured), this checkout.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
OPTIONS = auditor.AuditOptions(provider="cpu", strategy="inputs", alphas=(-0.2, -0.1, 0.0, 0.1, 0.2), pairs=1,
                               grid=3, max_per_class=40)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in RAY_ENV.items():
            mp.setenv(name, value)
        mp.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # workers import the tests' Worker subclasses
        import ray
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        assert not ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before the loopback setting took effect"
        quick = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False,
                                                          "_system_config": quick})
        try:
            for _ in range(2):
                c.add_node(num_cpus=1, num_gpus=1)
            c.wait_for_nodes(timeout=60)
            ray.init(address=c.address, log_to_driver=False, logging_level=logging.ERROR)
            yield c
        finally:
            ray.shutdown()
            c.shutdown()


@pytest.fixture(scope="module")
def digits() -> tuple[auditor.Model, auditor.Dataset, auditor.AuditResult]:
    paths = demo_paths()
    model, data = auditor.load_model(paths.model), auditor.load_data(paths.data)
    return model, data, auditor.run_audit(model, data, OPTIONS)


def _executor(**kwargs: Any) -> RayExecutor:
    return RayExecutor(task_timeout=TASK_TIMEOUT, start_timeout=60, **kwargs)


def test_the_cluster_is_on_loopback_with_two_fake_gpus(cluster: Any) -> None:
    import ray

    assert cluster.address.startswith("127.0.0.1:")
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert {n["NodeManagerAddress"] for n in alive} == {"127.0.0.1"} and len(alive) == 3
    assert ray.cluster_resources().get("GPU") == 2


def test_a_distributed_audit_equals_the_serial_audit(cluster: Any, digits: Any) -> None:
    model, data, serial = digits
    executor = _executor()
    distributed = auditor.run_audit(model, data, OPTIONS, executor=executor)
    assert_same_numbers(serial, distributed)
    # One actor per fake GPU, one per node: both ran cells, and each cell says where it ran.
    workers = {c.worker for c in distributed.cct.cells}
    assert len(workers) == 2 and all(" gpu 0" in w for w in workers)
    assert len({w.split(" actor")[0] for w in workers}) == 2  # two nodes
    assert {c.device for c in distributed.cct.cells} == {"cpu"} and executor.actors == []


def test_the_large_k_screen_and_gradients_distribute_too(cluster: Any, digits: Any) -> None:
    model, data, _ = digits
    options = auditor.AuditOptions(provider="cpu", strategy="rebuild", alphas=(-0.1, 0.0, 0.1), pairs=1, grid=3,
                                   candidates=2, max_per_class=30, normalization="none", basis="gradients")
    serial = auditor.run_audit(model, data, options)
    assert serial.candidates["conflict_screen"].startswith("count sketches")
    assert_same_numbers(serial, auditor.run_audit(model, data, options, executor=_executor(workers=2)))


class _Faulty(Worker):
    """Misbehaves on the CCT cell of ``ego``: exits (``os._exit``), or stalls to be ``ray.kill``-ed.

    ``marks`` is a directory shared with the test; a mark file makes the fault happen once.
    """

    marks: ClassVar[str] = ""
    ego: ClassVar[int] = 3
    fault: ClassVar[str] = "exit"
    always: ClassVar[bool] = False

    def cct_cell(self, provider: str, strategy: str, plan: CCTPlan, i: int, indices: Any,
                 direction: np.ndarray) -> Evaluated:
        mark = Path(self.marks) / f"{self.fault}-{plan.ego_classes[i]}"
        if plan.ego_classes[i] == self.ego and (self.always or not mark.exists()):
            mark.write_text(self.name)
            if self.fault == "exit":
                os._exit(1)
            time.sleep(TASK_TIMEOUT)  # the test kills this actor meanwhile
        return super().cct_cell(provider, strategy, plan, i, indices, direction)


def _faulty(tmp_path: Path, **attributes: Any) -> type[Worker]:
    return type("Faulty", (_Faulty,), {"marks": str(tmp_path), **attributes})


def _when(condition: Any, action: Any, timeout: float = TASK_TIMEOUT) -> threading.Thread:
    """Run ``action()`` in a thread once ``condition()`` holds (polled), or give up after ``timeout``."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_worker_that_exits_mid_cell_is_restarted_and_the_cell_retried(cluster: Any, digits: Any,
                                                                        tmp_path: Path) -> None:
    model, data, serial = digits
    distributed = auditor.run_audit(model, data, OPTIONS, executor=_executor(worker_class=_faulty(tmp_path)))
    assert (tmp_path / "exit-3").exists()  # the actor did die on class 3's cell
    assert_same_numbers(serial, distributed)


def test_a_worker_killed_by_ray_kill_mid_cell_is_restarted_and_the_cell_retried(cluster: Any, digits: Any,
                                                                               tmp_path: Path) -> None:
    import ray

    model, data, serial = digits
    executor = _executor(worker_class=_faulty(tmp_path, fault="stall"))
    mark = tmp_path / "stall-3"

    def kill() -> None:
        index = int(mark.read_text().split(" actor ")[1].split()[0])
        ray.kill(executor.actors[index], no_restart=False)

    watcher = _when(lambda: mark.exists() and mark.stat().st_size > 0, kill)
    start = time.monotonic()
    distributed = auditor.run_audit(model, data, OPTIONS, executor=executor)
    watcher.join(timeout=5)
    assert mark.exists() and time.monotonic() - start < TASK_TIMEOUT  # killed, not waited out
    assert_same_numbers(serial, distributed)


def test_a_cell_that_keeps_failing_ends_the_run_naming_it(cluster: Any, digits: Any, tmp_path: Path) -> None:
    model, data, _ = digits
    executor = _executor(worker_class=_faulty(tmp_path, always=True), max_restarts=1, max_task_retries=0,
                         max_attempts=2)
    with pytest.raises(WorkerError, match=r"^CCT cell \(ego class 3, grid steps 0-4\) failed 2 times because its "
                                          r"worker died \(last: ") as err:
        auditor.run_audit(model, data, OPTIONS, executor=executor)
    assert "\n" not in str(err.value) and executor.actors == []


def test_a_killed_driver_is_resumed_from_its_checkpoint(cluster: Any, digits: Any, tmp_path: Path) -> None:
    model, data, _ = digits
    paths = demo_paths()
    # Slow cells (one sample per runtime call) so the driver dies with cells left to do.
    options = ("--strategy", "inputs", "--device", "cpu", "--batch-size", "1", "--max-per-class", "40",
               "--pairs", "1", "--grid", "3")
    checkpoint = tmp_path / "ck"
    command = audit_command(paths.model, paths.data, tmp_path / "killed", "--ray", cluster.address,
                            "--checkpoint", str(checkpoint), *options)
    written = kill_after_cells(command, checkpoint / "cells", 2, timeout=TASK_TIMEOUT,
                               env=subprocess_env(**RAY_ENV))
    assert 2 <= len(written) < 10
    same = auditor.AuditOptions(provider="cpu", strategy="inputs", batch_size=1, max_per_class=40, pairs=1, grid=3)
    resumed = auditor.run_audit(model, data, same, executor=_executor(), checkpoint=checkpoint)
    assert_same_numbers(auditor.run_audit(model, data, same), resumed)
    read_back = {f"cct-c{c.ego_class}-a0-20.npz" for c in resumed.cct.cells if c.resumed}
    assert read_back == set(written) and len(read_back) < len(resumed.cct.cells)
    assert all(c.worker.startswith("ray node") for c in resumed.cct.cells)


class _Slow(Worker):
    """Half a second per CCT cell, so a node can be lost while cells are still running."""

    def cct_cell(self, provider: str, strategy: str, plan: CCTPlan, i: int, indices: Any,
                 direction: np.ndarray) -> Evaluated:
        time.sleep(0.5)
        return super().cct_cell(provider, strategy, plan, i, indices, direction)


def test_a_lost_node_is_replaced_and_the_audit_finishes_unchanged(cluster: Any, digits: Any) -> None:
    import ray

    model, data, serial = digits
    executor = _executor(worker_class=_Slow)
    before = {n["NodeID"][:8] for n in ray.nodes() if n["Alive"]}
    outcome: dict[str, Any] = {}

    def audit() -> None:
        try:
            outcome["result"] = auditor.run_audit(model, data, OPTIONS, executor=executor)
        except BaseException as err:  # handed to the test below
            outcome["error"] = err

    # The audit runs in a thread: cluster_utils adds nodes from the main thread only (signals).
    thread = threading.Thread(target=audit, daemon=True)
    thread.start()
    deadline = time.monotonic() + TASK_TIMEOUT
    # After the unperturbed pass, the gradients and two cells: the rest of the test still to run.
    while executor.n_finished < 5 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert thread.is_alive(), f"the audit ended before the node could be lost: {outcome}"
    cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)  # each node hosts one actor
    cluster.add_node(num_cpus=1, num_gpus=1)
    thread.join(timeout=TASK_TIMEOUT)
    assert not thread.is_alive() and "error" not in outcome, outcome
    distributed = outcome["result"]
    new = {n["NodeID"][:8] for n in ray.nodes() if n["Alive"]} - before
    assert len(new) == 1
    assert new <= {c.worker.split()[2] for c in distributed.cct.cells}  # the replacement node ran cells
    assert_same_numbers(serial, distributed)
