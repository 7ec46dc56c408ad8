"""Label dancing from a plain PyTorch training loop (torch is imported only when called)."""

from __future__ import annotations

from typing import Any

import numpy as np

from auditor.dancing import LabelDancingRecorder

__all__ = ["record_predictions", "predict"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:  # pragma: no cover - exercised where torch is absent
        raise ImportError("the PyTorch hook needs torch: pip install torch (or 'auditor[torch]')") from err
    return torch


def predict(model: Any, probe_x: Any, batch_size: int = 256) -> np.ndarray:
    """Logits of the probe samples in eval mode without gradients; each module's train/eval mode is restored."""
    torch = _torch()
    # Per module, not model.train(was_training): a frozen BatchNorm kept in eval stays in eval.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x = probe_x if isinstance(probe_x, torch.Tensor) else torch.as_tensor(np.asarray(probe_x))
        outs = []
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                out = model(x[s:s + batch_size].to(device))
                if not isinstance(out, torch.Tensor):  # (logits, ...) tuples, or outputs with .logits
                    out = out.logits if hasattr(out, "logits") else out[0]
                outs.append(out.detach().float().cpu())
        return np.asarray(torch.cat(outs).numpy())
    finally:
        for m, training in modes:
            m.training = training


def record_predictions(recorder: LabelDancingRecorder, model: Any, probe_x: Any, step: int,
                       epoch: int | None = None, batch_size: int = 256) -> np.ndarray:
    """Predict ``probe_x`` with ``model`` and append the record; returns the predicted labels.

    Parameters
    ----------
    recorder : LabelDancingRecorder
    model : torch.nn.Module
        Returns logits ``[n, K]`` (a tuple's first item, or an output's ``.logits``, also do).
    probe_x : array-like or torch.Tensor
        The probe samples, in the order of the recorder's labels; moved batch by batch to
        the device of the model's parameters.
    step, epoch : int
        Written into the record (``epoch`` may be None).
    batch_size : int, default=256

    Returns
    -------
    ndarray of shape (n,)
        The predicted classes that were recorded.

    Notes
    -----
    See docs/concepts.md, "Label dancing". The model runs in eval mode under ``torch.no_grad``;
    each module's train/eval mode is restored afterwards, so it can be called mid-epoch.

    Examples
    --------
    >>> # in the training loop, every n steps:
    >>> # record_predictions(recorder, model, probe_x, step=global_step, epoch=epoch)
    """
    return recorder.record(step, predict(model, probe_x, batch_size), epoch=epoch)
