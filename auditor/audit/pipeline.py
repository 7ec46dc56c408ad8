"""The whole audit as named stages: data, gradients and directions, CCT, interference, 2-D models.

:func:`run_audit` runs them in order and returns an :class:`~auditor.audit.AuditResult`;
the gate and a label-dancing analysis are part of it, so a Python caller gets what the
command line writes. Each stage is a function of the :class:`AuditRun` state, timed by
:meth:`AuditRun.stage`.
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
from auditor.cct import CrossClassTestResult, cross_class_test
from auditor.confusion import ErrorShare, error_share, pair_confusion
from auditor.dancing import DanceAnalysis, dance_analysis
from auditor.data import Dataset, check_dataset
from auditor.errors import OptionError
from auditor.gate import DEFAULT_CHECKS, Check, evaluate_gate
from auditor.gradients import ClassGradients, EgoDirections, class_gradients, ego_directions, gradient_sketches
from auditor.graph import check_gradient_support
from auditor.interference import InterferenceResult, interference, ranked_pairs
from auditor.landscape import InterferenceModel, flatness, interference_model
from auditor.model import Model
from auditor.runtime import Evaluator, StepStats, resolve_provider

from .options import LARGE_K_CANDIDATES, MANY_CLASSES, AuditOptions
from .result import AuditResult, versions

__all__ = ["run_audit", "select_candidates", "AuditRun", "SKETCH_DIM", "TOP_PAIRS_LISTED"]

#: Dimension of the count sketches that screen gradient conflicts when K is large.
SKETCH_DIM = 2048
#: Pairs listed by each ranking in results.json (at least ``options.pairs``).
TOP_PAIRS_LISTED = 10
#: The gradient pass runs at most this many samples per batch.
MAX_GRADIENT_BATCH = 128


def _quiet(message: str) -> None:
    """The default log: say nothing."""


@dataclass
class AuditRun:
    """The state one audit's stages share: checked data, the evaluator, the unperturbed pass.

    Attributes
    ----------
    model : Model
    data, gradient_data : Dataset
        Checked audit data, and the set the gradients come from (``data`` unless given).
    options : AuditOptions
    device : str
    evaluator : Evaluator
        Over ``data``; shared by the CCT and the α_s halvings.
    base : StepStats
        The unperturbed pass over ``data``, with the soft confusion (softmax
        probabilities summed by true class, fetched from the same pass).
    class_names : list of str
    timings : dict of str to float
    """

    model: Model
    data: Dataset
    gradient_data: Dataset
    options: AuditOptions
    device: str
    evaluator: Evaluator
    base: StepStats
    class_names: list[str]
    progress: bool | None = None
    log: Callable[[str], None] = _quiet
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage into ``timings[f"{name}_s"]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[f"{name}_s"] = time.perf_counter() - start


def start_run(model: Model, data: Dataset, options: AuditOptions, gradient_data: Dataset | None,
              progress: bool | None, log: Callable[[str], None]) -> AuditRun:
    """Check the data once, build the evaluator and run the unperturbed pass."""
    device = resolve_provider(options.provider)
    data = check_dataset(data, model)
    if gradient_data is not None:
        gradient_data = check_dataset(gradient_data, model, name="gradient data")
    if options.max_per_class:
        data = data.stratified(options.max_per_class)
        gradient_data = None if gradient_data is None else gradient_data.stratified(options.max_per_class)
    grad_set = gradient_data if gradient_data is not None else data
    start = time.perf_counter()
    evaluator = Evaluator(model, data, provider=device, batch_size=options.batch_size, strategy=options.strategy)
    evaluator.set_directions([{}])
    base = evaluator.evaluate([0.0], soft=True)
    run = AuditRun(model, data, grad_set, options, device, evaluator, base, _class_names(data, grad_set, model),
                   progress, log)
    run.timings["forward_pass_s"] = time.perf_counter() - start
    return run


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
    directions: EgoDirections
    ego_classes: list[int]
    candidates: dict[str, Any]
    screened_norms: Mapping[int, float]


def _screen_candidates(run: AuditRun, n_candidates: int) -> tuple[tuple[int, ...], dict[str, Any], dict[int, float]]:
    """Many classes: rank pairs by confusion and by an approximate gradient conflict (count
    sketches, K x SKETCH_DIM floats); the candidates' classes become the ego classes."""
    k = run.model.n_classes
    classes, sketches, norms = gradient_sketches(run.model, run.gradient_data, dim=SKETCH_DIM,
                                                 batch_size=min(run.options.batch_size, MAX_GRADIENT_BATCH),
                                                 provider=run.device, progress=run.progress)
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
    run.log(f"class gradients on {len(run.gradient_data)} samples ({run.device})")
    with run.stage("gradients"):
        candidates: dict[str, Any] = {"rule": "every class with a direction", "classes": None}
        ego = options.classes
        norms: dict[int, float] = {}
        if ego is None and n_candidates is not None:
            ego, candidates, norms = _screen_candidates(run, n_candidates)
        # With few classes every gradient is kept (C and I1 need them all), even when
        # --classes restricts the ego classes; with many, only the candidates' are.
        gradients = class_gradients(run.model, run.gradient_data,
                                    batch_size=min(options.batch_size, MAX_GRADIENT_BATCH), provider=run.device,
                                    classes=ego if norms else None, progress=run.progress)
    directions = ego_directions(run.model, gradients=gradients, normalization=options.normalization,
                                include_1d=options.include_1d)
    ego_classes = [c for c in (ego if ego is not None else directions.classes) if c in directions.classes]
    if not ego_classes:
        raise OptionError("no class has an ego direction (every chosen class is absent or has a zero gradient); "
                          "check the data and --classes")
    return _Gradients(gradients, directions, ego_classes, candidates, norms)


def cct_stage(run: AuditRun, g: _Gradients) -> CrossClassTestResult:
    """The cross-class test over the audit data, on the run's evaluator."""
    n_steps = len(run.options.alphas) - 1 if run.options.alphas else 20
    run.log(f"cross-class test: {len(g.ego_classes)} ego classes x {n_steps} steps on {len(run.data)} samples")
    with run.stage("cct"):
        return cross_class_test(run.model, run.data, g.directions, run.options.alphas, ego_classes=g.ego_classes,
                                evaluator=run.evaluator, progress=run.progress)


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

    def evaluate(i: int, alpha: float) -> np.ndarray:
        run.evaluator.set_directions([g.directions[cct.ego_classes[i]]])
        return run.evaluator.evaluate([float(alpha * cct.step_scale[i])]).loss

    with run.stage("interference"):
        inter = interference(g.gradients, g.directions, cct, evaluate)
        errors = error_share(run.base.confusion, tiebreak=inter.pair_score, soft_confusion=run.base.soft_confusion)
        listed = max(run.options.pairs, TOP_PAIRS_LISTED)
        top_p = [(a, b, float(n)) for a, b, n in errors.pairs[:listed]]
        agreement = score_agreement(inter.pair_score, pair_confusion(run.base.confusion).astype(np.float64))
        return _Interference(inter, errors, inter.top_pairs(listed), top_p, agreement)


def models_stage(run: AuditRun, g: _Gradients, found: _Interference) -> list[InterferenceModel]:
    """2-D interference models of the top pairs by pair score R and by confusion P."""
    options, names = run.options, run.class_names
    wanted: list[tuple[int, int]] = []
    for a, b, _ in found.top_interference[:options.pairs] + found.top_confusion[:options.pairs]:
        if (a, b) not in wanted and a in g.directions.classes and b in g.directions.classes:
            wanted.append((a, b))
    models = []
    with run.stage("interference_models"):
        for a, b in wanted:
            run.log(f"interference model {names[a]} / {names[b]}")
            models.append(interference_model(
                run.model, run.data, a, b, directions=g.directions, gradients=g.gradients, basis=options.basis,
                grid=options.grid, learning_rate=options.learning_rate, total_samples=options.total_samples,
                provider=run.device, batch_size=options.batch_size, strategy=run.evaluator.strategy,
                progress=run.progress))
    return models


def _assemble(run: AuditRun, g: _Gradients, cct: CrossClassTestResult, found: _Interference,
              models: list[InterferenceModel], started: float) -> AuditResult:
    k = run.model.n_classes
    counts = run.base.count
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
    timings.update({f"strategy_{key}": v for key, v in run.evaluator.timings.items()})
    return AuditResult(
        model=run.model.summary(), data=run.data.describe(k), gradient_data=run.gradient_data.describe(k),
        class_names=run.class_names, options=run.options, loss=run.base.loss, accuracy=run.base.accuracy,
        counts=counts, gradient_norm=gnorm, alpha_max=amax, skipped=skipped, cct=cct, interference=found.result,
        flatness=flatness(cct), errors=found.errors, top_pairs_interference=found.top_interference,
        top_pairs_confusion=found.top_confusion, agreement=found.agreement, models=models, candidates=g.candidates,
        provider=run.device, timings=timings, versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def run_audit(model: Model, data: Dataset, options: AuditOptions | None = None, *,
              gradient_data: Dataset | None = None, gate: Sequence[Check] | None = DEFAULT_CHECKS,
              dance: DanceAnalysis | str | os.PathLike[str] | None = None, progress: bool | None = None,
              log: Callable[[str], None] | None = None) -> AuditResult:
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
    run = start_run(model, data, options, gradient_data, progress, log or _quiet)
    g = gradient_stage(run)
    cct = cct_stage(run, g)
    found = interference_stage(run, g, cct)
    models = models_stage(run, g, found)
    result = _assemble(run, g, cct, found, models, started)
    if analysis is not None:
        result = result.with_dance(analysis)
    if gate is not None:
        result = result.with_gate(evaluate_gate(result, gate))
    return result
