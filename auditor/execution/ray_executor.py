"""Run an audit's work on a Ray cluster: one actor per GPU (or per node, or per requested worker).

Ray is imported only here, and only when a :class:`RayExecutor` starts (``pip install
'auditor[ray]'``). The model, the audit data and the gradient data go into the object store
once and every actor builds one :class:`~auditor.execution.Worker` from them; each ego
direction is its own object, put when its cells are submitted and dropped when they finish,
so neither the driver nor the store holds all K directions of a large audit.

Faults: Ray restarts a dead actor (``max_restarts``) and retries the calls it was running
(``max_task_retries``); when Ray gives up, the driver submits the unit again to a live
actor, replacing an actor that is gone for good, and a unit whose workers died
``max_attempts`` times ends the run with one line naming it. The references to the payload
stay alive on the driver for the whole run, since a restarting actor reads its constructor
arguments again from the object store.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from auditor.errors import AuditorError, OptionError, WorkerError

from .executor import Executor, Task
from .worker import Payload, Worker

__all__ = ["RayExecutor", "ray_address", "RAY_VERSION"]

#: The Ray release the executor is tested with (the ``auditor[ray]`` extra pins it).
RAY_VERSION = "2.60"


def _import_ray(module: str = "ray") -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise OptionError("--ray needs Ray: pip install 'auditor[ray]' (on every node of the cluster)") from err


def ray_address(value: str | None) -> str:
    """The address ``ray.init`` gets for a ``--ray`` value.

    ``None`` or ``"local"`` (``--ray`` alone): ``RAY_ADDRESS`` when it is set, else a new
    Ray on this machine. ``"auto"``: the cluster running here (``ray start``). Anything
    else: that cluster's address (``host:port`` or ``ray://host:port``).
    """
    if value is None or value == "local":
        return os.environ.get("RAY_ADDRESS") or "local"
    return value


class _Holder:
    """Holds the payload's references on the driver's node for the whole run.

    A restarting actor reads its payload again; references (and actor handles) passed to
    actor constructors are what a known Ray bug loses on restart (ray-project/ray#53727),
    so workers get this holder's name instead and ask it for the references.
    """

    def __init__(self, refs: tuple[Any, ...]) -> None:
        self.refs = refs

    def payload(self) -> tuple[Any, ...]:
        return self.refs


class _Shell:
    """The body of a Ray actor: one :class:`Worker`, named by its node, index and GPU."""

    def __init__(self, worker_class: type[Worker], index: int, holder: str) -> None:
        ray = _import_ray()
        refs = ray.get(ray.get_actor(holder).payload.remote())
        model, data, gradient_data = ray.get(list(refs[:3]))
        context = ray.get_runtime_context()
        gpus = ",".join(str(g) for g in context.get_accelerator_ids().get("GPU", []))
        name = f"ray node {context.get_node_id()[:8]} actor {index}" + (f" gpu {gpus}" if gpus else "")
        self.worker = worker_class(Payload(model, data, gradient_data, int(refs[3])), name=name)

    def ready(self) -> str:
        return self.worker.name

    def call(self, method: str, *args: Any) -> object:
        return getattr(self.worker, method)(*args)


@dataclass
class _Flight:
    task: Task
    attempts: int = 0
    actor: int = -1
    handle: Any = None
    submitted: float = 0.0
    reasons: list[str] = field(default_factory=list)


class RayExecutor(Executor):
    """Runs tasks on Ray actors, each holding one worker (one ONNX Runtime session per kind of work).

    Parameters
    ----------
    address : str, optional
        See :func:`ray_address`: None (``--ray``): ``RAY_ADDRESS`` or a new local Ray;
        ``"auto"``: the running cluster; else a cluster address. Ignored when this
        process is already connected to Ray (``ray.init`` was called).
    workers : int, optional
        Number of actors. Default: one per GPU of the cluster (each with ``num_gpus=1``),
        or on a cluster without GPUs one per node.
    gpus : bool, optional
        Give each actor a GPU (default: when the cluster has GPUs).
    max_restarts, max_task_retries : int, default=2
        Ray's restarts of a dead actor and retries of the calls it was running.
    max_attempts : int, default=3
        Submissions of one unit by the driver before the run ends with a :class:`WorkerError`.
    task_timeout : float, optional
        Seconds one unit may take (from its submission); past it the run ends with a
        :class:`WorkerError`. Default: no limit.
    start_timeout : float, default=120
        Seconds to wait for the actors to start; those that did not (no free resources)
        are left out.
    depth : int, default=2
        Units queued per actor, so an actor never waits for the driver.
    worker_class : type of Worker, default=Worker
    init_options : dict, optional
        More keywords for ``ray.init`` when this executor starts Ray.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None, gpus: bool | None = None,
                 max_restarts: int = 2, max_task_retries: int = 2, max_attempts: int = 3,
                 task_timeout: float | None = None, start_timeout: float = 120.0, depth: int = 2,
                 worker_class: type[Worker] = Worker, init_options: dict[str, Any] | None = None) -> None:
        if workers is not None and workers < 1:
            raise OptionError(f"--ray-workers must be >= 1, got {workers}")
        if max_attempts < 1 or depth < 1:
            raise OptionError("max_attempts and depth must be >= 1")
        self.address = ray_address(address)
        self.workers, self.gpus = workers, gpus
        self.max_restarts, self.max_task_retries, self.max_attempts = max_restarts, max_task_retries, max_attempts
        self.task_timeout, self.start_timeout, self.depth = task_timeout, start_timeout, depth
        self.worker_class = worker_class
        self.init_options = dict(init_options or {})
        self.actors: list[Any] = []
        self.n_finished = 0
        self._ray: ModuleType | None = None
        self._started_ray = False
        self._refs: tuple[Any, ...] = ()
        self._holder: Any = None
        self._holder_name = ""
        self._options: list[dict[str, Any]] = []
        self._replacements = 0
        self.description = ""

    @property
    def n_workers(self) -> int:
        return sum(a is not None for a in self.actors)

    # -- start and stop -----------------------------------------------------------------
    def start(self, payload: Payload) -> None:
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            options = {"address": self.address, "include_dashboard": False, "log_to_driver": False,
                       "logging_level": logging.ERROR, **self.init_options}
            if self.address != "local":
                options.pop("include_dashboard")
            ray.init(**options)
            self._started_ray = True
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        n_gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpus = bool(n_gpus) if self.gpus is None else self.gpus
        data = ray.put(payload.data)
        gradient_data = data if payload.gradient_data is payload.data else ray.put(payload.gradient_data)
        # Kept for the whole run, by the driver and by a holder on the driver's node: a
        # restarting actor reads its payload again.
        self._refs = (ray.put(payload.model), data, gradient_data, payload.batch_size)
        affinity = _import_ray("ray.util.scheduling_strategies").NodeAffinitySchedulingStrategy
        here = affinity(ray.get_runtime_context().get_node_id(), soft=False)
        self._holder_name = f"auditor-payload-{uuid.uuid4().hex}"
        self._holder = ray.remote(_Holder).options(num_cpus=0, scheduling_strategy=here,
                                                   name=self._holder_name).remote(self._refs)
        base: dict[str, Any] = {"max_restarts": self.max_restarts, "max_task_retries": self.max_task_retries,
                                "num_cpus": 1, "num_gpus": 1 if use_gpus else 0}
        if self.workers is None and not use_gpus:  # one actor per node that has a CPU to give
            hosts = [n["NodeID"] for n in nodes if n.get("Resources", {}).get("CPU", 0) >= 1]
            self._options = [{**base, "scheduling_strategy": affinity(h, soft=True)}
                             for h in hosts]
        else:
            count = self.workers or n_gpus
            self._options = [{**base, "scheduling_strategy": "SPREAD"} for _ in range(count)]
        self.actors = [self._new_actor(i) for i in range(len(self._options))]
        self._await_actors()
        self.description = (f"{self.n_workers} Ray workers ({'1 GPU' if use_gpus else '1 CPU'} each) on a cluster of "
                            f"{len(nodes)} node(s)")

    def _new_actor(self, index: int) -> Any:
        assert self._ray is not None
        cls = self._ray.remote(_Shell).options(**self._options[index])
        return cls.remote(self.worker_class, index, self._holder_name)

    def _await_actors(self) -> None:
        assert self._ray is not None
        ray = self._ray
        probes = {a.ready.remote(): i for i, a in enumerate(self.actors)}
        ready, _ = ray.wait(list(probes), num_returns=len(probes), timeout=self.start_timeout)
        alive = set()
        for ref in ready:
            try:
                ray.get(ref)
                alive.add(probes[ref])
            except ray.exceptions.RayError:
                pass
        for i, actor in enumerate(self.actors):
            if i not in alive:
                ray.kill(actor, no_restart=True)
                self.actors[i] = None
        if not alive:
            need = "1 CPU and 1 GPU" if self._options and self._options[0]["num_gpus"] else "1 CPU"
            raise WorkerError(f"no Ray worker started within {self.start_timeout:g} s at {self.address}: each needs "
                              f"{need} free, and the auditor installed on the node; check `ray status`")

    def stop(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self.actors:
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # already gone (its node died): nothing to stop
                    pass
        if self._holder is not None:
            ray.kill(self._holder)
        self.actors, self._refs, self._holder = [], (), None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        self._ray = None

    def put(self, value: object) -> object:
        assert self._ray is not None, "start the executor first"
        return self._ray.put(value)

    # -- running ------------------------------------------------------------------------
    def _free_actor(self, load: dict[int, int]) -> int | None:
        free = [i for i, a in enumerate(self.actors) if a is not None and load.get(i, 0) < self.depth]
        return min(free, key=lambda i: load.get(i, 0)) if free else None

    def map_unordered(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, object]]:
        ray = self._ray
        if ray is None:
            raise RuntimeError("start the executor before running tasks")
        source = iter(tasks)
        again: deque[_Flight] = deque()
        pending: dict[Any, _Flight] = {}
        load: dict[int, int] = {}
        exhausted = False
        try:
            while True:
                while (slot := self._free_actor(load)) is not None and (again or not exhausted):
                    if again:
                        flight = again.popleft()
                    else:
                        try:
                            flight = _Flight(next(source))
                        except StopIteration:
                            exhausted = True
                            continue
                    flight.actor, flight.handle, flight.submitted = slot, self.actors[slot], time.monotonic()
                    pending[flight.handle.call.remote(flight.task.method, *flight.task.args)] = flight
                    load[slot] = load.get(slot, 0) + 1
                if not pending:
                    if exhausted and not again:
                        return
                    raise WorkerError(f"no Ray worker is left to run {again[0].task.label}; the run stops here")
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if not ready:
                    self._check_time(pending)
                    continue
                flight = pending.pop(ready[0])
                load[flight.actor] -= 1
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as err:  # the unit raised: bad input stops the run, a bug too
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, AuditorError):
                        raise cause from None
                    raise
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError) as err:
                    again.append(self._failed(flight, err))
                    continue
                self.n_finished += 1
                yield flight.task, result
        finally:
            pending.clear()

    def _failed(self, flight: _Flight, err: Exception) -> _Flight:
        """A unit whose worker died: replace the actor if it is gone for good; submit the unit again."""
        assert self._ray is not None
        flight.attempts += 1
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        flight.reasons.append(f"{type(err).__name__}: {first[:160]}")
        # Replace the actor once, not once per unit it was running.
        if isinstance(err, self._ray.exceptions.ActorDiedError) and self.actors[flight.actor] is flight.handle:
            if self._replacements < self.max_attempts * max(len(self.actors), 1):
                self._replacements += 1
                self.actors[flight.actor] = self._new_actor(flight.actor)
            else:
                self.actors[flight.actor] = None
        if flight.attempts >= self.max_attempts:
            raise WorkerError(f"{flight.task.label} failed {flight.attempts} times because its worker died "
                              f"(last: {flight.reasons[-1]}); the run stops here. Check the workers' memory and "
                              "logs; a --checkpoint run resumes from the cells already finished")
        return flight

    def _check_time(self, pending: dict[Any, _Flight]) -> None:
        if self.task_timeout is None:
            return
        now = time.monotonic()
        for flight in pending.values():
            if now - flight.submitted > self.task_timeout:
                raise WorkerError(f"{flight.task.label} did not finish within {self.task_timeout:g} s on Ray worker "
                                  f"{flight.actor}; the run stops here")
