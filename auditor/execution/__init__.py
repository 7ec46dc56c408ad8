"""Where an audit's work runs: serially in this process or on a Ray cluster, resumable from a checkpoint.

:func:`auditor.run_audit` takes an ``executor`` (default :class:`SerialExecutor`) and a
``checkpoint`` directory. :class:`RayExecutor` is importable without Ray; Ray itself is
imported only when one starts.
"""

from __future__ import annotations

from .checkpoint import Checkpoint
from .executor import Executor, SerialExecutor, Task
from .ray_executor import RayExecutor, ray_address
from .worker import BasePass, Evaluated, GradientRow, Gradients, Payload, Worker

__all__ = ["Executor", "SerialExecutor", "RayExecutor", "ray_address", "Task", "Checkpoint", "Worker", "Payload",
           "Evaluated", "BasePass", "GradientRow", "Gradients"]
