"""Label dancing from a plain PyTorch training loop (torch is imported only when called)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dancing import LabelDancingRecorder

__all__ = ["record_predictions", "predict"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:  # pragma: no cover - exercised where torch is absent
        raise ImportError("the PyTorch hook needs torch: pip install 'auditor[torch]'") from err
    return torch


def predict(model: Any, probe_x: Any, batch_size: int = 256) -> np.ndarray:
    """Logits of the probe samples in eval mode without gradients; the train/eval mode is restored."""
    torch = _torch()
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x = probe_x if isinstance(probe_x, torch.Tensor) else torch.as_tensor(np.asarray(probe_x))
        outs = []
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                outs.append(model(x[s:s + batch_size].to(device)).detach().cpu())
        return torch.cat(outs).numpy()
    finally:
        model.train(was_training)


def record_predictions(recorder: LabelDancingRecorder, model: Any, probe_x: Any, step: int,
                       epoch: int | None = None, batch_size: int = 256) -> np.ndarray:
    """Predict ``probe_x`` with ``model`` and append the record; returns the predicted labels.

    Examples
    --------
    >>> # in the training loop, every n steps:
    >>> # record_predictions(recorder, model, probe_x, step=global_step, epoch=epoch)
    """
    return recorder.record(step, predict(model, probe_x, batch_size), epoch=epoch)
