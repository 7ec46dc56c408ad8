"""auditor: find the classes an exported ONNX classifier cannot keep apart.

The stages (docs/concepts.md names throughout): :func:`load_model` and :func:`load_data`,
:func:`class_gradients` and :func:`ego_directions`, :func:`cross_class_test`,
:func:`interference`, :func:`interference_model`, :func:`run_audit`; label dancing with
:class:`LabelDancingRecorder` and :func:`dance_analysis`; a baseline export against a
candidate with :func:`compare`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .audit import AuditOptions, AuditResult, run_audit  # noqa: E402
from .cct import CrossClassTestResult, cross_class_test  # noqa: E402
from .comparison import CompareOptions, CompareResult, compare  # noqa: E402
from .confusion import ErrorShare, error_share  # noqa: E402
from .dancing import DanceAnalysis, LabelDancingRecorder, dance_analysis, predict_checkpoints  # noqa: E402
from .data import Dataset, check_dataset, load_data  # noqa: E402
from .errors import (  # noqa: E402
    AuditorError,
    CheckpointError,
    DataError,
    ModelError,
    OptionError,
    ResultsError,
    UnsupportedNodeError,
    WorkerError,
)
from .gate import Check, GateResult, evaluate_gate  # noqa: E402
from .gradients import ClassGradients, EgoDirections, class_gradients, ego_directions  # noqa: E402
from .interference import InterferenceResult, interference  # noqa: E402
from .landscape import Flatness, InterferenceModel, flatness, interference_model  # noqa: E402
from .model import Model, Parameter, load_model  # noqa: E402
from .save import save_audit, save_compare, save_dance  # noqa: E402

__all__ = [
    "__version__",
    "AuditorError", "DataError", "ModelError", "OptionError", "ResultsError", "UnsupportedNodeError",
    "CheckpointError", "WorkerError",
    "Model", "Parameter", "load_model",
    "Dataset", "check_dataset", "load_data",
    "ClassGradients", "EgoDirections", "class_gradients", "ego_directions",
    "Check", "GateResult", "evaluate_gate",
    "CrossClassTestResult", "cross_class_test",
    "InterferenceResult", "interference",
    "Flatness", "InterferenceModel", "flatness", "interference_model",
    "ErrorShare", "error_share",
    "AuditOptions", "AuditResult", "run_audit", "save_audit", "save_dance",
    "DanceAnalysis", "LabelDancingRecorder", "dance_analysis", "predict_checkpoints",
    "CompareOptions", "CompareResult", "compare", "save_compare",
]
