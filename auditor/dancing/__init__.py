"""Label dancing: how probe predictions switch between classes during training.

See docs/concepts.md, "Label dancing". Predictions come from a training-time log written by
:class:`LabelDancingRecorder` (:mod:`auditor.dancing.log`; any framework: it takes numpy
arrays or anything with ``__array__``, ``.numpy()`` or ``.detach()``) or from a series of
exported checkpoints (:mod:`auditor.dancing.checkpoints`). Both become the same ``[T, n]``
prediction matrix, so both give the same :class:`DanceAnalysis`
(:mod:`auditor.dancing.analysis`).
"""

from __future__ import annotations

from .analysis import DOMINANCE_THRESHOLD, DanceAgreement, DanceAnalysis, PairAgreement, dance_analysis
from .checkpoints import CheckpointSeries, predict_checkpoints
from .log import FORMAT, VERSION, LabelDancingRecorder, TruncatedLogWarning, probe_set, read_log

__all__ = ["LabelDancingRecorder", "probe_set", "read_log", "CheckpointSeries", "predict_checkpoints",
           "DanceAnalysis", "DanceAgreement", "PairAgreement", "dance_analysis", "TruncatedLogWarning",
           "DOMINANCE_THRESHOLD", "FORMAT", "VERSION"]
