"""The errors the auditor raises on purpose.

Callers catch :class:`AuditorError`; the CLI turns it into one line and exit code 2.
Each message says what was expected, what was found, and what to do next.
"""

from __future__ import annotations

__all__ = [
    "AuditorError",
    "ModelError",
    "UnsupportedNodeError",
    "DataError",
    "OptionError",
    "ResultsError",
    "CheckpointError",
    "WorkerError",
]


class AuditorError(Exception):
    """Base of every error the auditor raises on purpose."""


class ModelError(AuditorError, ValueError):
    """The ONNX model cannot be audited as given."""


class UnsupportedNodeError(ModelError):
    """A node the gradient pass cannot differentiate."""


class DataError(AuditorError, ValueError):
    """The audit data do not fit the model."""


class OptionError(AuditorError, ValueError):
    """An option or configuration value is invalid."""


class ResultsError(AuditorError, ValueError):
    """A results file or log cannot be read."""


class CheckpointError(AuditorError, ValueError):
    """A --checkpoint directory does not belong to this audit or cannot be read."""


class WorkerError(AuditorError, RuntimeError):
    """A unit of distributed work kept failing (its workers died) or did not finish in time."""
