"""Executors: who runs an audit's units of work. One code path for a serial and a distributed run.

The pipeline describes its work as :class:`Task` objects (a :class:`~auditor.execution.Worker`
method and its arguments) and hands an iterator of them to :meth:`Executor.map_unordered`,
which yields each task with its result as it finishes. Results are placed by index by the
caller, never by arrival order, so a run gives the same numbers whatever the executor.

:class:`SerialExecutor` runs one worker in this process (the default: nothing to install).
:class:`~auditor.execution.RayExecutor` runs one worker per Ray actor.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

from .worker import Payload, Worker

__all__ = ["Task", "Executor", "SerialExecutor"]


@dataclass(frozen=True, eq=False)
class Task:
    """One unit of work: ``worker.<method>(*args)``.

    Attributes
    ----------
    label : str
        Names the unit in messages, e.g. "CCT cell (ego class 3, grid steps 0-20)".
    method : str
        A :class:`~auditor.execution.Worker` method.
    args : tuple
        Its arguments; values from :meth:`Executor.put` may appear at the top level.
    """

    label: str
    method: str
    args: tuple[object, ...]


class Executor(abc.ABC):
    """Runs tasks on workers that received one :class:`~auditor.execution.Payload`.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. An executor passed to
    :func:`auditor.run_audit` is started and stopped by it.
    """

    #: "serial" or "ray", for messages and results.
    name: str = ""

    @property
    @abc.abstractmethod
    def n_workers(self) -> int:
        """Workers running tasks at the same time (after :meth:`start`)."""

    @abc.abstractmethod
    def start(self, payload: Payload) -> None:
        """Ship the payload once and start the workers."""

    @abc.abstractmethod
    def put(self, value: object) -> object:
        """A handle to ``value`` (e.g. one ego direction) that tasks may take as an argument.

        A handle shipped once is read by every task that takes it; it is dropped when no
        task holds it any more.
        """

    @abc.abstractmethod
    def map_unordered(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, object]]:
        """Run ``tasks`` (pulled lazily, a few ahead of the workers); yield ``(task, result)`` as each finishes.

        Raises
        ------
        WorkerError
            A task kept failing because its workers died, or did not finish in time.
        AuditorError
            A task raised it (bad model or data found by a worker): the run stops.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the workers and drop every handle."""

    def call(self, task: Task) -> object:
        """Run one task and return its result."""
        for _, result in self.map_unordered([task]):
            return result
        raise AssertionError("map_unordered yielded nothing for one task")  # pragma: no cover

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class SerialExecutor(Executor):
    """Every task in this process, in order, on one worker (one ONNX Runtime session per kind of work).

    Parameters
    ----------
    worker_class : type of Worker, default=Worker
    """

    name = "serial"

    def __init__(self, worker_class: type[Worker] = Worker) -> None:
        self.worker_class = worker_class
        self._worker: Worker | None = None

    @property
    def n_workers(self) -> int:
        return 1

    def start(self, payload: Payload) -> None:
        self._worker = self.worker_class(payload)

    def put(self, value: object) -> object:
        return value

    def map_unordered(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, object]]:
        if self._worker is None:
            raise RuntimeError("start the executor before running tasks")
        for task in tasks:
            yield task, getattr(self._worker, task.method)(*task.args)

    def stop(self) -> None:
        self._worker = None
