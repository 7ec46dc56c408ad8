"""Label dancing as a Keras 3 callback, any backend (keras is imported only when used)."""

from __future__ import annotations

from typing import Any

from auditor.dancing import LabelDancingRecorder
from auditor.errors import OptionError

__all__ = ["LabelDancingCallback"]


def LabelDancingCallback(recorder: LabelDancingRecorder, probe_x: Any, every_n_epochs: int = 1,  # noqa: N802
                         batch_size: int = 256) -> Any:
    """A ``keras.callbacks.Callback`` recording the probe predictions at the end of epochs.

    Parameters
    ----------
    recorder : LabelDancingRecorder
    probe_x : array-like
        The probe samples, in the order of the recorder's labels.
    every_n_epochs : int, default=1
    batch_size : int, default=256

    Notes
    -----
    See docs/concepts.md, "Label dancing". A factory, so importing this module does not import
    Keras; set ``KERAS_BACKEND`` before the first ``import keras`` as usual. Records at
    ``on_epoch_end`` with ``model.predict`` (inference mode), ``step`` = training batches
    seen by this callback and ``epoch`` counted from 1.

    Examples
    --------
    >>> # model.fit(x, y, epochs=10, callbacks=[LabelDancingCallback(recorder, probe_x)])
    """
    if every_n_epochs < 1:
        raise OptionError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
    try:
        import keras
    except ImportError as err:
        raise ImportError("the Keras hook needs Keras 3: pip install keras (or 'auditor[keras]')") from err

    class _LabelDancing(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.steps += 1

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if (epoch + 1) % every_n_epochs == 0:
                logits = self.model.predict(probe_x, batch_size=batch_size, verbose=0)
                recorder.record(self.steps, logits, epoch=epoch + 1)

    return _LabelDancing()
