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
  (measured in benchmarks/RESULTS.md). The session is made from a graph serialised once
  with every weight declared as external data, and each step hands ONNX Runtime the new
  arrays in memory (:func:`auditor.strategy.external_weights_shell`): no protobuf of the
  weights is built per step. They are real initializers, not ``add_initializer``
  overrides, which ONNX Runtime may silently ignore for Conv weights.

Evaluators made by :meth:`Evaluator.restricted` (a subset of the samples, another number
of directions) share their parent's sessions and the probe's measured costs.

``strategy="auto"`` times both on the first batches and keeps the faster; the choice and
the timings are recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort

from . import graph as G
from .batching import _to_device as _to_device
from .batching import batch_feeds, batch_spans, feature_arrays, pad_batch, run_batch_size
from .errors import ModelError, OptionError
from .step_stats import StepStats
from .strategy import StrategyCosts, external_weights_shell

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model

__all__ = ["resolve_provider", "make_session", "run_once", "batch_spans", "pad_batch", "run_batch_size",
           "feature_arrays", "batch_feeds", "Evaluator", "StepStats", "StrategyCosts", "PROVIDERS"]

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
                 optimize: bool = True, config: Mapping[str, str] | None = None,
                 memory_pattern: bool = True) -> ort.InferenceSession:
    """A session on ``device`` ("cuda" or "cpu"); logs only errors.

    ``config`` holds session config entries (:attr:`auditor.model.Model.session_config`:
    a quantised model's twin must keep its Q/DQ nodes op by op). ``memory_pattern=False``
    turns off ONNX Runtime's planned block per run: tensors then come from the arena one by
    one, which is as fast once warm and needs one warm-up run instead of two.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_mem_pattern = memory_pattern
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


class _Sessions:
    """What evaluators of one model on one device share: sessions that do not depend on the data."""

    def __init__(self, model: Model, device: str) -> None:
        self.model, self.device = model, device
        self.base = model.weights()
        self.inputs: dict[int, ort.InferenceSession] = {}
        self.shell: bytes | None = None
        self.costs: StrategyCosts | None = None
        self.evaluations = self.samples = 0  # of every evaluator sharing these sessions

    def inputs_session(self, n_directions: int) -> ort.InferenceSession:
        if n_directions not in self.inputs:
            self.inputs[n_directions] = make_session(G.perturbation_graph(self.model, n_directions), self.device,
                                                     config=self.model.session_config)
        return self.inputs[n_directions]

    def rebuild_session(self, weights: Mapping[str, np.ndarray]) -> tuple[ort.InferenceSession, list[ort.OrtValue]]:
        """A session whose initializers are ``weights``, handed over in memory as external data.

        The graph is serialised once without the weights; each step passes the new values
        as ``OrtValue``s, so no protobuf of the weights is built (half of a step's overhead
        at 11M parameters). The values must outlive the session: the caller keeps them.
        """
        if self.shell is None:
            self.shell = external_weights_shell(self.model)
        names = list(weights)
        values = [ort.OrtValue.ortvalue_from_numpy(weights[n]) for n in names]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        for key, value in (self.model.session_config or {}).items():
            options.add_session_config_entry(key, value)
        options.add_external_initializers(names, values)
        providers = [_CUDA, _CPU] if self.device == "cuda" else [_CPU]
        return ort.InferenceSession(self.shell, options, providers=providers), values


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

    Attributes
    ----------
    n_evaluations, samples_evaluated : int
        Calls of :meth:`evaluate` and the samples they ran (the strategy probe not included).
    costs : StrategyCosts or None
        What the strategy probe measured (``strategy="auto"``, after the first evaluation).
    """

    def __init__(self, model: Model, data: Dataset, *, provider: str = "auto",
                 batch_size: int = 256, n_directions: int = 1, strategy: str = "auto",
                 _sessions: _Sessions | None = None) -> None:  # _sessions: see restricted()
        from .data import check_dataset

        if strategy not in ("auto", "inputs", "rebuild"):
            raise OptionError(f"unknown strategy {strategy!r}; choose auto, inputs or rebuild")
        self.model = model
        self.device = resolve_provider(provider) if _sessions is None else _sessions.device
        self._sessions = _sessions if _sessions is not None else _Sessions(model, self.device)
        self.n_directions = n_directions
        self.n_classes = int(model.n_classes)
        self.batch_size = run_batch_size(model, batch_size)
        self.base = self._sessions.base
        self.data = check_dataset(data, model)
        self.y = np.asarray(self.data.y, dtype=np.int64)
        self.spans = batch_spans(len(self.y), self.batch_size)
        # Data and labels live on the device for the whole run.
        self._feeds = batch_feeds(model, {**self.data.features, G.LABELS: self.y}, self.spans, self.batch_size,
                                   self.device)
        self._directions: list[dict[str, np.ndarray]] = []
        self._bound: dict[str, ort.OrtValue] = {}
        self._binding: ort.IOBinding | None = None  # the inputs session's, directions bound once
        self._alive: list[ort.OrtValue] = []  # the rebuilt session's weights
        self.timings: dict[str, float] = {}
        self.strategy = strategy
        self._probed = strategy == "auto"  # restricted() re-chooses by the measured costs
        self._counted = True  # in the shared tally (not the probe's own runs)
        self.n_evaluations = 0  # calls of evaluate(); the strategy probe is not counted
        self.samples_evaluated = 0

    @property
    def costs(self) -> StrategyCosts | None:
        return self._sessions.costs

    @property
    def tally(self) -> tuple[int, int]:
        """``(evaluations, samples)`` of this evaluator and every one made from it by :meth:`restricted`."""
        return self._sessions.evaluations, self._sessions.samples

    def restricted(self, indices: np.ndarray, *, n_directions: int | None = None,
                   strategy: str | None = None) -> Evaluator:
        """An evaluator over the samples at ``indices`` sharing this one's sessions.

        Its strategy is ``strategy`` when given, else this one's when that was given; after a
        probe, the faster one for the subset's size by the measured :class:`StrategyCosts` (a
        small subset may not be worth a session build per step).
        """
        child = Evaluator(self.model, self.data.subset(indices), batch_size=self.batch_size,
                          n_directions=self.n_directions if n_directions is None else n_directions,
                          strategy=strategy or self.strategy, _sessions=self._sessions)
        if strategy is None and self._probed and self.costs is not None:
            child.strategy, child._probed = self.costs.faster(len(child.y)), True
        return child

    # -- sessions ---------------------------------------------------------------------
    def _inputs_binding(self) -> tuple[ort.InferenceSession, ort.IOBinding]:
        session = self._sessions.inputs_session(self.n_directions)
        if self._binding is None:
            self._binding = session.io_binding()
            self._bound = {}
        if not self._bound:
            for name, value in self._bind_directions().items():
                self._binding.bind_ortvalue_input(name, value)
        return session, self._binding

    def perturbed_weights(self, coefs: Sequence[float]) -> dict[str, np.ndarray]:
        """``θ* + Σ_j c_j d_j`` as float32 arrays, by parameter name."""
        out = {}
        for name, base in self.base.items():
            terms = [(c, d[name]) for c, d in zip(coefs, self._directions) if c and name in d]
            if not terms:
                out[name] = base.copy()
                continue
            w = terms[0][1] * np.float32(terms[0][0])
            for c, d in terms[1:]:
                w += np.float32(c) * d
            w += base
            out[name] = w
        return out

    def _rebuilt(self, coefs: Sequence[float]) -> tuple[ort.InferenceSession, ort.IOBinding]:
        self._alive = []  # the previous step's session is gone; its weights may go too
        session, self._alive = self._sessions.rebuild_session(self.perturbed_weights(coefs))
        return session, session.io_binding()

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

    def _coefficients(self, binding: ort.IOBinding, coefs: Sequence[float]) -> None:
        for j, c in enumerate(coefs):
            binding.bind_ortvalue_input(G.coefficient_input(j), _to_device(np.array(c, dtype=np.float32), "cpu"))

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
            session, binding = self._inputs_binding()
            self._coefficients(binding, coefs)
        else:
            session, binding = self._rebuilt(coefs)
        stats = self._run(session, binding, limit, keep_predictions=keep_predictions, soft=soft)
        self.n_evaluations += 1
        self.samples_evaluated += int(stats.count.sum())
        if self._counted:
            self._sessions.evaluations += 1
            self._sessions.samples += int(stats.count.sum())
        return stats

    def _run(self, session: ort.InferenceSession, binding: ort.IOBinding, limit: int | None,
             options: ort.RunOptions | None = None, *, keep_predictions: bool = False,
             soft: bool = False) -> StepStats:
        k = self.n_classes
        loss_sum = np.zeros(k, dtype=np.float64)
        confusion = np.zeros(k * k, dtype=np.int64)
        kept: list[np.ndarray] = []
        soft_sum = np.zeros(k * k, dtype=np.float64) if soft else None
        columns = np.arange(k)
        names = [G.LOSS, G.PREDICTION] + ([G.LOG_PROBABILITIES] if soft else [])
        spans = self.spans if limit is None else self.spans[:limit]
        for b, (s, e) in enumerate(spans):
            for name, value in self._feeds[b].items():
                binding.bind_ortvalue_input(name, value)
            binding.clear_binding_outputs()  # the binding is reused: a soft pass bound one more
            for name in names:  # unallocated: the last batch may be shorter
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding, options)
            outputs = binding.copy_outputs_to_cpu()
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

    def _timed_run(self, session: ort.InferenceSession, binding: ort.IOBinding, limit: int,
                   deadline: float) -> float | None:
        """Seconds of a run over the first ``limit`` batches; None if stopped after ``deadline`` seconds."""
        options = ort.RunOptions()
        timer = threading.Timer(deadline, lambda: setattr(options, "terminate", True))
        timer.start()
        start = time.perf_counter()
        try:
            self._run(session, binding, limit, options)
        except RuntimeError:
            if options.terminate:
                return None
            raise
        finally:
            timer.cancel()
        return time.perf_counter() - start

    def _choose_strategy(self) -> None:
        """Estimate one full step of each strategy from the first batches; keep the faster.

        A rebuilt step costs a session build plus a first run on the new session, so a
        session is built with perturbed weights first, and timed. When a whole step with
        weights as inputs (estimated from a warm run of the first batch, :meth:`_warm_batch_s`)
        costs less than the build alone, rebuilding cannot win
        at any size and its run is not timed: a small model's probe costs a few runs. Else
        the rebuilt session runs the first batches (as every step will run them); then the
        weights-as-inputs session runs the same batches, stopped as soon as it is slower
        than the rebuilt step: on a large CPU model it is several times slower, and timing
        it in full would cost more than the steps the choice saves. Its first run gets twice
        that time, as it includes the warm-up (on CUDA an untimed warm-up comes first); a
        second, warm run decides when the first was close.
        """
        start = time.perf_counter()
        probe = [1e-3] * self.n_directions
        (session, binding), create = timed(lambda: self._rebuilt(probe))
        (inputs_session, inputs_binding), inputs_creation = timed(self._inputs_binding)
        self._coefficients(inputs_binding, probe)
        limit = min(len(self.spans), 3)
        if self.device == "cuda":  # the first run tunes kernels: an untimed warm-up
            self._run(inputs_session, inputs_binding, limit)
        first = self._warm_batch_s(inputs_session, inputs_binding, create)
        if first is not None and first * len(self.spans) < create:
            overhead = min(self._one_sample("inputs"), first)
            per_sample = (first - overhead) / self.spans[0][1]
            costs = StrategyCosts(creation_s=create, inputs_per_sample_s=per_sample, rebuild_per_sample_s=per_sample,
                                  inputs_overhead_s=overhead, inputs_creation_s=inputs_creation,
                                  rebuild_overhead_s=create + overhead, rebuild_timed=False)
        else:
            costs = self._time_both((session, binding, create), (inputs_session, inputs_binding, inputs_creation),
                                    probe, limit)
        self._alive = []  # the probe's rebuilt session may go
        self._sessions.costs = costs
        inputs_step, rebuild_step = costs.estimate("inputs", len(self.y)), costs.estimate("rebuild", len(self.y))
        self.timings = {"estimated_step_inputs_s": inputs_step, "estimated_step_rebuild_s": rebuild_step,
                        "session_creation_s": costs.creation_s, "rebuild_overhead_s": costs.rebuild_overhead_s,
                        "inputs_overhead_s": costs.inputs_overhead_s, "inputs_stopped": float(costs.inputs_stopped),
                        "inputs_creation_s": costs.inputs_creation_s, "rebuild_timed": float(costs.rebuild_timed),
                        "probe_s": time.perf_counter() - start}
        self.strategy = "rebuild" if costs.inputs_stopped or inputs_step >= rebuild_step else "inputs"

    def _warm_batch_s(self, session: ort.InferenceSession, binding: ort.IOBinding, create: float) -> float | None:
        """Seconds of a warm run of the first batch with weights as inputs, or None when a whole step
        would cost more than ``create``. A first (cold) run is stopped at twice that; the warm one
        runs without a watchdog thread, whose start would weigh on a sub-millisecond timing."""
        cold = self._timed_run(session, binding, 1, 2 * create)
        if cold is None or cold * len(self.spans) >= 2 * create:
            return None
        return timed(lambda: self._run(session, binding, 1))[1]

    def _time_both(self, rebuilt: tuple[ort.InferenceSession, ort.IOBinding, float],
                   inputs: tuple[ort.InferenceSession, ort.IOBinding, float], probe: list[float],
                   limit: int) -> StrategyCosts:
        """The probe's costs when a rebuilt step may win: both strategies timed on the first batches."""
        session, binding, create = rebuilt
        inputs_session, inputs_binding, inputs_creation = inputs
        samples = self.spans[limit - 1][1]
        _, run_rebuild = timed(lambda: self._run(session, binding, limit))
        scale = len(self.spans) / limit
        break_even = create / scale + run_rebuild  # inputs wins below this, for `limit` batches
        run_inputs = self._timed_run(inputs_session, inputs_binding, limit, 2 * break_even)
        if run_inputs is not None and run_inputs >= break_even:
            run_inputs = self._timed_run(inputs_session, inputs_binding, limit, break_even)
        stopped = run_inputs is None
        overhead = 0.0 if run_inputs is None else min(self._one_sample("inputs"), run_inputs)
        per_sample = ((break_even if run_inputs is None else run_inputs) - overhead) / samples
        rebuilt_one = min(self._one_sample("rebuild"), create + run_rebuild)
        return StrategyCosts(creation_s=create, inputs_per_sample_s=per_sample,
                             rebuild_per_sample_s=(create + run_rebuild - rebuilt_one) / samples,
                             inputs_stopped=stopped, inputs_overhead_s=overhead, inputs_creation_s=inputs_creation,
                             rebuild_overhead_s=rebuilt_one)

    def _one_sample(self, strategy: str) -> float:
        """Seconds of a one-sample evaluation: what an evaluation costs besides its samples.

        With weights as inputs: the median of 5 after a warm-up (the median, not the best:
        on a busy machine a call's typical cost is what many small evaluations add up to).
        Rebuilt: one step, a session build and a first run, as every rebuilt step is.
        """
        one = self.restricted(np.arange(1))
        one.strategy, one._counted = strategy, False
        one.set_directions(self._directions or [{}] * self.n_directions)
        coefs = [1e-3] * self.n_directions
        if strategy == "rebuild":
            return timed(lambda: one.evaluate(coefs))[1]
        one.evaluate(coefs)
        return float(np.median([timed(lambda: one.evaluate(coefs))[1] for _ in range(5)]))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start
