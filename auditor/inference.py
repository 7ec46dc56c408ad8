"""Logits of a model at its exported weights: the float32 graph the audit runs, and the graph as deployed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx

from . import graph as G
from .errors import ModelError
from .progress import Progress
from .runtime import batch_feeds, batch_spans, feature_arrays, make_session, pad_batch, resolve_provider, run_batch_size

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model

__all__ = ["predict_logits", "deployed_logits"]


def predict_logits(model: Model, data: Dataset | np.ndarray | Mapping[str, np.ndarray], *, batch_size: int = 256,
                   provider: str = "auto", progress: bool | None = False) -> np.ndarray:
    """Logits ``[N, K]`` (float32) of the samples at the exported weights.

    Parameters
    ----------
    model : Model
    data : Dataset, ndarray or mapping of str to ndarray
        Samples: a data set (its labels are not used), the samples of a one-input model,
        or arrays by input name.
    batch_size : int, default=256
    provider : {"auto", "cuda", "cpu"}, default="auto"
    progress : bool, optional

    Notes
    -----
    Logits as docs/concepts.md, "Setting" reads them: the input of a final Softmax, the
    flattened output, ``log max(p, 1e-12)`` of probabilities, ``[0, z]`` for a sigmoid.
    A model with a batch fixed in the graph is run that many samples at a time.
    """
    device = resolve_provider(provider)
    session = make_session(G.evaluation_graph(model, with_loss=False), device, config=model.session_config)
    bs = run_batch_size(model, batch_size)
    features = feature_arrays(model, data)
    n = len(next(iter(features.values())))
    out = np.empty((n, model.n_classes), dtype=np.float32)
    spans = batch_spans(n, bs)
    with Progress(len(spans), "predicting", enabled=progress) as bar:
        for (s, e), feeds in zip(spans, batch_feeds(model, features, spans, bs, "cpu")):
            z = session.run_with_ort_values([G.LOGITS], feeds)[0].numpy()
            out[s:e] = z[: e - s]
            bar.advance()
    return out


def deployed_logits(model: Model, data: Dataset, *, batch_size: int = 256, provider: str = "auto") -> np.ndarray:
    """Logits ``[N, K]`` of the graph as exported, for a model audited through its float32 twin.

    The deployed graph (:attr:`auditor.model.Model.deployed`: float16 or quantised) runs as
    is, with its own input types; its logits tensor is read as :func:`predict_logits`
    reads the twin's and returned in float64.

    Raises
    ------
    ModelError
        The model has no deployed graph (it was float32), or ONNX Runtime cannot run it.
    """
    if model.deployed is None:
        raise ModelError(f"'{model.path}' is a float32 model: it has no separate deployed graph")
    m = onnx.ModelProto()
    m.CopyFrom(model.deployed)
    m.ir_version = min(m.ir_version, G.MAX_IR_VERSION)
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(model.logits_name))
    session = make_session(m, resolve_provider(provider))
    types = {i.name: i.type for i in session.get_inputs()}
    features = feature_arrays(model, data)
    n = len(next(iter(features.values())))
    bs = run_batch_size(model, batch_size)
    chunks = []
    for s, e in batch_spans(n, bs):
        feeds = {name: pad_batch(a[s:e], bs) if model.fixed_batch else a[s:e] for name, a in features.items()}
        feeds = {name: v.astype(np.float16) if types.get(name) == "tensor(float16)" else v for name, v in feeds.items()}
        z = np.asarray(session.run([model.logits_name], feeds)[0], dtype=np.float64)
        chunks.append(z.reshape(z.shape[0], -1)[: e - s])
    z = np.concatenate(chunks)
    if model.logits_kind == "probabilities":
        return np.log(np.maximum(z, 1e-12))
    if model.logits_kind == "sigmoid":
        return np.concatenate([np.zeros_like(z), z], axis=1)
    return z
