"""Label dancing as a PyTorch Lightning callback (lightning is imported only when used)."""

from __future__ import annotations

from typing import Any

from auditor.dancing import LabelDancingRecorder
from auditor.errors import OptionError

__all__ = ["LabelDancingCallback"]


def LabelDancingCallback(recorder: LabelDancingRecorder, probe_x: Any, every_n_epochs: int = 1,  # noqa: N802
                         batch_size: int = 256) -> Any:
    """A ``lightning.pytorch.Callback`` recording the probe predictions at the end of training epochs.

    Parameters
    ----------
    recorder : LabelDancingRecorder
    probe_x : array-like or torch.Tensor
        The probe samples, in the order of the recorder's labels.
    every_n_epochs : int, default=1
    batch_size : int, default=256

    Notes
    -----
    See docs/concepts.md, "Label dancing". A factory, so importing this module does not import
    Lightning. Records at ``on_train_epoch_end`` with ``step = trainer.global_step`` and
    ``epoch`` counted from 1, on global rank 0 only; the model is predicted in eval mode
    without gradients and its modes are restored.

    Examples
    --------
    >>> # trainer = lightning.Trainer(callbacks=[LabelDancingCallback(recorder, probe_x)])
    """
    if every_n_epochs < 1:
        raise OptionError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
    import importlib

    try:
        Callback: Any = importlib.import_module("lightning.pytorch").Callback
    except ImportError:
        try:
            Callback = importlib.import_module("pytorch_lightning").Callback  # the older package name
        except ImportError as err:
            raise ImportError("the Lightning hook needs lightning: pip install lightning (keep your torch: "
                              "pip install -c constraints.txt lightning, with torch==<version> in it)") from err
    from .torch import record_predictions

    class _LabelDancing(Callback):  # type: ignore[misc]
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            epoch = int(trainer.current_epoch) + 1
            # One writer: under DDP every rank holds the same weights, and only rank 0 may append.
            if epoch % every_n_epochs == 0 and trainer.is_global_zero:
                record_predictions(recorder, pl_module, probe_x, step=int(trainer.global_step), epoch=epoch,
                                   batch_size=batch_size)

    return _LabelDancing()
