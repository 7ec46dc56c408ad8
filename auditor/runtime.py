"""ONNX Runtime sessions, providers and IOBinding; the only module that opens sessions.

One evaluation path serves every device: data, labels and directions are ``OrtValue``s
bound through IOBinding, on the CUDA device when the CUDA provider really runs and in host
memory otherwise, so the tests exercise the same code the GPU runs.

Two ways to evaluate the model at perturbed weights ``θ* + Σ_j c_j d_j``
(:class:`Evaluator`):

- ``"inputs"``: one session of :func:`auditor.graph.perturbation_graph`; the directions
  are bound once per ego class and only the scalars ``c_j`` change per step. Nothing is
  rebuilt and the weights never leave the device.
- ``"rebuild"``: one new session per step with the perturbed weights as initializers.
  On CPU this can be faster, since ONNX Runtime pre-packs constant weights
  (measured in benchmarks/RESULTS.md). The session is made from the serialised graph without weights plus
  the serialised new initializers (protobuf merges concatenated messages), so no model
  copy is made per step. Weights are real initializers, not ``add_initializer``
  overrides, which ONNX Runtime may silently ignore for Conv weights.

``strategy="auto"`` times both on the first batches and keeps the faster; the choice and
the timings are recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from . import graph as G
from .errors import ModelError, OptionError

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model

__all__ = [
    "resolve_provider",
    "make_session",
    "run_once",
    "batch_spans",
    "pad_batch",
    "run_batch_size",
    "feature_arrays",
    "batch_feeds",
    "Evaluator",
    "StepStats",
    "PROVIDERS",
]

PROVIDERS = ("auto", "cuda", "cpu")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"

ort.set_default_logger_severity(3)  # errors only: no wall of warnings on CPU-only hosts


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Mute C-level stdout/stderr: the CUDA probe's loader messages are not for users."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@functools.lru_cache(maxsize=1)
def _cuda_works() -> bool:
    """True when a session on the CUDA provider really runs on the GPU."""
    if _CUDA not in ort.get_available_providers():
        return False
    try:  # no NVIDIA driver: no GPU, and no need to ask ONNX Runtime
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    probe = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])], "probe",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)
    try:
        with _silenced():
            if hasattr(ort, "preload_dlls"):
                try:
                    ort.preload_dlls()
                except Exception:  # missing CUDA libraries: the session below says no
                    pass
            session = ort.InferenceSession(probe.SerializeToString(), options, providers=[_CUDA, _CPU])
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(3)
    return _CUDA in session.get_providers()


def resolve_provider(provider: str = "auto") -> str:
    """``"cuda"`` or ``"cpu"``: the device that will really run.

    ``"auto"`` takes CUDA when a session on it works and CPU otherwise, quietly.
    ``"cuda"`` on a host where it does not work is an error.
    """
    if provider not in PROVIDERS:
        raise OptionError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if provider == "cpu":
        return "cpu"
    if _cuda_works():
        return "cuda"
    if provider == "cuda":
        raise OptionError("the CUDA provider does not work on this host (no GPU, or CUDA 13 / cuDNN 9 "
                          "libraries missing: pip install 'onnxruntime-gpu[cuda,cudnn]'); use "
                          "--device cpu or --device auto")
    return "cpu"


def make_session(model: onnx.ModelProto | bytes, device: str, *, threads: int = 0,
                 optimize: bool = True, config: Mapping[str, str] | None = None) -> ort.InferenceSession:
    """A session on ``device`` ("cuda" or "cpu"); logs only errors.

    ``config`` holds session config entries (:attr:`auditor.model.Model.session_config`:
    a quantised model's twin must keep its Q/DQ nodes op by op).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = [_CUDA, _CPU] if device == "cuda" else [_CPU]
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=providers)
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.InvalidArgument
            ) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"ONNX Runtime cannot run this model ({first[:300]}); check that it loads with "
                         "onnxruntime.InferenceSession and uses standard ONNX ops") from err


def run_once(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], output: str) -> np.ndarray:
    """Evaluate one tensor of a model on CPU (for shape discovery)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = min(m.ir_version, G.MAX_IR_VERSION)
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(output))
    return np.asarray(make_session(m, "cpu").run([output], dict(feeds))[0])


def _device_args(device: str) -> tuple[str, int]:
    return ("cuda", 0) if device == "cuda" else ("cpu", 0)


def _to_device(array: np.ndarray, device: str) -> ort.OrtValue:
    kind, index = _device_args(device)
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), kind, index)


def batch_spans(n: int, batch: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch, n)) for s in range(0, n, batch)]


def pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    pad = np.zeros((size - len(x), *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


def run_batch_size(model: Model, batch_size: int) -> int:
    if batch_size < 1:
        raise OptionError(f"batch size must be >= 1, got {batch_size}")
    return int(model.fixed_batch) if model.fixed_batch else int(batch_size)


def feature_arrays(model: Model, data: Dataset | np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's inputs from a data set, one array, or arrays by name (checked once)."""
    from .data import Dataset, check_features

    if isinstance(data, Dataset):
        if data.checked_for == model.signature:
            return dict(data.features)
        return check_features(data.features, model)[0]
    arrays = dict(data) if isinstance(data, Mapping) else {Dataset.UNNAMED: np.asarray(data)}
    return check_features(Dataset(arrays, np.zeros(len(next(iter(arrays.values()))), np.int64)).features,
                          model)[0]


def batch_feeds(model: Model, features: Mapping[str, np.ndarray], spans: Sequence[tuple[int, int]],
                 batch: int, device: str) -> list[dict[str, ort.OrtValue]]:
    """Each batch's inputs as device values; a fixed-batch model gets zero-padded batches."""
    fixed = bool(model.fixed_batch)
    return [{name: _to_device(pad_batch(a[s:e], batch) if fixed else a[s:e], device) for name, a in features.items()}
            for s, e in spans]


@dataclass(frozen=True)
class StepStats:
    """Per-class sums of one pass over the data at one weight setting.

    Attributes
    ----------
    loss_sum : ndarray of shape (K,), float64
        Σ of per-sample cross-entropy over each true class.
    count : ndarray of shape (K,), int64
        Samples per true class.
    confusion : ndarray of shape (K, K), int64
        ``confusion[c, k]``: samples of class c predicted as k.
    predictions : ndarray of shape (N,), int64, or None
        Each sample's predicted class, when asked for (``evaluate(..., keep_predictions=True)``).
    soft_confusion : ndarray of shape (K, K), float64, or None
        ``soft_confusion[c, k] = Σ_{i∈D_c} p_k(x_i)``, the softmax probabilities summed by
        true class (rows sum to the class counts); only when the pass was asked for it.
    """

    loss_sum: np.ndarray
    count: np.ndarray
    confusion: np.ndarray
    predictions: np.ndarray | None = None
    soft_confusion: np.ndarray | None = None

    @classmethod
    def from_logits(cls, logits: np.ndarray, y: np.ndarray, n_classes: int) -> StepStats:
        """The same sums from logits ``[N, K]`` (float64 cross-entropy; argmax ties to the lowest index),
        with the predictions and the softmax sums."""
        z = np.asarray(logits, dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        logp = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
        loss = -logp[np.arange(len(y)), y]
        pred = z.argmax(axis=1)
        k = n_classes
        confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
        soft = np.zeros((k, k))
        np.add.at(soft, y, np.exp(logp))
        return cls(loss_sum=np.bincount(y, weights=loss, minlength=k), count=confusion.sum(axis=1),
                   confusion=confusion.astype(np.int64), predictions=pred.astype(np.int64), soft_confusion=soft)

    @property
    def loss(self) -> np.ndarray:
        """Per-class mean loss ``L_c``; NaN for an absent class."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.loss_sum / np.maximum(self.count, 1), np.nan)

    @property
    def accuracy(self) -> np.ndarray:
        """Per-class accuracy ``A_c``; NaN for an absent class."""
        correct = np.diagonal(self.confusion).astype(np.float64)
        return np.where(self.count > 0, correct / np.maximum(self.count, 1), np.nan)

    @property
    def flow(self) -> np.ndarray:
        """Row-normalised confusion: share of class c' predicted as k; NaN rows for absent classes."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.confusion / self.count[:, None].astype(np.float64)


class Evaluator:
    """Per-class loss, accuracy and confusion of a data set at ``θ* + Σ_j c_j d_j``.

    Parameters
    ----------
    model : Model
    data : Dataset
        The samples and labels (checked here unless already checked for ``model``).
    provider : {"auto", "cuda", "cpu"}, default="auto"
    batch_size : int, default=256
    n_directions : int, default=1
        How many directions are combined per step (1 for the CCT, 2 for a plane).
    strategy : {"auto", "inputs", "rebuild"}, default="auto"
        See the module docstring.
    """

    def __init__(self, model: Model, data: Dataset, *, provider: str = "auto",
                 batch_size: int = 256, n_directions: int = 1, strategy: str = "auto") -> None:
        from .data import check_dataset

        if strategy not in ("auto", "inputs", "rebuild"):
            raise OptionError(f"unknown strategy {strategy!r}; choose auto, inputs or rebuild")
        self.model = model
        self.device = resolve_provider(provider)
        self.n_directions = n_directions
        self.n_classes = int(model.n_classes)
        self.batch_size = run_batch_size(model, batch_size)
        self.base = model.weights()
        data = check_dataset(data, model)
        self.y = np.asarray(data.y, dtype=np.int64)
        self.spans = batch_spans(len(self.y), self.batch_size)
        # Data and labels live on the device for the whole run.
        self._feeds = batch_feeds(model, {**data.features, G.LABELS: self.y}, self.spans, self.batch_size,
                                   self.device)
        self._directions: list[dict[str, np.ndarray]] = []
        self._bound: dict[str, ort.OrtValue] = {}
        self._inputs_session: ort.InferenceSession | None = None
        self._shell: bytes | None = None
        self.timings: dict[str, float] = {}
        self.strategy = strategy
        self.n_evaluations = 0  # calls of evaluate(); the strategy probe is not counted
        self.samples_evaluated = 0

    # -- sessions ---------------------------------------------------------------------
    def _session_inputs(self) -> ort.InferenceSession:
        if self._inputs_session is None:
            self._inputs_session = make_session(G.perturbation_graph(self.model, self.n_directions),
                                                self.device, config=self.model.session_config)
        return self._inputs_session

    def _session_rebuild(self, coefs: Sequence[float]) -> ort.InferenceSession:
        if self._shell is None:
            self._shell = G.evaluation_graph(self.model, keep_weights=False).SerializeToString()
        weights = self.perturbed_weights(coefs)
        extra = onnx.ModelProto(graph=onnx.GraphProto(initializer=[
            numpy_helper.from_array(v, name) for name, v in weights.items()]))
        return make_session(self._shell + extra.SerializeToString(), self.device, config=self.model.session_config)

    def perturbed_weights(self, coefs: Sequence[float]) -> dict[str, np.ndarray]:
        """``θ* + Σ_j c_j d_j`` as float32 arrays, by parameter name."""
        out = {}
        for name, base in self.base.items():
            w = base.copy()
            for c, d in zip(coefs, self._directions):
                if c and name in d:
                    w += np.float32(c) * d[name]
            out[name] = w
        return out

    # -- directions -------------------------------------------------------------------
    def set_directions(self, directions: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Use these directions (one mapping name -> array per j) for the next steps.

        A parameter missing from a mapping is a zero direction.
        """
        if len(directions) != self.n_directions:
            raise OptionError(f"expected {self.n_directions} directions, got {len(directions)}")
        self._directions = [
            {p.name: np.ascontiguousarray(np.asarray(d[p.name], dtype=np.float32)) for p in self.model.parameters
             if p.name in d} for d in directions]
        self._bound = {}

    def _bind_directions(self) -> dict[str, ort.OrtValue]:
        if not self._bound:
            for j in range(self.n_directions):
                d = self._directions[j] if j < len(self._directions) else {}
                for p in self.model.parameters:
                    value = d.get(p.name)
                    if value is None:
                        value = np.zeros(p.shape, dtype=np.float32)
                    self._bound[G.direction_input(j, p.name)] = _to_device(value, self.device)
        return self._bound

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, coefs: Sequence[float] | None = None, *, limit: int | None = None,
                 keep_predictions: bool = False, soft: bool = False) -> StepStats:
        """One pass over the data (or its first ``limit`` batches) at the given coefficients.

        With ``keep_predictions`` the result also holds every sample's predicted class. With
        ``soft=True`` the pass also sums the softmax probabilities by true class
        (:attr:`StepStats.soft_confusion`). They come from the log-probabilities the loss
        is computed from (an extra output of the same graph), so this costs no extra pass,
        only their copy to the host and one sum per batch (see
        ``benchmarks/bench_soft_confusion.py``); the audit asks for both on the unperturbed
        pass only.
        """
        coefs = list(coefs) if coefs is not None else [0.0] * self.n_directions
        if len(coefs) != self.n_directions:
            raise OptionError(f"expected {self.n_directions} coefficients, got {len(coefs)}")
        if self.strategy == "auto":
            self._choose_strategy()
        if self.strategy == "inputs":
            session = self._session_inputs()
            fixed = dict(self._bind_directions())
            for j, c in enumerate(coefs):
                fixed[G.coefficient_input(j)] = _to_device(np.array(c, dtype=np.float32), "cpu")
        else:
            session = self._session_rebuild(coefs)
            fixed = {}
        stats = self._run(session, fixed, limit, keep_predictions, soft)
        self.n_evaluations += 1
        self.samples_evaluated += int(stats.count.sum())
        return stats

    def _run(self, session: ort.InferenceSession, fixed: Mapping[str, ort.OrtValue],
             limit: int | None, keep_predictions: bool = False, soft: bool = False) -> StepStats:
        k = self.n_classes
        loss_sum = np.zeros(k, dtype=np.float64)
        confusion = np.zeros(k * k, dtype=np.int64)
        kept: list[np.ndarray] = []
        soft_sum = np.zeros(k * k, dtype=np.float64) if soft else None
        columns = np.arange(k)
        binding = session.io_binding()
        for name, value in fixed.items():
            binding.bind_ortvalue_input(name, value)
        spans = self.spans if limit is None else self.spans[:limit]
        for b, (s, e) in enumerate(spans):
            for name, value in self._feeds[b].items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_output(G.LOSS, "cpu")
            binding.bind_output(G.PREDICTION, "cpu")
            if soft_sum is not None:
                binding.bind_output(G.LOG_PROBABILITIES, "cpu")
            session.run_with_iobinding(binding)
            outputs = [v.numpy() for v in binding.get_outputs()]
            loss, pred = outputs[0], outputs[1]
            n = e - s
            y = self.y[s:e]
            loss_sum += np.bincount(y, weights=loss[:n].astype(np.float64), minlength=k)
            confusion += np.bincount(y * k + pred[:n], minlength=k * k)
            if keep_predictions:
                kept.append(pred[:n].astype(np.int64))
            if soft_sum is not None:
                p = np.exp(outputs[2][:n].astype(np.float64))
                soft_sum += np.bincount((y[:, None] * k + columns).ravel(), weights=p.ravel(), minlength=k * k)
        square = confusion.reshape(k, k)
        return StepStats(loss_sum=loss_sum, count=square.sum(axis=1), confusion=square,
                         predictions=np.concatenate(kept) if keep_predictions else None,
                         soft_confusion=None if soft_sum is None else soft_sum.reshape(k, k))

    def _choose_strategy(self) -> None:
        """Estimate one full step of each strategy from the first batches; keep the faster.

        A step costs (session creation, for "rebuild") + (time per batch) x (batches), so
        both parts are timed separately and extrapolated to the whole data set.
        """
        probe = [1e-3] * self.n_directions
        limit = min(len(self.spans), 3)
        fixed = dict(self._bind_directions())
        for j, c in enumerate(probe):
            fixed[G.coefficient_input(j)] = _to_device(np.array(c, dtype=np.float32), "cpu")
        session = self._session_inputs()
        self._run(session, fixed, 1)  # warm-up
        _, run_inputs = timed(lambda: self._run(session, fixed, limit))
        self._session_rebuild(probe)  # warm-up (first serialisation)
        rebuilt, create = timed(lambda: self._session_rebuild(probe))
        self._run(rebuilt, {}, 1)
        _, run_rebuild = timed(lambda: self._run(rebuilt, {}, limit))
        scale = len(self.spans) / limit
        estimate = {"inputs": run_inputs * scale, "rebuild": create + run_rebuild * scale}
        self.timings = {f"estimated_step_{k}_s": v for k, v in estimate.items()}
        self.timings["session_creation_s"] = create
        self.strategy = min(estimate, key=lambda s: estimate[s])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start
