"""The whole audit: load, gradients, directions, CCT, interference, models of the top pairs.

:func:`run_audit` wires the stages and returns an :class:`AuditResult`, which is what
``results.json`` holds (:meth:`AuditResult.to_dict`, schema documented in
``docs/results-schema.md``) and what the report is drawn from.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .cct import CrossClassTestResult, cross_class_test
from .confusion import ErrorShare, error_share, pair_confusion
from .errors import OptionError, ResultsError
from .gradients import NORMALIZATIONS, class_gradients, ego_directions, gradient_sketches
from .interference import InterferenceResult, interference, ranked_pairs
from .landscape import BASES, Flatness, InterferenceModel, flatness, interference_model
from .runtime import Evaluator, resolve_provider

__all__ = ["AuditOptions", "AuditResult", "run_audit", "SCHEMA_VERSION", "select_candidates"]

SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class AuditOptions:
    """Every option of an audit (recorded in results.json).

    Attributes
    ----------
    normalization : {"filter", "layer", "global", "none"}, default="filter"
    include_1d : bool, default=False
    alphas : tuple of float or None
        The α grid; None: 21 points over [-α_max, α_max].
    classes : tuple of int or None
        Restrict the ego classes.
    pairs : int, default=3
        Interference models for the top ``pairs`` pairs by S and by confusion.
    candidates : int or None
        With many classes, run the CCT only for the classes of the top ``candidates``
        pairs by confusion and by gradient conflict (default: all classes when K <= 64,
        else 20).
    grid : int, default=25
        Points per axis of the 2-D interference models.
    basis : {"orthonormal", "gradients"}, default="orthonormal"
    learning_rate : float, default=0.01
        η of the gradients basis.
    batch_size : int, default=256
    max_per_class : int or None
        Cap the audit data per class (stratified, deterministic).
    total_samples : int, default=2000
        Subsample size for the total loss of an interference model.
    provider : {"auto", "cuda", "cpu"}, default="auto"
    strategy : {"auto", "inputs", "rebuild"}, default="auto"
    exclude : tuple of str
        Tensors left out of θ.
    """

    normalization: str = "filter"
    include_1d: bool = False
    alphas: tuple[float, ...] | None = None
    classes: tuple[int, ...] | None = None
    pairs: int = 3
    candidates: int | None = None
    grid: int = 25
    basis: str = "orthonormal"
    learning_rate: float = 0.01
    batch_size: int = 256
    max_per_class: int | None = None
    total_samples: int = 2000
    provider: str = "auto"
    strategy: str = "auto"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise OptionError(f"unknown normalization {self.normalization!r}; choose one of "
                              f"{', '.join(NORMALIZATIONS)}")
        if self.basis not in BASES:
            raise OptionError(f"unknown basis {self.basis!r}; choose one of {', '.join(BASES)}")
        if self.pairs < 0:
            raise OptionError(f"--pairs must be >= 0, got {self.pairs}")
        if self.grid < 3:
            raise OptionError(f"--grid must be >= 3, got {self.grid}")
        if self.batch_size < 1:
            raise OptionError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise OptionError(f"--max-per-class must be >= 1, got {self.max_per_class}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("alphas", "classes", "exclude"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditOptions:
        d = dict(d)
        for key in ("alphas", "classes", "exclude"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True, eq=False)
class AuditResult:
    """Everything one audit measured (CONCEPTS.md names throughout).

    Attributes
    ----------
    model : dict
        :meth:`auditor.model.Model.summary` of the audited model.
    data, gradient_data : dict
        Source, fingerprint, sample count and per-class counts of the audit data and of
        the data the gradients came from (the same set unless ``--gradient-data``).
    class_names : list of str
        K names (class ids as text when the data have none).
    options : AuditOptions
    loss, accuracy : ndarray of shape (K,)
        ``L_c(θ*)`` and ``A_c(θ*)`` on the audit data; NaN for absent classes.
    counts : ndarray of shape (K,)
    gradient_norm : ndarray of shape (K,)
        ``||g_c||``; NaN where not computed.
    alpha_max : ndarray of shape (K,)
        α_max per ego class; NaN for classes without a direction.
    skipped : dict of int to str
        Classes without a direction or CCT row, with the reason.
    cct : CrossClassTestResult
    interference : InterferenceResult
    flatness : Flatness
    errors : ErrorShare
    top_pairs_interference, top_pairs_confusion : list of (int, int, float)
    models : list of InterferenceModel
    candidates : dict
        How the ego classes were chosen.
    provider : str
        The device that really ran.
    timings : dict of str to float
        Seconds per stage.
    versions : dict of str to str
    gate : dict or None
        The gate's verdicts (see :mod:`auditor.gate`), when one ran.
    dance : dict or None
        A label-dancing analysis (see :mod:`auditor.dancing`), when a log was given.
    """

    model: Mapping[str, Any]
    data: Mapping[str, Any]
    gradient_data: Mapping[str, Any]
    class_names: list[str]
    options: AuditOptions
    loss: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    gradient_norm: np.ndarray
    alpha_max: np.ndarray
    skipped: Mapping[int, str]
    cct: CrossClassTestResult
    interference: InterferenceResult
    flatness: Flatness
    errors: ErrorShare
    top_pairs_interference: list[tuple[int, int, float]]
    top_pairs_confusion: list[tuple[int, int, float]]
    models: list[InterferenceModel]
    candidates: Mapping[str, Any]
    provider: str
    timings: Mapping[str, float]
    versions: Mapping[str, str]
    gate: Mapping[str, Any] | None = None
    dance: Mapping[str, Any] | None = None
    schema_version: str = SCHEMA_VERSION
    created: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def overall_accuracy(self) -> float:
        c = self.errors.confusion
        return float(np.trace(c) / c.sum()) if c.sum() else float("nan")

    def worst_class(self) -> tuple[int, float]:
        """The class with the lowest accuracy among present classes."""
        acc = np.where(np.isnan(self.accuracy), np.inf, self.accuracy)
        c = int(np.argmin(acc))
        return c, float(self.accuracy[c])

    def agreeing_pairs(self, top: int | None = None) -> list[tuple[int, int]]:
        """Pairs in both top lists (by S and by confusion), each list cut to ``top`` pairs."""
        a = {(x, y) for x, y, _ in self.top_pairs_interference[:top]}
        return [(x, y) for x, y, _ in self.top_pairs_confusion[:top] if (x, y) in a]

    def with_gate(self, gate: Mapping[str, Any] | None) -> AuditResult:
        return replace(self, gate=gate)

    def with_dance(self, dance: Mapping[str, Any] | None) -> AuditResult:
        return replace(self, dance=dance)

    def to_dict(self) -> dict[str, Any]:
        from .serialization import to_jsonable

        return to_jsonable({
            "schema_version": self.schema_version, "created": self.created, "versions": dict(self.versions),
            "provider": self.provider, "timings": dict(self.timings), "model": dict(self.model),
            "data": dict(self.data), "gradient_data": dict(self.gradient_data), "class_names": self.class_names,
            "options": self.options.to_dict(),
            "per_class": {"loss": self.loss, "accuracy": self.accuracy, "count": self.counts,
                          "gradient_norm": self.gradient_norm, "alpha_max": self.alpha_max},
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "cct": self.cct.to_dict(), "interference": self.interference.to_dict(),
            "flatness": self.flatness.to_dict(), "errors": self.errors.to_dict(),
            "top_pairs": {"interference": [list(p) for p in self.top_pairs_interference],
                          "confusion": [list(p) for p in self.top_pairs_confusion]},
            "interference_models": [m.to_dict() for m in self.models],
            "candidates": dict(self.candidates), "gate": self.gate, "dance": self.dance,
        })

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditResult:
        from .serialization import array_from_json

        version = str(d.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ResultsError(f"results schema version {version or 'missing'} is not supported (this auditor "
                               f"reads {SCHEMA_VERSION}); run `auditor audit` again to regenerate results.json")
        try:
            pc = d["per_class"]
            return cls(
                model=d["model"], data=d["data"], gradient_data=d["gradient_data"],
                class_names=list(d["class_names"]), options=AuditOptions.from_dict(d["options"]),
                loss=array_from_json(pc["loss"]), accuracy=array_from_json(pc["accuracy"]),
                counts=np.asarray(pc["count"], dtype=np.int64), gradient_norm=array_from_json(pc["gradient_norm"]),
                alpha_max=array_from_json(pc["alpha_max"]), skipped={int(k): v for k, v in d["skipped"].items()},
                cct=CrossClassTestResult.from_dict(d["cct"]),
                interference=InterferenceResult.from_dict(d["interference"]),
                flatness=Flatness.from_dict(d["flatness"]), errors=ErrorShare.from_dict(d["errors"]),
                top_pairs_interference=[(int(a), int(b), float(v)) for a, b, v in d["top_pairs"]["interference"]],
                top_pairs_confusion=[(int(a), int(b), float(v)) for a, b, v in d["top_pairs"]["confusion"]],
                models=[InterferenceModel.from_dict(m) for m in d["interference_models"]],
                candidates=d["candidates"], provider=d["provider"], timings=d["timings"],
                versions=d["versions"], gate=d.get("gate"), dance=d.get("dance"),
                schema_version=version, created=d.get("created", ""))
        except (KeyError, TypeError, ValueError) as err:
            raise ResultsError(f"results.json is incomplete or malformed ({type(err).__name__}: {err}); run "
                               "`auditor audit` again to regenerate it") from err


def _versions() -> dict[str, str]:
    import onnx
    import onnx_ad
    import onnxruntime

    from . import __version__

    return {"auditor": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnx_ad": onnx_ad.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


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


def run_audit(model: Any, data: Any, options: AuditOptions | None = None, *, gradient_data: Any = None,
              progress: bool | None = None, log: Any = None) -> AuditResult:
    """Run every analysis of CONCEPTS.md on one model and data set.

    Parameters
    ----------
    model : Model
    data : Dataset
        The audit data (CCT, interference, confusion, interference models).
    options : AuditOptions, optional
    gradient_data : Dataset, optional
        A second set for the gradients and directions (e.g. the training data).
    progress : bool, optional
        Progress bars (default: when stderr is a terminal).
    log : callable, optional
        ``log(message)`` for stage messages.

    Returns
    -------
    AuditResult
    """
    from .data import check_dataset
    from .graph import check_gradient_support

    options = options or AuditOptions()
    say = log or (lambda message: None)
    check_gradient_support(model)  # an op without a reverse rule fails here, before any work
    timings: dict[str, float] = {}
    start = time.perf_counter()
    k = model.n_classes
    device = resolve_provider(options.provider)
    data = check_dataset(data, model)
    if options.max_per_class:
        data = data.stratified(options.max_per_class)
    if gradient_data is not None:
        gradient_data = check_dataset(gradient_data, model, name="gradient data")
        if options.max_per_class:
            gradient_data = gradient_data.stratified(options.max_per_class)
    grad_set = gradient_data if gradient_data is not None else data
    names = _class_names(data, grad_set, k)

    evaluator = Evaluator(model, data, provider=device, batch_size=options.batch_size,
                          strategy=options.strategy)
    t = time.perf_counter()
    evaluator.set_directions([{}])
    base = evaluator.evaluate([0.0])
    timings["forward_pass_s"] = time.perf_counter() - t

    many = k > 64
    n_candidates = options.candidates if options.candidates is not None else (20 if many else None)
    say(f"class gradients on {len(grad_set)} samples ({device})")
    t = time.perf_counter()
    candidates: dict[str, Any] = {"rule": "every class with a direction", "classes": None}
    ego = options.classes
    norms_all = None
    if ego is None and n_candidates is not None:
        # Many classes: screen every pair cheaply (confusion; gradient conflict from count
        # sketches, K x 2048 floats), then compute full gradients for the candidates only.
        sketch_classes, sketches, norms_all = gradient_sketches(
            model, grad_set, batch_size=min(options.batch_size, 128), provider=device, progress=progress)
        approx = np.full((k, k), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (sketches @ sketches.T) / np.outer(np.linalg.norm(sketches, axis=1),
                                                     np.linalg.norm(sketches, axis=1))
        idx = np.asarray(sketch_classes)
        approx[np.ix_(idx, idx)] = -cos
        np.fill_diagonal(approx, np.nan)
        chosen, candidates = select_candidates(base.confusion, approx, n_candidates)
        candidates["conflict_screen"] = "count sketches of dimension 2048 (approximate cosines)"
        ego = tuple(chosen)
        norms_all = dict(zip(sketch_classes, norms_all))
    # With few classes every gradient is kept (C and I1 need them all), even when --classes
    # restricts the ego classes; with many, only the candidates' are.
    gradients = class_gradients(model, grad_set, batch_size=min(options.batch_size, 128), provider=device,
                                classes=ego if norms_all is not None else None, progress=progress)
    timings["gradients_s"] = time.perf_counter() - t
    directions = ego_directions(model, gradients=gradients, normalization=options.normalization,
                                include_1d=options.include_1d)
    ego_classes = [c for c in (ego if ego is not None else directions.classes) if c in directions.classes]
    if not ego_classes:
        raise OptionError("no class has an ego direction (every chosen class is absent or has a zero gradient); "
                          "check the data and --classes")
    say(f"cross-class test: {len(ego_classes)} ego classes x {len(options.alphas or range(21)) - 1} steps "
        f"on {len(data)} samples")
    t = time.perf_counter()
    cct = cross_class_test(model, data, directions, options.alphas, ego_classes=ego_classes, evaluator=evaluator,
                           progress=progress)
    timings["cct_s"] = time.perf_counter() - t

    def evaluate(i: int, alpha: float) -> np.ndarray:
        evaluator.set_directions([directions[cct.ego_classes[i]]])
        return evaluator.evaluate([float(alpha * cct.step_scale[i])]).loss

    t = time.perf_counter()
    inter = interference(gradients, directions, cct, evaluate)
    flat = flatness(cct)
    errors = error_share(base.confusion)
    top_s = inter.top_pairs(max(options.pairs, 10))
    top_p = [(a, b, float(n)) for a, b, n in errors.pairs[: max(options.pairs, 10)]]
    timings["interference_s"] = time.perf_counter() - t

    t = time.perf_counter()
    models = []
    wanted: list[tuple[int, int]] = []
    for a, b, _ in top_s[: options.pairs] + top_p[: options.pairs]:
        if (a, b) not in wanted and a in directions.classes and b in directions.classes:
            wanted.append((a, b))
    for a, b in wanted:
        say(f"interference model {names[a]} / {names[b]}")
        models.append(interference_model(
            model, data, a, b, directions=directions, gradients=gradients, basis=options.basis, grid=options.grid,
            learning_rate=options.learning_rate, total_samples=options.total_samples, provider=device,
            batch_size=options.batch_size, strategy=evaluator.strategy, progress=progress))
    timings["interference_models_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    timings["cct_samples_per_second"] = cct.samples_per_second
    timings.update({f"strategy_{k_}": v for k_, v in evaluator.timings.items()})

    skipped: dict[int, str] = {}
    counts = base.count
    for c in range(k):
        if counts[c] == 0:
            skipped[c] = "no samples in the audit data"
        elif c in directions.skipped:
            skipped[c] = directions.skipped[c]
        elif c in inter.reasons:
            skipped[c] = inter.reasons[c]
    gnorm = np.full(k, np.nan)
    for c, n in (norms_all or {}).items():
        gnorm[c] = n
    gnorm[list(gradients.classes)] = gradients.norms()
    amax = np.full(k, np.nan)
    amax[list(directions.classes)] = directions.alpha_max
    return AuditResult(
        model=model.summary(), data=data.describe(k), gradient_data=grad_set.describe(k), class_names=names,
        options=options, loss=base.loss, accuracy=base.accuracy, counts=counts, gradient_norm=gnorm,
        alpha_max=amax, skipped=skipped, cct=cct, interference=inter, flatness=flat, errors=errors,
        top_pairs_interference=top_s, top_pairs_confusion=top_p, models=models, candidates=candidates,
        provider=device, timings=timings, versions=_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _class_names(data: Any, other: Any, k: int) -> list[str]:
    for d in (data, other):
        if d.class_names is not None and len(d.class_names) == k:
            return [str(n) for n in d.class_names]
    return [str(c) for c in range(k)]

