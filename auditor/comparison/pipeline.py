"""Compare a candidate export with a baseline on the same data: :func:`compare`.

Without ``interference`` a comparison costs one forward pass of each model over the data;
every number is computed from the two logit arrays (:mod:`auditor.comparison.analysis`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from auditor.data import Dataset, check_dataset, load_data
from auditor.errors import DataError, ModelError
from auditor.gate import COMPARE_QUANTITIES, DEFAULT_COMPARE_CHECKS, Check, evaluate_gate
from auditor.inference import deployed_logits, predict_logits
from auditor.model import Model, load_model
from auditor.runtime import resolve_provider

from .analysis import agreement, compare_classes, compare_overall, flip_groups
from .inputs import InputMatch, match_models, model_class_names
from .options import CompareOptions
from .parts import InterferenceChange
from .result import CompareResult

__all__ = ["compare"]

Source = Model | str | os.PathLike[str]


def _quiet(message: str) -> None:
    """The default log: say nothing."""


def _model(model: Source, role: str) -> Model:
    if isinstance(model, Model):
        return model
    try:
        return load_model(model)
    except ModelError as err:
        raise type(err)(f"{role} model: {err}") from err


def _candidate_data(original: Dataset, checked: Dataset, match: InputMatch, candidate: Model) -> Dataset:
    """The same samples, checked for the candidate's inputs.

    Data the candidate reads as given (arrays named after its inputs or as tokenizers name
    them, or one array) are checked as they are, so no precision is lost to the baseline's
    input types; otherwise the baseline's arrays are renamed to the candidate's inputs.
    """
    try:
        return check_dataset(original, candidate)
    except DataError:
        arrays = {cand: original.features.get(base, checked.features[base]) for base, cand in match.pairs}
        renamed = Dataset(arrays, checked.y, checked.class_names, checked.source, checked.texts, checked.notes)
        return check_dataset(renamed, candidate, name="data (with the baseline's inputs renamed to the candidate's)")


def _class_names(data: Dataset, baseline: Model, candidate: Model) -> list[str]:
    k = baseline.n_classes
    if data.class_names is not None and len(data.class_names) == k:
        return [str(n) for n in data.class_names]
    names = model_class_names(baseline) or model_class_names(candidate)
    return list(names) if names is not None else [str(c) for c in range(k)]


def _interference(baseline: Model, candidate: Model, data_b: Dataset, data_c: Dataset, options: CompareOptions,
                  device: str, progress: bool | None, log: Callable[[str], None]) -> InterferenceChange:
    """Audit both models (no 2-D models, no gate) and keep their pair scores."""
    from auditor.audit import AuditOptions, run_audit

    audit_options = AuditOptions(normalization=options.normalization, pairs=0, batch_size=options.batch_size,
                                 provider=device)
    scores = []
    version = ""
    for role, model, data in (("baseline", baseline, data_b), ("candidate", candidate, data_c)):
        log(f"interference of the {role}: class gradients and cross-class test")
        audit = run_audit(model, data, audit_options, gate=None, progress=progress, log=log)
        scores.append(np.array(audit.interference.pair_score, dtype=np.float64))
        version = audit.schema_version
    return InterferenceChange(scores[0], scores[1], f"the pair score of `auditor audit` (audit results schema "
                                                    f"{version}, normalization {options.normalization})")


def _check_interference_support(models: Sequence[tuple[str, Model]]) -> None:
    """Fail before any work when a model's graph cannot be differentiated."""
    from auditor.differentiable import check_gradient_support

    for role, model in models:
        try:
            check_gradient_support(model)
        except ModelError as err:
            raise type(err)(f"--interference needs the gradients of both models, and the {role}'s graph cannot "
                            f"be differentiated: {err}") from err


def compare(baseline: Source, candidate: Source, data: Dataset | str | os.PathLike[str],
            options: CompareOptions | None = None, *, gate: Sequence[Check] | None = DEFAULT_COMPARE_CHECKS,
            data_kwargs: dict[str, Any] | None = None, progress: bool | None = None,
            log: Callable[[str], None] | None = None) -> CompareResult:
    """Did the candidate export regress any class, and which pairs got worse?

    Parameters
    ----------
    baseline, candidate : Model or path-like
        The two exports of one classifier (e.g. fp32 and its int8 quantisation, two
        exporters, a retrained model). They must agree on K, on class names where both
        carry them, and on the shape of each sample; input names, input precision and a
        fixed batch may differ.
    data : Dataset or path-like
        Labelled samples; a path is read with :func:`auditor.load_data`.
    options : CompareOptions, optional
    gate : sequence of Check or None, default=DEFAULT_COMPARE_CHECKS
        Checks on :data:`auditor.gate.COMPARE_QUANTITIES`; None for no gate.
    data_kwargs : dict, optional
        Keywords of :func:`auditor.load_data` when ``data`` is a path.
    progress : bool, optional
        Progress bars (default: when stderr is a terminal).
    log : callable, optional
        ``log(message)`` for stage messages.

    Returns
    -------
    CompareResult

    Raises
    ------
    ModelError
        A model cannot be loaded, or the two cannot be compared (K, class names, inputs).
    DataError
        The data do not fit the models.

    Examples
    --------
    >>> import auditor
    >>> from auditor.demo import demo_paths
    >>> paths = demo_paths()
    >>> result = auditor.compare(paths.model, paths.candidate, paths.data)
    >>> [result.class_names[c] for c in result.regressed_classes()]
    ['digit 3']
    """
    options = options or CompareOptions()
    say = log or _quiet
    started = time.perf_counter()
    base_model, cand_model = _model(baseline, "baseline"), _model(candidate, "candidate")
    match = match_models(base_model, cand_model)
    if options.interference:
        _check_interference_support((("baseline", base_model), ("candidate", cand_model)))
    original = data if isinstance(data, Dataset) else load_data(data, **(data_kwargs or {}))
    if options.max_per_class:
        original = original.stratified(options.max_per_class)
    data_b = check_dataset(original, base_model)
    data_c = _candidate_data(original, data_b, match, cand_model)
    device = resolve_provider(options.provider)
    timings: dict[str, float] = {}
    logits = []
    for role, model, checked in (("baseline", base_model, data_b), ("candidate", cand_model, data_c)):
        say(f"predicting {len(checked)} samples with the {role} ({device})")
        start = time.perf_counter()
        if model.deployed is not None:  # fp16/int8: compare the graph as deployed, not its float32 twin
            logits.append(deployed_logits(model, checked, batch_size=options.batch_size, provider=device)
                          .astype(np.float32))
        else:
            logits.append(predict_logits(model, checked, batch_size=options.batch_size, provider=device,
                                         progress=progress))
        timings[f"forward_{role}_s"] = time.perf_counter() - start
    result = _assemble(base_model, cand_model, match, data_b, logits[0], logits[1], options, device, timings)
    if options.interference:
        start = time.perf_counter()
        change = _interference(base_model, cand_model, data_b, data_c, options, device, progress, say)
        result = _with(result, interference=change, timing=("interference_s", time.perf_counter() - start))
    result = _with(result, timing=("total_s", time.perf_counter() - started))
    if gate is not None:
        result = result.with_gate(evaluate_gate(result, gate, COMPARE_QUANTITIES))
    return result


def _with(result: CompareResult, *, interference: InterferenceChange | None = None,
          timing: tuple[str, float]) -> CompareResult:
    from dataclasses import replace

    timings = {**result.timings, timing[0]: timing[1]}
    return replace(result, timings=timings, interference=interference or result.interference)


def _assemble(baseline: Model, candidate: Model, match: InputMatch, data: Dataset, logits_b: np.ndarray,
              logits_c: np.ndarray, options: CompareOptions, device: str, timings: dict[str, float]) -> CompareResult:
    from auditor.audit.result import versions

    start = time.perf_counter()
    k = baseline.n_classes
    y = np.asarray(data.y, dtype=np.int64)
    primary = baseline.input(baseline.input_name)
    images = data.features[primary.name] if primary.role == "features" and baseline.layout != "features" else None
    confusions = []
    for z in (logits_b, logits_c):
        c = np.zeros((k, k), dtype=np.int64)
        np.add.at(c, (y, np.argmax(z, axis=1)), 1)
        confusions.append(c)
    classes = compare_classes(y, logits_b, logits_c, k, alpha=options.alpha, confidence=options.confidence)
    overall = compare_overall(y, logits_b, logits_c, confidence=options.confidence)
    flips = flip_groups(y, logits_b, logits_c, images=images, layout=baseline.layout, texts=data.texts,
                        n_examples=options.examples, n_groups=options.example_groups)
    agree = agreement(y, logits_b, logits_c, k)
    timings = {**timings, "analysis_s": time.perf_counter() - start}
    return CompareResult(
        baseline=baseline.summary(), candidate=candidate.summary(), inputs=match, data=data.describe(k),
        class_names=_class_names(data, baseline, candidate), options=options, classes=classes, overall=overall,
        confusion_baseline=confusions[0], confusion_candidate=confusions[1], flips=flips, agreement=agree,
        provider=device, timings=timings, versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
