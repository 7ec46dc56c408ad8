"""Label dancing as a Keras 3 callback, any backend (keras is imported only when used)."""

from __future__ import annotations

from typing import Any

from ..dancing import LabelDancingRecorder

__all__ = ["LabelDancingCallback"]


def LabelDancingCallback(recorder: LabelDancingRecorder, probe_x: Any, every_n_epochs: int = 1,  # noqa: N802
                         batch_size: int = 256) -> Any:
    """A ``keras.callbacks.Callback`` recording the probe predictions at the end of epochs.

    A factory, so importing this module does not import Keras.
    """
    try:
        import keras
    except ImportError as err:
        raise ImportError("the Keras hook needs keras: pip install 'auditor[keras]'") from err

    class _LabelDancing(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
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
