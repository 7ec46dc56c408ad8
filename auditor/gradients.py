"""Exact per-class weight gradients of the ONNX graph, and class ego directions.

See CONCEPTS.md, "Class ego direction". Gradients come from the reverse-mode graph that
onnx-ad derives from the model itself (:func:`auditor.graph.gradient_graph`), run by ONNX
Runtime; no training framework is involved.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import graph as G
from .errors import OptionError
from .progress import Progress
from .runtime import _to_device, make_session, resolve_provider

__all__ = ["ClassGradients", "EgoDirections", "GradientStream", "class_gradients", "ego_directions",
           "gradient_sketches",
           "normalize_direction", "default_alpha_max", "NORMALIZATIONS"]

NORMALIZATIONS = ("filter", "layer", "global", "none")
_ZERO_GRADIENT = 1e-12  # relative to ||θ*||: below this a class has no direction


class _FlatMapping(Mapping[int, Mapping[str, np.ndarray]]):
    """``result[c][name]``: rows of a flat ``[n, P]`` matrix viewed per parameter."""

    classes: tuple[int, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    flat: np.ndarray

    def _offsets(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape, dtype=np.int64))
            out.append((start, start + size))
            start += size
        return out

    def __getitem__(self, c: int) -> Mapping[str, np.ndarray]:
        try:
            row = self.classes.index(int(c))
        except ValueError:
            raise KeyError(c) from None
        v = self.flat[row]
        return {n: v[s:e].reshape(shape) for n, shape, (s, e) in zip(self.names, self.shapes, self._offsets())}

    def __iter__(self) -> Iterator[int]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def vector(self, c: int) -> np.ndarray:
        """The flattened vector of class ``c`` (parameters concatenated in ``names`` order)."""
        return self.flat[self.classes.index(int(c))]


@dataclass(frozen=True, eq=False)
class ClassGradients(_FlatMapping):
    """``g_c = ∇θ L_c(θ*)`` for every class present (CONCEPTS.md, "Class ego direction").

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
        return np.linalg.norm(self.flat.astype(np.float64), axis=1)


@dataclass(frozen=True, eq=False)
class EgoDirections(_FlatMapping):
    """``d_c`` for every class that has one (CONCEPTS.md, "Class ego direction").

    Attributes
    ----------
    classes : tuple of int
        Ego classes with a direction, ascending.
    names, shapes : tuple
    flat : ndarray of shape (len(classes), P), float32
    normalization : {"filter", "layer", "global", "none"}
    include_1d : bool
    alpha_max : ndarray of shape (len(classes),)
        The default largest step per class (CONCEPTS.md, "Cross-class test").
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


def _check_classes(model: Any, y: np.ndarray, classes: Sequence[int] | None) -> list[int]:
    present = sorted(set(np.unique(y).tolist()))
    if classes is None:
        return present
    bad = [c for c in classes if not 0 <= int(c) < model.n_classes]
    if bad:
        raise OptionError(f"classes {bad} are out of range; the model has classes 0..{model.n_classes - 1}")
    return [int(c) for c in sorted(set(classes)) if c in present]


def class_gradients(model: Any, data: Any, *, batch_size: int = 128, provider: str = "auto",
                    classes: Sequence[int] | None = None, progress: bool | None = None) -> ClassGradients:
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

    Returns
    -------
    ClassGradients

    Notes
    -----
    The batches are class-sorted, so one seed of the scalar loss
    ``-Σ_i Σ_k T[i,k] log softmax(z_i)_k`` with ``T[i, c] = 1/|D_c|`` for the samples of
    class c gives ``g_c`` directly; the last batch of a class is padded with zero rows,
    which add nothing. This is several times cheaper than one seed per class
    (ENGINEERING.md).
    """
    stream = GradientStream(model, data, batch_size=batch_size, provider=provider, classes=classes)
    flat = np.zeros((len(stream.classes), stream.n_parameters), dtype=np.float32)
    start = time.perf_counter()
    with Progress(stream.n_batches, "class gradients", enabled=progress) as bar:
        for row, (_, g) in enumerate(stream.run(bar.advance)):
            flat[row] = g
    return ClassGradients(classes=tuple(stream.classes), names=tuple(model.parameter_names),
                          shapes=tuple(p.shape for p in model.parameters), flat=flat, losses=stream.losses,
                          counts=stream.counts, provider=stream.device, seconds=time.perf_counter() - start)


class GradientStream:
    """Yields ``(c, g_c)`` one class at a time, so a caller may reduce each gradient on the fly.

    :func:`class_gradients` stores them all; a large-K audit keeps only a sketch of each
    (:func:`gradient_sketches`) and recomputes the few it needs in full.
    """

    def __init__(self, model: Any, data: Any, *, batch_size: int = 128, provider: str = "auto",
                 classes: Sequence[int] | None = None) -> None:
        from .data import check_dataset

        data = check_dataset(data, input_shape=model.input_shape, input_dtype=model.input_dtype,
                             n_classes=model.n_classes)
        self.model = model
        self.x, self.y = np.asarray(data.x), np.asarray(data.y)
        self.device = resolve_provider(provider)
        self.classes = _check_classes(model, self.y, classes)
        self.counts = np.bincount(self.y, minlength=model.n_classes).astype(np.int64)
        if batch_size < 1:
            raise OptionError(f"batch size must be >= 1, got {batch_size}")
        largest = int(self.counts[self.classes].max()) if self.classes else 1
        self.batch = int(model.fixed_batch or min(batch_size, max(largest, 1)))
        self.sizes = [p.size for p in model.parameters]
        self.n_parameters = sum(self.sizes)
        self.losses = np.full(model.n_classes, np.nan)
        self.n_batches = sum(-(-int(self.counts[c]) // self.batch) for c in self.classes)

    def run(self, tick: Any = None) -> Iterator[tuple[int, np.ndarray]]:
        model, x, y, batch, device = self.model, self.x, self.y, self.batch, self.device
        session = make_session(G.gradient_graph(model, batch, x.shape[1:]), device)
        outputs = [o.name for o in session.get_outputs()]
        weights = model.weights()
        binding = session.io_binding()
        inputs = {i.name for i in session.get_inputs()}
        for p in model.parameters:  # θ* is baked into the graph unless that optimisation is off
            if p.name in inputs:
                binding.bind_ortvalue_input(p.name, _to_device(weights[p.name].astype(model.input_dtype, copy=False),
                                                              device))
        binding.bind_ortvalue_input(f"adj_{G.TOTAL_LOSS}", _to_device(np.ones(1, np.float32), device))
        for name in outputs:
            binding.bind_output(name, "cpu")
        xb = np.zeros((batch, *x.shape[1:]), dtype=x.dtype)
        target = np.zeros((batch, model.n_classes), dtype=np.float32)
        for c in self.classes:
            idx_all = np.flatnonzero(y == c)
            g = np.zeros(self.n_parameters, dtype=np.float32)
            loss = 0.0
            for s in range(0, len(idx_all), batch):
                idx = idx_all[s:s + batch]
                xb[:] = 0
                xb[: len(idx)] = x[idx]
                target[:] = 0
                target[: len(idx), c] = 1.0 / self.counts[c]
                binding.bind_ortvalue_input(model.input_name, _to_device(xb, device))
                binding.bind_ortvalue_input(G.TARGET, _to_device(target, device))
                session.run_with_iobinding(binding)
                values = binding.copy_outputs_to_cpu()
                loss += float(values[0])
                offset = 0
                for size, value in zip(self.sizes, values[1:]):
                    g[offset:offset + size] += value.reshape(-1)
                    offset += size
                if tick is not None:
                    tick()
            self.losses[c] = loss
            yield c, g


def gradient_sketches(model: Any, data: Any, *, dim: int = 2048, seed: int = 0, batch_size: int = 128,
                      provider: str = "auto", progress: bool | None = None
                      ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Count sketches of every class gradient, for a cheap conflict screen when K is large.

    Each parameter index is hashed to one of ``dim`` buckets with a random sign, so inner
    products (hence cosines) of sketches estimate those of the full gradients while
    memory stays ``K x dim``. Returns the classes, the sketches ``[n, dim]`` and the exact
    gradient norms.
    """
    stream = GradientStream(model, data, batch_size=batch_size, provider=provider)
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, dim, size=stream.n_parameters)
    sign = rng.choice(np.array([-1.0, 1.0]), size=stream.n_parameters)
    sketches = np.zeros((len(stream.classes), dim))
    norms = np.zeros(len(stream.classes))
    with Progress(stream.n_batches, "gradient sketches", enabled=progress) as bar:
        for row, (_, g) in enumerate(stream.run(bar.advance)):
            sketches[row] = np.bincount(bucket, weights=sign * g, minlength=dim)
            norms[row] = np.linalg.norm(g.astype(np.float64))
    return tuple(stream.classes), sketches, norms


def _slices(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` with ``axis`` first and the rest flattened: one row per output filter."""
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)


def normalize_direction(g: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                        parameters: Sequence[Any], normalization: str = "filter",
                        include_1d: bool = False) -> dict[str, np.ndarray]:
    """``d = -normalise(g)`` for one class (CONCEPTS.md, "Class ego direction").

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
    """α_max of CONCEPTS.md, "Cross-class test": the largest step moves θ by 20% of its norm."""
    if normalization in ("filter", "layer"):
        return 0.2
    if normalization == "global":
        return 0.2 * theta_norm
    return 0.2 * theta_norm / gradient_norm


def ego_directions(model: Any, data: Any = None, *, normalization: str = "filter", include_1d: bool = False,
                   gradients: ClassGradients | None = None, **gradient_options: Any) -> EgoDirections:
    """Class ego directions ``d_c = -normalise(g_c)`` (CONCEPTS.md, "Class ego direction").

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
    ``include_1d`` is off) is skipped too.
    """
    if normalization not in NORMALIZATIONS:
        raise OptionError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if gradients is None:
        if data is None:
            raise OptionError("ego_directions needs data or precomputed gradients")
        gradients = class_gradients(model, data, **gradient_options)
    weights = model.weights()
    theta_norm = float(np.sqrt(sum(np.sum(np.square(w, dtype=np.float64)) for w in weights.values())))
    rows, classes, alphas = [], [], []
    skipped: dict[int, str] = {}
    for c, gn in zip(gradients.classes, gradients.norms()):
        if gn < _ZERO_GRADIENT * max(theta_norm, 1e-30):
            skipped[c] = "its loss gradient is zero"
            continue
        d = normalize_direction(gradients[c], weights, model.parameters, normalization, include_1d)
        vec = np.concatenate([d[n].reshape(-1) for n in gradients.names]).astype(np.float32)
        if not np.any(vec):
            skipped[c] = f"its direction is zero after {normalization} normalisation"
            continue
        rows.append(vec)
        classes.append(c)
        alphas.append(default_alpha_max(normalization, theta_norm, float(gn)))
    flat = np.stack(rows) if rows else np.zeros((0, gradients.flat.shape[1]), np.float32)
    return EgoDirections(classes=tuple(classes), names=gradients.names, shapes=gradients.shapes, flat=flat,
                         normalization=normalization, include_1d=include_1d,
                         alpha_max=np.asarray(alphas, dtype=np.float64), skipped=skipped)


