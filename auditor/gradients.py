"""Exact per-class weight gradients of the ONNX graph, and class ego directions.

See docs/concepts.md, "Class ego direction". Gradients come from the reverse-mode graph that
onnx-ad derives from the model itself (:func:`auditor.graph.gradient_graph`), run by ONNX
Runtime; no training framework is involved.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .errors import OptionError
from .gradient_stream import GradientStream
from .progress import Progress

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model, Parameter

__all__ = ["ClassGradients", "EgoDirections", "EgoDirectionStream", "Directions", "GradientStream",
           "class_gradients", "ego_directions", "gradient_sketches", "CountSketch", "unflatten",
           "normalize_direction", "default_alpha_max", "NORMALIZATIONS"]

NORMALIZATIONS = ("filter", "layer", "global", "none")
_ZERO_GRADIENT = 1e-12  # relative to ||θ*||: below this a class has no direction


def unflatten(names: Sequence[str], shapes: Sequence[tuple[int, ...]], vector: np.ndarray) -> dict[str, np.ndarray]:
    """A flat vector over θ (parameters concatenated in ``names`` order) as arrays by name (views)."""
    out, start = {}, 0
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = vector[start:start + size].reshape(shape)
        start += size
    return out


class _FlatMapping(Mapping[int, Mapping[str, np.ndarray]]):
    """``result[c][name]``: rows of a flat ``[n, P]`` matrix viewed per parameter."""

    classes: tuple[int, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    flat: np.ndarray

    def __getitem__(self, c: int) -> Mapping[str, np.ndarray]:
        try:
            row = self.classes.index(int(c))
        except ValueError:
            raise KeyError(c) from None
        return unflatten(self.names, self.shapes, self.flat[row])

    def __iter__(self) -> Iterator[int]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def vector(self, c: int) -> np.ndarray:
        """The flattened vector of class ``c`` (parameters concatenated in ``names`` order)."""
        return np.asarray(self.flat[self.classes.index(int(c))])


@dataclass(frozen=True, eq=False)
class ClassGradients(_FlatMapping):
    """``g_c = ∇θ L_c(θ*)`` for every class present (docs/concepts.md, "Class ego direction").

    Indexable as ``result[c][name]`` (the initializer's shape).

    Attributes
    ----------
    classes : tuple of int
        Classes with samples in the data, ascending.
    names, shapes : tuple
        The parameters θ, in model order.
    flat : ndarray of shape (len(classes), P), float32
        Row i: the gradient of ``classes[i]`` with all parameters concatenated.
    losses : ndarray of shape (K,), float64
        ``L_c(θ*)`` from the same pass (NaN for absent classes).
    counts : ndarray of shape (K,), int64
        Samples per class.
    provider : str
        The device that ran ("cuda" or "cpu").
    seconds : float
        Wall time of the gradient pass (graph construction excluded).
    """

    classes: tuple[int, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    flat: np.ndarray
    losses: np.ndarray
    counts: np.ndarray
    provider: str = "cpu"
    seconds: float = 0.0

    def __post_init__(self) -> None:
        for a in (self.flat, self.losses, self.counts):
            a.flags.writeable = False

    def norms(self) -> np.ndarray:
        """``||g_c||`` per class in ``classes`` order (float64)."""
        return np.asarray(np.linalg.norm(self.flat.astype(np.float64), axis=1))


@dataclass(frozen=True, eq=False)
class EgoDirections(_FlatMapping):
    """``d_c`` for every class that has one (docs/concepts.md, "Class ego direction").

    Attributes
    ----------
    classes : tuple of int
        Ego classes with a direction, ascending.
    names, shapes : tuple
    flat : ndarray of shape (len(classes), P), float32
    normalization : {"filter", "layer", "global", "none"}
    include_1d : bool
    alpha_max : ndarray of shape (len(classes),)
        The default largest step per class (docs/concepts.md, "Cross-class test").
    skipped : dict of int to str
        Classes present in the data without a direction, with the reason.
    """

    classes: tuple[int, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    flat: np.ndarray
    normalization: str
    include_1d: bool
    alpha_max: np.ndarray
    skipped: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.flat.flags.writeable = False
        self.alpha_max.flags.writeable = False


def class_gradients(model: Model, data: Dataset, *, batch_size: int = 128, provider: str = "auto",
                    classes: Sequence[int] | None = None, progress: bool | None = None,
                    workers: int | None = None) -> ClassGradients:
    """Exact ``∇θ L_c(θ*)`` of every class present in ``data``.

    Parameters
    ----------
    model : Model
        From :func:`auditor.load_model`.
    data : Dataset
        Labelled audit data; checked against the model here.
    batch_size : int, default=128
        Samples per run of the gradient graph (a model with a fixed batch uses its own).
    provider : {"auto", "cuda", "cpu"}, default="auto"
    classes : sequence of int, optional
        Compute only these classes (default: every class present).
    progress : bool, optional
        Draw a progress bar (default: when stderr is a terminal).
    workers : int, optional
        Batches run at once on CPU, one thread each (default: one per CPU core, fewer if
        their intermediate tensors would not fit in memory); 1 runs one batch at a time over
        ONNX Runtime's intra-op threads. CUDA always runs one. See :class:`GradientStream`.

    Returns
    -------
    ClassGradients

    Notes
    -----
    The batches are class-sorted, so one seed of the scalar loss
    ``-Σ_i Σ_k T[i,k] log softmax(z_i)_k`` with ``T[i, c] = 1/|D_c|`` for the samples of
    class c gives ``g_c`` directly; the last batch of a class is padded with copies of one
    of its samples given zero weight, which add nothing. This is several times cheaper
    than one seed per class (benchmarks/RESULTS.md, "Gradient pass").
    """
    stream = GradientStream(model, data, batch_size=batch_size, provider=provider, classes=classes, workers=workers)
    flat = np.zeros((len(stream.classes), stream.n_parameters), dtype=np.float32)
    start = time.perf_counter()
    with Progress(stream.n_batches, "class gradients", enabled=progress) as bar:
        for row, (_, g) in enumerate(stream.run(bar.advance)):
            flat[row] = g
    return ClassGradients(classes=tuple(stream.classes), names=tuple(model.parameter_names),
                          shapes=tuple(p.shape for p in model.parameters), flat=flat, losses=stream.losses,
                          counts=stream.counts, provider=stream.device, seconds=time.perf_counter() - start)


class CountSketch:
    """A count sketch of gradients over θ: each parameter index hashed to one of ``dim`` buckets
    with a random sign, so inner products (hence cosines) of sketches estimate those of the
    full gradients. The same ``(n_parameters, dim, seed)`` gives the same hash in any process.
    """

    def __init__(self, n_parameters: int, dim: int = 2048, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        self.bucket = rng.integers(0, dim, size=n_parameters)
        self.sign = rng.choice(np.array([-1.0, 1.0]), size=n_parameters)

    def __call__(self, g: np.ndarray) -> tuple[np.ndarray, float]:
        """The sketch ``[dim]`` of one flat gradient and its exact norm."""
        return (np.bincount(self.bucket, weights=self.sign * g, minlength=self.dim),
                float(np.linalg.norm(g.astype(np.float64))))


def gradient_sketches(model: Model, data: Dataset, *, dim: int = 2048, seed: int = 0, batch_size: int = 128,
                      provider: str = "auto", progress: bool | None = None, workers: int | None = None
                      ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Count sketches of every class gradient, for a cheap conflict screen when K is large.

    Memory stays ``K x dim`` (see :class:`CountSketch`). Returns the classes, the sketches
    ``[n, dim]`` and the exact gradient norms.
    """
    stream = GradientStream(model, data, batch_size=batch_size, provider=provider, workers=workers)
    sketch = CountSketch(stream.n_parameters, dim, seed)
    sketches = np.zeros((len(stream.classes), dim))
    norms = np.zeros(len(stream.classes))
    with Progress(stream.n_batches, "gradient sketches", enabled=progress) as bar:
        for row, (_, g) in enumerate(stream.run(bar.advance)):
            sketches[row], norms[row] = sketch(g)
    return tuple(stream.classes), sketches, norms


def _slices(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` with ``axis`` first and the rest flattened: one row per output filter."""
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)


def normalize_direction(g: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                        parameters: Sequence[Parameter], normalization: str = "filter",
                        include_1d: bool = False) -> dict[str, np.ndarray]:
    """``d = -normalise(g)`` for one class (docs/concepts.md, "Class ego direction").

    ``parameters`` are the model's :class:`~auditor.model.Parameter` records (for the
    output axis and the one-dimensional flag). Returns float64 arrays by name.
    """
    if normalization not in NORMALIZATIONS:
        raise OptionError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    out: dict[str, np.ndarray] = {}
    if normalization in ("global", "none"):
        total = np.sqrt(sum(float(np.sum(np.square(g[p.name], dtype=np.float64))) for p in parameters))
        scale = 1.0 / total if normalization == "global" and total > 0 else 1.0
        for p in parameters:
            out[p.name] = -np.asarray(g[p.name], dtype=np.float64) * scale
        return out
    for p in parameters:
        d = -np.asarray(g[p.name], dtype=np.float64)
        theta = np.asarray(weights[p.name], dtype=np.float64)
        if p.one_dimensional:
            if include_1d:  # element-wise: keep the gradient's sign, take θ*'s magnitude
                out[p.name] = np.sign(d) * np.abs(theta)
            else:
                out[p.name] = np.zeros_like(d)
            continue
        if normalization == "layer":
            nd, nt = np.linalg.norm(d), np.linalg.norm(theta)
            out[p.name] = d * (nt / nd) if nd > 0 else np.zeros_like(d)
            continue
        axis = p.output_axis
        ds, ts = _slices(d, axis), _slices(theta, axis)
        nd = np.linalg.norm(ds, axis=1, keepdims=True)
        nt = np.linalg.norm(ts, axis=1, keepdims=True)
        scaled = np.where(nd > 0, ds * (nt / np.where(nd > 0, nd, 1.0)), 0.0)
        moved = np.moveaxis(d, axis, 0)
        out[p.name] = np.moveaxis(scaled.reshape(moved.shape), 0, axis)
    return out


def default_alpha_max(normalization: str, theta_norm: float, gradient_norm: float) -> float:
    """α_max of docs/concepts.md, "Cross-class test": the largest step moves θ by 20% of its norm."""
    if normalization in ("filter", "layer"):
        return 0.2
    if normalization == "global":
        return 0.2 * theta_norm
    return 0.2 * theta_norm / gradient_norm


def ego_directions(model: Model, data: Dataset | None = None, *, normalization: str = "filter",
                   include_1d: bool = False, gradients: ClassGradients | None = None,
                   **gradient_options: Any) -> EgoDirections:
    """Class ego directions ``d_c = -normalise(g_c)`` (docs/concepts.md, "Class ego direction").

    Parameters
    ----------
    model : Model
    data : Dataset, optional
        Needed unless ``gradients`` is given.
    normalization : {"filter", "layer", "global", "none"}, default="filter"
    include_1d : bool, default=False
        Rescale one-dimensional tensors element-wise instead of zeroing them.
    gradients : ClassGradients, optional
        Reuse gradients already computed.
    **gradient_options
        Passed to :func:`class_gradients` (``batch_size``, ``provider``, ``classes``, ...).

    Returns
    -------
    EgoDirections

    Notes
    -----
    A class whose gradient norm is below 1e-12·||θ*|| has no direction: it is listed in
    ``skipped``. Under ``normalization="filter"`` or ``"layer"`` a direction that is zero
    everywhere after normalisation (e.g. only one-dimensional tensors have a gradient and
    ``include_1d`` is off) is skipped too. :class:`EgoDirectionStream` gives the same
    directions one at a time, without holding them all.
    """
    if normalization not in NORMALIZATIONS:
        raise OptionError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if gradients is None:
        if data is None:
            raise OptionError("ego_directions needs data or precomputed gradients")
        gradients = class_gradients(model, data, **gradient_options)
    rows, classes, alphas = [], [], []
    skipped: dict[int, str] = {}
    rule = _DirectionRule(model, normalization, include_1d)
    for c, gn in zip(gradients.classes, gradients.norms()):
        vec, amax, reason = rule.row(gradients, c, float(gn))
        if vec is None:
            skipped[c] = reason
            continue
        rows.append(vec)
        classes.append(c)
        alphas.append(amax)
    flat = np.stack(rows) if rows else np.zeros((0, gradients.flat.shape[1]), np.float32)
    return EgoDirections(classes=tuple(classes), names=gradients.names, shapes=gradients.shapes, flat=flat,
                         normalization=normalization, include_1d=include_1d,
                         alpha_max=np.asarray(alphas, dtype=np.float64), skipped=skipped)


class _DirectionRule:
    """One class's direction from its gradient: the row of :func:`ego_directions`, computed alone."""

    def __init__(self, model: Model, normalization: str, include_1d: bool) -> None:
        if normalization not in NORMALIZATIONS:
            raise OptionError(f"unknown normalization {normalization!r}; choose one of "
                              f"{', '.join(NORMALIZATIONS)}")
        self.parameters = model.parameters
        self.weights = model.weights()
        self.theta_norm = float(np.sqrt(sum(np.sum(np.square(w, dtype=np.float64)) for w in self.weights.values())))
        self.normalization, self.include_1d = normalization, include_1d

    def row(self, gradients: ClassGradients, c: int, gradient_norm: float) -> tuple[np.ndarray | None, float, str]:
        """``(d_c flattened as float32, α_max, "")``, or ``(None, nan, why there is none)``."""
        if gradient_norm < _ZERO_GRADIENT * max(self.theta_norm, 1e-30):
            return None, float("nan"), "its loss gradient is zero"
        d = normalize_direction(gradients[c], self.weights, self.parameters, self.normalization, self.include_1d)
        vec = np.concatenate([d[n].reshape(-1) for n in gradients.names]).astype(np.float32)
        if not np.any(vec):
            return None, float("nan"), f"its direction is zero after {self.normalization} normalisation"
        return vec, default_alpha_max(self.normalization, self.theta_norm, gradient_norm), ""


class Directions(Protocol):
    """What the analyses read from ego directions: the classes, α_max and one direction at a time.

    Both :class:`EgoDirections` (all rows in memory) and :class:`EgoDirectionStream` (each
    row computed when asked for) provide it.
    """

    @property
    def classes(self) -> tuple[int, ...]: ...
    @property
    def names(self) -> tuple[str, ...]: ...
    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]: ...
    @property
    def normalization(self) -> str: ...
    @property
    def include_1d(self) -> bool: ...
    @property
    def alpha_max(self) -> np.ndarray: ...
    @property
    def skipped(self) -> Mapping[int, str]: ...
    def vector(self, c: int) -> np.ndarray: ...
    def __getitem__(self, c: int) -> Mapping[str, np.ndarray]: ...


class EgoDirectionStream:
    """The ego directions of :func:`ego_directions`, one at a time: nothing ``[n_ego, P]`` is held.

    Each ``d_c`` is computed from ``g_c`` when asked for (:meth:`vector`), bit for bit the
    row :func:`ego_directions` would hold, so a large-K audit keeps only the gradients and
    the directions in use. Construction computes every direction once (and drops it) to
    know which classes have one.

    Parameters
    ----------
    model : Model
    gradients : ClassGradients
    normalization : {"filter", "layer", "global", "none"}, default="filter"
    include_1d : bool, default=False
    """

    def __init__(self, model: Model, gradients: ClassGradients, normalization: str = "filter",
                 include_1d: bool = False) -> None:
        self._rule = _DirectionRule(model, normalization, include_1d)
        self._gradients = gradients
        self._norms = dict(zip(gradients.classes, (float(n) for n in gradients.norms())))
        classes, alphas = [], []
        skipped: dict[int, str] = {}
        for c in gradients.classes:
            vec, amax, reason = self._rule.row(gradients, c, self._norms[c])
            if vec is None:
                skipped[c] = reason
            else:
                classes.append(c)
                alphas.append(amax)
        self.classes: tuple[int, ...] = tuple(classes)
        self.names, self.shapes = gradients.names, gradients.shapes
        self.normalization, self.include_1d = normalization, include_1d
        self.alpha_max = np.asarray(alphas, dtype=np.float64)
        self.alpha_max.flags.writeable = False
        self.skipped: Mapping[int, str] = skipped

    def vector(self, c: int) -> np.ndarray:
        """``d_c`` flattened (parameters concatenated in ``names`` order), float32; computed now."""
        if int(c) not in self.classes:
            raise KeyError(c)
        vec = self._rule.row(self._gradients, int(c), self._norms[int(c)])[0]
        assert vec is not None
        return vec

    def __getitem__(self, c: int) -> Mapping[str, np.ndarray]:
        return unflatten(self.names, self.shapes, self.vector(c))

    def __len__(self) -> int:
        return len(self.classes)
