"""The whole audit as named stages: data, gradients and directions, CCT, interference, 2-D models.

:func:`run_audit` runs them in order and returns an :class:`~auditor.audit.AuditResult`;
the gate and a label-dancing analysis are part of it, so a Python caller gets what the
command line writes. Each stage is a function of the :class:`AuditRun` state, timed by
:meth:`AuditRun.stage`. The stages hand their units of work to an executor (in this
process by default, or on Ray) and may keep finished units in a checkpoint
(:mod:`auditor.audit.tasks`): one code path, the same numbers either way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditor.agreement import ScoreAgreement, score_agreement
from auditor.budget import GRADIENT_PASSES, AuditCost, Speed, StageCost, fmt_seconds, plan_audit
from auditor.cct import CrossClassTestResult, plan_cct
from auditor.confusion import ErrorShare, error_share, pair_confusion
from auditor.dancing import DanceAnalysis, dance_analysis
from auditor.data import Dataset, check_dataset
from auditor.differentiable import check_gradient_support
from auditor.errors import OptionError
from auditor.examples import PairExamples, confused_examples
from auditor.execution import BasePass, Checkpoint, Executor, Payload, SerialExecutor, Task
from auditor.gate import DEFAULT_CHECKS, Check, evaluate_gate
from auditor.gradients import ClassGradients, EgoDirectionStream
from auditor.inference import deployed_logits, predict_logits
from auditor.interference import InterferenceResult, interference, ranked_pairs
from auditor.landscape import InterferenceModel, flatness, interference_model
from auditor.model import Model
from auditor.runtime import StepStats

from . import tasks
from .costing import PlaneCosts, with_actual
from .options import LARGE_K_CANDIDATES, MANY_CLASSES, AuditOptions
from .result import AuditResult, versions
from .twin_check import TwinCheck, twin_check

__all__ = ["run_audit", "select_candidates", "AuditRun", "SKETCH_DIM", "TOP_PAIRS_LISTED"]

#: Dimension of the count sketches that screen gradient conflicts when K is large.
SKETCH_DIM = 2048
#: Pairs listed by each ranking in results.json (at least ``options.pairs``).
TOP_PAIRS_LISTED = 10
#: The gradient pass runs at most this many samples per batch.
MAX_GRADIENT_BATCH = 128
#: Confused pairs whose samples are kept for the report (thumbnails or texts).
EXAMPLE_PAIRS = 5


def _quiet(message: str) -> None:
    """The default log: say nothing."""


@dataclass
class AuditRun:
    """The state one audit's stages share: checked data, the executor, the unperturbed pass.

    Attributes
    ----------
    model : Model
    data, gradient_data : Dataset
        Checked audit data, and the set the gradients come from (``data`` unless given).
    options : AuditOptions
    device : str
        The provider every unit of work runs on ("cuda" or "cpu"), fixed by the unperturbed pass.
    executor : Executor
        Runs the units of work (its workers hold the evaluators).
    base : StepStats
        The unperturbed pass over ``data``, with the soft confusion (softmax
        probabilities summed by true class, fetched from the same pass).
    class_names : list of str
    strategy : str
        The perturbation strategy every worker uses, fixed by the unperturbed pass.
    strategy_timings : dict of str to float
        The ``"auto"`` strategy's probe, when it ran.
    checkpoint : Checkpoint or None
        Where finished cells are kept.
    timings : dict of str to float
    evaluations, samples : int
        Evaluations of the model made so far (one per StepStats a unit of work returned,
        read back from a checkpoint or computed) and the samples in them.
    speed : Speed or None
        The measured speed: seconds of one pass over the audit data.
    cost : AuditCost or None
        The plan (made before the CCT), and the 2-D models' design.
    actual : dict of str to StageCost
        Every stage's counted evaluations and seconds.
    """

    model: Model
    data: Dataset
    gradient_data: Dataset
    options: AuditOptions
    device: str
    executor: Executor
    base: StepStats
    class_names: list[str]
    strategy: str = "inputs"
    strategy_timings: Mapping[str, float] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    progress: bool | None = None
    log: Callable[[str], None] = _quiet
    timings: dict[str, float] = field(default_factory=dict)
    deployed: StepStats | None = None
    twin: TwinCheck | None = None
    evaluations: int = 0
    samples: int = 0
    speed: Speed | None = None
    cost: AuditCost | None = None
    actual: dict[str, StageCost] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def outside_cct_s(self) -> float:
        """Seconds of the audit so far spent outside the CCT and starting the workers: the other
        stages, checking the data, planning."""
        cct = self.actual.get("cct")
        return (time.perf_counter() - self.started - (cct.seconds if cct is not None else 0.0)
                - self.timings.get("start_workers_s", 0.0))

    def count(self, stats: Sequence[StepStats]) -> None:
        """Count evaluations a unit of work made (each StepStats is one pass over some samples)."""
        self.evaluations += len(stats)
        self.samples += sum(int(st.count.sum()) for st in stats)

    @property
    def reported(self) -> StepStats:
        """The base pass the report leads with: the deployed graph's when the model has a twin."""
        return self.deployed if self.deployed is not None else self.base

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage into ``timings[f"{name}_s"]`` and count its evaluations into ``actual``."""
        start, evaluations, samples = time.perf_counter(), self.evaluations, self.samples
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.timings[f"{name}_s"] = seconds
            self.actual[name] = StageCost(self.evaluations - evaluations, self.samples - samples, 0.0, seconds)

    def seconds_per_fpe(self) -> float:
        """The measured speed: the CCT's mean pass once it ran, the unperturbed pass's estimate before."""
        cct = self.actual.get("cct")
        if cct is not None and cct.evaluations:
            return cct.seconds / cct.evaluations
        return self.speed.pass_s if self.speed is not None else float("nan")


def start_run(model: Model, data: Dataset, options: AuditOptions, gradient_data: Dataset | None,
              progress: bool | None, log: Callable[[str], None], executor: Executor,
              checkpoint: str | os.PathLike[str] | None = None) -> AuditRun:
    """Check the data once, open the checkpoint, start the executor's workers and run the unperturbed pass.

    The unperturbed pass settles the provider and, for ``strategy="auto"``, the strategy;
    every later unit of work gets both, so all workers compute the same way. A resumed
    checkpoint brings the ones its first run settled on.
    """
    started = time.perf_counter()
    data = check_dataset(data, model)
    if gradient_data is not None:
        gradient_data = check_dataset(gradient_data, model, name="gradient data")
    if options.max_per_class:
        data = data.stratified(options.max_per_class)
        gradient_data = None if gradient_data is None else gradient_data.stratified(options.max_per_class)
    grad_set = gradient_data if gradient_data is not None else data
    provider, strategy, store = options.provider, options.strategy, None
    if checkpoint is not None:
        store = Checkpoint(checkpoint)
        fixed = store.open(tasks.fingerprint(model, data, grad_set, options))
        provider, strategy = fixed.get("provider", provider), fixed.get("strategy", strategy)
        if fixed:
            log(f"resuming from checkpoint {checkpoint}")
    start = time.perf_counter()
    executor.start(Payload(model, data, grad_set, options.batch_size))
    run_start = time.perf_counter()
    if executor.name != "serial":
        log(f"{getattr(executor, 'description', executor.name)}; workers started in {run_start - start:.1f} s")
    base = executor.call(Task("unperturbed pass", "base", (provider, strategy)))
    assert isinstance(base, BasePass)
    if store is not None:
        store.fix({"provider": base.device, "strategy": base.strategy})
    run = AuditRun(model, data, grad_set, options, base.device, executor, base.stats,
                   _class_names(data, grad_set, model), base.strategy,
                   {k: v for k, v in base.timings.items() if k != "base_pass_s"}, store, progress, log)
    if model.deployed is not None:  # an fp16/int8 export: base metrics are those of the graph as deployed
        log(f"base metrics of the deployed {model.precision} graph beside its float32 twin")
        run.twin, run.deployed = twin_check(
            model.precision, deployed_logits(model, data, batch_size=options.batch_size, provider=base.device),
            predict_logits(model, data, batch_size=options.batch_size, provider=base.device), data.y,
            model.n_classes)
    run.timings["start_workers_s"] = run_start - start
    run.started = started  # the data checks before the run existed count as time outside the CCT
    seconds = time.perf_counter() - run_start
    run.timings["forward_pass_s"] = seconds
    run.count([base.stats])
    run.actual["forward"] = StageCost(run.evaluations, run.samples, 0.0, seconds)
    # one pass at the chosen strategy: the probe's estimate or the unperturbed pass itself, whichever is less
    # (a probe's estimate from one batch of a sub-millisecond model is dominated by waking threads)
    base_s = run.timings["base_pass_s"] = float(base.timings.get("base_pass_s", seconds))
    pass_s = min(run.strategy_timings.get(f"estimated_step_{run.strategy}_s", seconds), base_s)
    run.speed = Speed(len(data), max(float(pass_s), 1e-9), run.strategy, _overhead(run))
    return run


def _overhead(run: AuditRun) -> float:
    """Seconds an evaluation costs whatever its size: under "rebuild" a step of one sample as the probe
    timed it (forming the weights, building the session, its first run), else one with weights as inputs."""
    t = run.strategy_timings
    if run.strategy == "rebuild":
        return float(t.get("rebuild_overhead_s", t.get("session_creation_s", 0.0)))
    return float(t.get("inputs_overhead_s", 0.0))


def _class_names(data: Dataset, other: Dataset, model: Model) -> list[str]:
    k = model.n_classes
    for d in (data, other):
        if d.class_names is not None and len(d.class_names) == k:
            return [str(n) for n in d.class_names]
    return [str(c) for c in range(k)]


def select_candidates(confusion: np.ndarray, conflict: np.ndarray | None,
                      n_pairs: int) -> tuple[list[int], dict[str, Any]]:
    """Ego classes for a large-K audit: the classes of the top pairs by confusion and conflict.

    Both rankings are cheap (one forward pass; one gradient pass). Returns the sorted
    classes and a description for results.json.
    """
    by_confusion = ranked_pairs(pair_confusion(confusion).astype(np.float64), n_pairs)
    by_conflict = ranked_pairs(conflict, n_pairs) if conflict is not None else []
    classes = sorted({c for a, b, _ in by_confusion + by_conflict for c in (a, b)})
    return classes, {"rule": f"classes of the top {n_pairs} pairs by confusion and by gradient conflict",
                     "by_confusion": [list(p) for p in by_confusion],
                     "by_conflict": [list(p) for p in by_conflict], "classes": classes}


@dataclass(frozen=True)
class _Gradients:
    gradients: ClassGradients
    directions: EgoDirectionStream
    ego_classes: list[int]
    candidates: dict[str, Any]
    screened_norms: Mapping[int, float]


def _screen_candidates(run: AuditRun, n_candidates: int) -> tuple[tuple[int, ...], dict[str, Any], dict[int, float]]:
    """Many classes: rank pairs by confusion and by an approximate gradient conflict (count
    sketches, K x SKETCH_DIM floats); the candidates' classes become the ego classes."""
    k = run.model.n_classes
    classes, sketches, norms = tasks.run_sketches(run, SKETCH_DIM, min(run.options.batch_size, MAX_GRADIENT_BATCH))
    approx = np.full((k, k), np.nan)
    lengths = np.linalg.norm(sketches, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (sketches @ sketches.T) / np.outer(lengths, lengths)
    idx = np.asarray(classes)
    approx[np.ix_(idx, idx)] = -cos
    np.fill_diagonal(approx, np.nan)
    chosen, candidates = select_candidates(run.base.confusion, approx, n_candidates)
    candidates["conflict_screen"] = f"count sketches of dimension {SKETCH_DIM} (approximate cosines)"
    return tuple(chosen), candidates, dict(zip(classes, norms.tolist()))


def gradient_stage(run: AuditRun) -> _Gradients:
    """Class gradients and ego directions (of the candidates only when K is large)."""
    options, k = run.options, run.model.n_classes
    n_candidates = options.candidates if options.candidates is not None else (
        LARGE_K_CANDIDATES if k > MANY_CLASSES else None)
    assert run.speed is not None
    estimate = GRADIENT_PASSES * len(run.gradient_data) / len(run.data)
    run.log(f"class gradients on {len(run.gradient_data)} samples ({run.device}): ≈ {estimate:.3g} FPE, "
            f"≈ {fmt_seconds(estimate * run.speed.pass_s)}")
    with run.stage("gradients"):
        candidates: dict[str, Any] = {"rule": "every class with a direction", "classes": None}
        ego = options.classes
        norms: dict[int, float] = {}
        if ego is None and n_candidates is not None:
            ego, candidates, norms = _screen_candidates(run, n_candidates)
        # With few classes every gradient is kept (C and I1 need them all), even when
        # --classes restricts the ego classes; with many, only the candidates' are.
        gradients = tasks.run_gradients(run, ego if norms else None, min(options.batch_size, MAX_GRADIENT_BATCH))
        # the samples differentiated: the sketches' pass over every class, then the classes kept
        run.samples += (len(run.gradient_data) if norms else 0) + int(gradients.counts[list(gradients.classes)].sum())
    # One direction at a time, computed when used: a large-K audit never holds them all.
    directions = EgoDirectionStream(run.model, gradients, options.normalization, options.include_1d)
    ego_classes = [c for c in (ego if ego is not None else directions.classes) if c in directions.classes]
    if not ego_classes:
        raise OptionError("no class has an ego direction (every chosen class is absent or has a zero gradient); "
                          "check the data and --classes")
    return _Gradients(gradients, directions, ego_classes, candidates, norms)


def cct_stage(run: AuditRun, g: _Gradients) -> CrossClassTestResult:
    """The cross-class test over the audit data (the plan of the whole audit is logged first)."""
    assert run.speed is not None
    plan = plan_cct(g.directions, run.options.alphas, g.ego_classes)
    probe_s = float(run.strategy_timings.get("probe_s", 0.0))
    run.cost = plan_audit(run.speed, budget=run.options.budget, probe_s=probe_s,
                          n_gradient_samples=len(run.gradient_data),
                          n_cct_evaluations=plan.n_evaluations - 1)  # its α = 0 column is the unperturbed pass
    run.log(run.cost.describe())
    n_steps = len(plan.alphas) - 1
    run.log(f"cross-class test: {len(g.ego_classes)} ego classes x {n_steps} steps on {len(run.data)} samples")
    with run.stage("cct"):
        return tasks.run_cct(run, g.directions, g.ego_classes)


@dataclass(frozen=True)
class _Interference:
    result: InterferenceResult
    errors: ErrorShare
    top_interference: list[tuple[int, int, float]]
    top_confusion: list[tuple[int, int, float]]
    agreement: ScoreAgreement


def interference_stage(run: AuditRun, g: _Gradients, cct: CrossClassTestResult) -> _Interference:
    """C, I1, I (halving α_s where needed), the pair score R, where the errors are, and their agreement.

    "Where the errors are" ranks pairs by P with ties broken by R; "why" ranks them by R.
    """

    with run.stage("interference"):
        inter = interference(g.gradients, g.directions, cct, tasks.step_losses(run, g.directions, cct))
        errors = error_share(run.reported.confusion, tiebreak=inter.pair_score,
                             soft_confusion=run.reported.soft_confusion)
        listed = max(run.options.pairs or 0, TOP_PAIRS_LISTED)
        top_p = [(a, b, float(n)) for a, b, n in errors.pairs[:listed]]
        agreement = score_agreement(inter.pair_score, pair_confusion(run.reported.confusion).astype(np.float64))
        return _Interference(inter, errors, inter.top_pairs(listed), top_p, agreement)


def models_stage(run: AuditRun, g: _Gradients, found: _Interference) -> list[InterferenceModel]:
    """2-D interference models: the pairs and grid the options give, the budget choosing the rest.

    The pairs come alternately from the rankings by pair score R and by confusion P; what
    the budget leaves them is ``budget`` × the CCT's evaluations less everything the audit
    spent so far outside the CCT (the unperturbed pass and probe, the gradients, the
    interference stage, checking the data and planning; in FPE at the CCT's measured speed).
    Choosing the design is part of the stage's cost.
    """
    options, names = run.options, run.class_names
    usable = set(g.directions.classes)
    by_score = [(a, b) for a, b, _ in found.top_interference if a in usable and b in usable]
    by_confusion = [(a, b) for a, b, _ in found.top_confusion if a in usable and b in usable]
    step_s = run.seconds_per_fpe()
    # what a 2-D model's evaluation costs whatever its size, measured along two directions (the
    # probe's one-sample step had one); under "inputs" this also builds the plane's session
    plane_s = _overhead(run)
    if options.pairs != 0 and (by_score or by_confusion):
        measured = run.executor.call(Task("2-D model step", "plane_step_s", (run.device, run.strategy)))
        plane_s = float(measured) if isinstance(measured, float) else plane_s
        run.timings["plane_step_s"] = plane_s
    planes = PlaneCosts(np.asarray(run.data.y), g.directions, options,
                        Speed(len(run.data), step_s, run.strategy, plane_s))
    spent = run.outside_cct_s() / step_s
    why = (f" after the unperturbed pass, the gradients, the interference matrices with their α_s halvings and "
           f"the rest of the audit so far ({spent:.3g} FPE)")
    models = []
    with run.stage("interference_models"):
        design = planes.design(by_score, by_confusion, options.budget * run.actual["cct"].evaluations - spent,
                               spent=why)
        planned = planes.planned(design)
        run.log(f"2-D models: {design.reason} (≈ {fmt_seconds(planned.seconds)})")
        for a, b in design.pairs:
            run.log(f"interference model {names[a]} / {names[b]}")
            models.append(interference_model(
                run.model, run.data, a, b, directions=g.directions, gradients=g.gradients, basis=options.basis,
                grid=design.grid, lattice=design.lattice, learning_rate=options.learning_rate,
                total_samples=planes.lattice_samples((a, b), design.chosen_by == "budget"), provider=run.device,
                batch_size=options.batch_size, strategy=run.strategy, progress=run.progress,
                rows=tasks.grid_rows(run, a, b)))
    if run.cost is not None:
        run.cost = with_actual(run.cost, {}, run.cost.seconds_per_fpe, planned, design)
    return models


def _assemble(run: AuditRun, g: _Gradients, cct: CrossClassTestResult, found: _Interference,
              models: list[InterferenceModel], started: float) -> AuditResult:
    k = run.model.n_classes
    reported = run.reported
    counts = reported.count
    skipped: dict[int, str] = {}
    for c in range(k):
        if counts[c] == 0:
            skipped[c] = "no samples in the audit data"
        elif c in g.directions.skipped:
            skipped[c] = g.directions.skipped[c]
        elif c in found.result.reasons:
            skipped[c] = found.result.reasons[c]
    gnorm = np.full(k, np.nan)
    for c, n in g.screened_norms.items():
        gnorm[c] = n
    gnorm[list(g.gradients.classes)] = g.gradients.norms()
    amax = np.full(k, np.nan)
    amax[list(g.directions.classes)] = g.directions.alpha_max
    timings = dict(run.timings)
    timings["total_s"] = time.perf_counter() - started
    timings["cct_samples_per_second"] = cct.samples_per_second
    timings.update({f"strategy_{key}": v for key, v in run.strategy_timings.items()})
    return AuditResult(
        model=run.model.summary(), data=run.data.describe(k), gradient_data=run.gradient_data.describe(k),
        class_names=run.class_names, options=run.options, loss=reported.loss, accuracy=reported.accuracy,
        counts=counts, gradient_norm=gnorm, alpha_max=amax, skipped=skipped, cct=cct, interference=found.result,
        flatness=flatness(cct), errors=found.errors, top_pairs_interference=found.top_interference,
        top_pairs_confusion=found.top_confusion, agreement=found.agreement, models=models, candidates=g.candidates,
        provider=run.device, timings=timings, versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        examples=_examples(run, found), twin=run.twin,
        cost=None if run.cost is None else with_actual(run.cost, run.actual, run.seconds_per_fpe()))


def _examples(run: AuditRun, found: _Interference) -> tuple[PairExamples, ...]:
    """A few misclassified samples of the most confused pairs (thumbnails or texts)."""
    predictions = run.reported.predictions
    if predictions is None:
        return ()
    pairs = [(a, b) for a, b, _ in found.top_confusion[:EXAMPLE_PAIRS]]
    return confused_examples(run.data, run.model, predictions, pairs)


def run_audit(model: Model, data: Dataset, options: AuditOptions | None = None, *,
              gradient_data: Dataset | None = None, gate: Sequence[Check] | None = DEFAULT_CHECKS,
              dance: DanceAnalysis | str | os.PathLike[str] | None = None, progress: bool | None = None,
              log: Callable[[str], None] | None = None, executor: Executor | None = None,
              checkpoint: str | os.PathLike[str] | None = None) -> AuditResult:
    """Run every analysis on one model and data set, then the gate.

    Parameters
    ----------
    model : Model
    data : Dataset
        The audit data (CCT, interference, confusion, interference models).
    options : AuditOptions, optional
    gradient_data : Dataset, optional
        A second set for the gradients and directions (e.g. the training data).
    gate : sequence of Check or None, default=DEFAULT_CHECKS
        The gate's checks (:mod:`auditor.gate`); None for no gate.
    dance : DanceAnalysis or path-like, optional
        A label-dancing analysis, or the path of a training-time log, to compare with this
        audit's pairs and include in the result (and the gate's ``late_dance_rate``).
    progress : bool, optional
        Progress bars (default: when stderr is a terminal).
    log : callable, optional
        ``log(message)`` for stage messages.
    executor : Executor, optional
        Who runs the units of work: :class:`~auditor.execution.SerialExecutor` (default,
        this process) or :class:`~auditor.execution.RayExecutor` (a Ray cluster). It is
        started and stopped here. The numbers do not depend on it.
    checkpoint : path-like, optional
        A directory where each finished cell is written; a rerun with the same directory
        reads them back instead of computing them, and refuses a directory made by
        another audit (:class:`~auditor.errors.CheckpointError`).

    Returns
    -------
    AuditResult

    Examples
    --------
    >>> import auditor
    >>> from auditor.demo import demo_paths
    >>> paths = demo_paths()
    >>> model = auditor.load_model(paths.model)
    >>> data = auditor.load_data(paths.data).stratified(20)
    >>> result = auditor.run_audit(model, data, auditor.AuditOptions(pairs=1, grid=5))
    >>> result.n_classes, result.gate is not None, result.cct.loss.shape
    (10, True, (10, 10, 21))
    """
    options = options or AuditOptions()
    check_gradient_support(model)  # an op without a reverse rule fails here, before any work
    analysis = dance_analysis(dance) if isinstance(dance, (str, os.PathLike)) else dance
    started = time.perf_counter()
    executor = executor if executor is not None else SerialExecutor()
    try:
        run = start_run(model, data, options, gradient_data, progress, log or _quiet, executor, checkpoint)
        g = gradient_stage(run)
        cct = cct_stage(run, g)
        found = interference_stage(run, g, cct)
        models = models_stage(run, g, found)
    finally:
        executor.stop()
    result = _assemble(run, g, cct, found, models, started)
    if analysis is not None:
        result = result.with_dance(analysis)
    if gate is not None:
        result = result.with_gate(evaluate_gate(result, gate))
    return result
