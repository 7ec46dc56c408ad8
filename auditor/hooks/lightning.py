"""Label dancing as a PyTorch Lightning callback (lightning is imported only when used)."""

from __future__ import annotations

from typing import Any

from ..dancing import LabelDancingRecorder

__all__ = ["LabelDancingCallback"]


def LabelDancingCallback(recorder: LabelDancingRecorder, probe_x: Any, every_n_epochs: int = 1,  # noqa: N802
                         batch_size: int = 256) -> Any:
    """A ``lightning.pytorch.Callback`` recording the probe predictions at the end of training epochs.

    A factory, so importing this module does not import Lightning.
    """
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback  # the older package name
        except ImportError as err:
            raise ImportError("the Lightning hook needs lightning: pip install -c constraints.txt "
                              "'auditor[lightning]'") from err
    from .torch import record_predictions

    class _LabelDancing(Callback):  # type: ignore[misc, valid-type]
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            epoch = int(trainer.current_epoch) + 1
            if epoch % every_n_epochs == 0:
                record_predictions(recorder, pl_module, probe_x, step=int(trainer.global_step), epoch=epoch,
                                   batch_size=batch_size)

    return _LabelDancing()
