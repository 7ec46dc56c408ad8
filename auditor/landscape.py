"""Loss landscapes around θ*: flatness per class and 2-D interference models of pairs.

See docs/concepts.md, "Flatness per class" and "Interference model of a pair (2-D)".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .cct import CrossClassTestResult
from .errors import OptionError
from .gradients import ClassGradients, Directions, unflatten
from .progress import Progress
from .runtime import Evaluator, StepStats

if TYPE_CHECKING:
    from .data import Dataset
    from .model import Model
from .serialization import array_from_json, json_array

__all__ = ["Flatness", "flatness", "InterferenceModel", "interference_model", "evaluate_points", "GridRows",
           "local_rows", "plane_evaluator", "BASES"]

BASES = ("orthonormal", "gradients")
PARALLEL = 1e-6  # |cos(d_a, d_b)| > 1 - PARALLEL: no second axis


@dataclass(frozen=True, eq=False)
class Flatness:
    """Flatness of each ego class's curve (docs/concepts.md, "Flatness per class").

    Attributes
    ----------
    curvature : ndarray of shape (K,)
        ``κ_c``: second finite difference of the ego curve at α = 0 (the two grid
        neighbours of 0; the three-point formula for uneven spacing).
    sharpness : ndarray of shape (K,)
        ``σ_c`` over ``0 < α ≤ ρ``, ρ = 0.5·α_max, at grid points whose mirror -α is on
        the grid.
    rho : ndarray of shape (K,)
        ρ used per class.
    """

    curvature: np.ndarray
    sharpness: np.ndarray
    rho: np.ndarray

    def __post_init__(self) -> None:
        for a in (self.curvature, self.sharpness, self.rho):
            a.flags.writeable = False

    def to_dict(self) -> dict[str, Any]:
        return {"curvature": json_array(self.curvature), "sharpness": json_array(self.sharpness),
                "rho": json_array(self.rho)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Flatness:
        return cls(curvature=array_from_json(d["curvature"]), sharpness=array_from_json(d["sharpness"]),
                   rho=array_from_json(d["rho"]))


def flatness(cct: CrossClassTestResult) -> Flatness:
    """Curvature and sharpness of every ego curve in the CCT."""
    k = cct.n_classes
    curvature, sharpness, rho = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    z = cct.zero_index
    for i, c in enumerate(cct.ego_classes):
        steps, phi = cct.steps(i), cct.ego_curve(i)
        if 0 < z < len(steps) - 1:
            h1, h2 = steps[z] - steps[z - 1], steps[z + 1] - steps[z]
            curvature[c] = 2 * (h1 * phi[z + 1] - (h1 + h2) * phi[z] + h2 * phi[z - 1]) / (h1 * h2 * (h1 + h2))
        amax = float(np.max(np.abs(steps)))
        rho[c] = 0.5 * amax
        values = []
        for a in range(z + 1, len(steps)):
            if steps[a] > rho[c] * (1 + 1e-9):
                break
            mirror = np.flatnonzero(np.isclose(steps, -steps[a], rtol=1e-9, atol=0.0))
            if len(mirror):
                values.append((phi[a] + phi[mirror[0]]) / 2 - phi[z])
        if values:
            sharpness[c] = max(values)
    return Flatness(curvature=curvature, sharpness=sharpness, rho=rho)


@dataclass(frozen=True, eq=False)
class InterferenceModel:
    """The 2-D interference model of a pair (docs/concepts.md, "Interference model of a pair").

    Attributes
    ----------
    a, b : int
        The classes.
    basis : {"orthonormal", "gradients"}
    s, t : ndarray of shape (n,), (m,)
        Grid coordinates. Orthonormal basis: ``θ* + s u + t v``; gradients basis:
        ``θ* - s g_a - t g_b``. ``t`` has one point (0) for a 1-D model.
    loss_a, loss_b, accuracy_a, accuracy_b, total : ndarray of shape (n, m)
        ``L_a``, ``L_b``, ``A_a``, ``A_b`` on D_a ∪ D_b and the total loss ``L`` (other
        classes from a stratified subsample, each class weighted by its share of D).
    radius : float
        r: the grid spans [-r, r] on each axis.
    conflict_angle : float
        Angle between g_a and g_b, degrees.
    minimum_a, minimum_b : tuple of int
        Grid indices of each class's loss minimum.
    minimum_separation : float
        Distance between the two minima in units of r (resolution: one grid cell,
        ``resolution``).
    resolution : float
        One grid cell in units of r.
    one_dimensional : bool
    note : str
        Why the model is 1-D, or "".
    n_samples : int
        Samples evaluated per grid point.
    """

    a: int
    b: int
    basis: str
    s: np.ndarray
    t: np.ndarray
    loss_a: np.ndarray
    loss_b: np.ndarray
    accuracy_a: np.ndarray
    accuracy_b: np.ndarray
    total: np.ndarray
    radius: float
    conflict_angle: float
    minimum_a: tuple[int, int]
    minimum_b: tuple[int, int]
    minimum_separation: float
    resolution: float
    one_dimensional: bool = False
    note: str = ""
    n_samples: int = 0

    def __post_init__(self) -> None:
        for x in (self.s, self.t, self.loss_a, self.loss_b, self.accuracy_a, self.accuracy_b, self.total):
            x.flags.writeable = False

    _ARRAYS = ("s", "t", "loss_a", "loss_b", "accuracy_a", "accuracy_b", "total")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {n: json_array(getattr(self, n)) for n in self._ARRAYS}
        d.update(a=self.a, b=self.b, basis=self.basis, radius=self.radius, conflict_angle=self.conflict_angle,
                 minimum_a=list(self.minimum_a), minimum_b=list(self.minimum_b),
                 minimum_separation=self.minimum_separation, resolution=self.resolution,
                 one_dimensional=self.one_dimensional, note=self.note, n_samples=self.n_samples)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterferenceModel:
        arrays = {n: array_from_json(d[n]) for n in cls._ARRAYS}
        return cls(a=int(d["a"]), b=int(d["b"]), basis=d["basis"], radius=float(d["radius"]),
                   conflict_angle=float(d["conflict_angle"]), minimum_a=tuple(d["minimum_a"]),  # type: ignore[arg-type]
                   minimum_b=tuple(d["minimum_b"]),  # type: ignore[arg-type]
                   minimum_separation=float(d["minimum_separation"]), resolution=float(d["resolution"]),
                   one_dimensional=bool(d["one_dimensional"]), note=d.get("note", ""),
                   n_samples=int(d.get("n_samples", 0)), **arrays)


def _pair_subset(y: np.ndarray, a: int, b: int, total_samples: int, seed: int = 0) -> np.ndarray:
    """All of D_a ∪ D_b plus a stratified subsample of the rest (≤ total_samples in all)."""
    pair = np.flatnonzero((y == a) | (y == b))
    rest = np.flatnonzero((y != a) & (y != b))
    budget = max(total_samples - len(pair), 0)
    if len(rest) > budget:
        rng = np.random.default_rng(seed)
        classes = np.unique(y[rest])
        per = max(budget // max(len(classes), 1), 1)
        chosen = [rng.permutation(rest[y[rest] == c])[:per] for c in classes]
        rest = np.sort(np.concatenate(chosen)) if chosen else rest[:0]
    return np.sort(np.concatenate([pair, rest]))


def evaluate_points(evaluator: Evaluator, points: Sequence[Sequence[float]]) -> list[StepStats]:
    """Evaluate the data at ``θ* + Σ_j p_j · dir_j`` for each point ``p`` (the evaluator's directions), in order.

    One row of a 2-D grid is one call: the unit of work a distributed run hands out.
    """
    return [evaluator.evaluate(list(p)) for p in points]


#: ``rows(subset, axes, points)`` evaluates a pair's grid: ``subset`` the sample indices,
#: ``axes`` the flat float32 axes (1 or 2), ``points[i]`` the coordinates of row ``i``; it
#: yields ``(i, stats of row i's points)`` in any order (see :func:`local_rows`).
GridRows = Callable[[np.ndarray, Sequence[np.ndarray], Sequence[Sequence[tuple[float, ...]]]],
                    Iterable[tuple[int, Sequence[StepStats]]]]


def plane_evaluator(model: Model, data: Dataset, subset: np.ndarray, axes: Sequence[np.ndarray], *,
                    provider: str = "auto", batch_size: int = 256, strategy: str = "auto") -> Evaluator:
    """An evaluator of ``data.subset(subset)`` at ``θ* + Σ_j p_j · axes[j]`` (axes flat over θ)."""
    shapes = tuple(p.shape for p in model.parameters)
    evaluator = Evaluator(model, data.subset(subset), provider=provider, batch_size=batch_size,
                          n_directions=len(axes), strategy=strategy)
    evaluator.set_directions([unflatten(model.parameter_names, shapes, axis) for axis in axes])
    return evaluator


def local_rows(model: Model, data: Dataset, *, provider: str = "auto", batch_size: int = 256,
               strategy: str = "auto") -> GridRows:
    """:data:`GridRows` in this process: one evaluator per grid, rows in order."""

    def rows(subset: np.ndarray, axes: Sequence[np.ndarray],
             points: Sequence[Sequence[tuple[float, ...]]]) -> Iterator[tuple[int, Sequence[StepStats]]]:
        evaluator = plane_evaluator(model, data, subset, axes, provider=provider, batch_size=batch_size,
                                    strategy=strategy)
        for i, row in enumerate(points):
            yield i, evaluate_points(evaluator, row)

    return rows


def interference_model(model: Model, data: Dataset, a: int, b: int, *, directions: Directions | None = None,
                       gradients: ClassGradients | None = None, basis: str = "orthonormal",
                       grid: int = 25, alpha_max: float | None = None, learning_rate: float = 0.01,
                       total_samples: int = 2000, provider: str = "auto", batch_size: int = 256,
                       strategy: str = "auto", progress: bool | None = None,
                       rows: GridRows | None = None) -> InterferenceModel:
    """Evaluate the 2-D interference model of classes ``a`` and ``b``.

    Parameters
    ----------
    model : Model
    data : Dataset
        Checked audit data.
    a, b : int
    directions : EgoDirections or EgoDirectionStream
        Needed for the orthonormal basis (both classes must have a direction).
    gradients : ClassGradients
        For the conflict angle, and the axes of the ``"gradients"`` basis.
    basis : {"orthonormal", "gradients"}, default="orthonormal"
    grid : int, default=25
        Points per axis (the paper's figures: 9 for the gradients basis).
    alpha_max : float, optional
        r = α_max · max(||d_a||, ||d_b||); default: the directions' α_max.
    learning_rate : float, default=0.01
        η of the gradients basis: s, t over [-10η, 10η].
    total_samples : int, default=2000
        Size of the stratified subsample for the total loss.
    rows : GridRows, optional
        Who evaluates the grid rows (default: :func:`local_rows`, in this process); the
        audit pipeline hands them to its executor.

    Returns
    -------
    InterferenceModel
    """
    if basis not in BASES:
        raise OptionError(f"unknown basis {basis!r}; choose one of {', '.join(BASES)}")
    if grid < 3:
        raise OptionError(f"the interference-model grid needs >= 3 points per axis, got {grid}")
    if gradients is None:
        raise OptionError("interference_model needs the class gradients")
    k = model.n_classes
    ga, gb = gradients.vector(a).astype(np.float64), gradients.vector(b).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_g = float(ga @ gb / (np.linalg.norm(ga) * np.linalg.norm(gb)))
    angle = float(np.degrees(np.arccos(np.clip(cos_g, -1, 1)))) if np.isfinite(cos_g) else float("nan")
    one_d, note = False, ""
    if basis == "orthonormal":
        if directions is None or a not in directions.classes or b not in directions.classes:
            raise OptionError(f"classes {a} and {b} both need an ego direction for the orthonormal basis")
        da, db = directions.vector(a).astype(np.float64), directions.vector(b).astype(np.float64)
        na, nb = np.linalg.norm(da), np.linalg.norm(db)
        u = da / na
        cos_d = float(u @ db / nb)
        amax = float(alpha_max if alpha_max is not None else directions.alpha_max[directions.classes.index(a)])
        r = amax * max(na, nb)
        axis0, axis1 = u, None
        if abs(cos_d) > 1 - PARALLEL:
            one_d, note = True, "d_b is (anti)parallel to d_a: no second axis, so the model is 1-D along u"
        else:
            v = db - (u @ db) * u
            axis1 = v / np.linalg.norm(v)
        s = np.linspace(-r, r, grid)
    else:
        axis0, axis1 = -ga, -gb  # θ* - s g_a - t g_b
        r = 10 * learning_rate
        s = np.linspace(-r, r, grid)
    t = np.zeros(1) if one_d else s.copy()
    flat_axes = [axis.astype(np.float32) for axis in (axis0, axis1) if axis is not None]
    y = np.asarray(data.y)
    subset = _pair_subset(y, a, b, total_samples)
    points = [[(float(si),) if one_d else (float(si), float(tj)) for tj in t] for si in s]
    if rows is None:
        rows = local_rows(model, data, provider=provider, batch_size=batch_size, strategy=strategy)
    pi = np.bincount(y, minlength=k) / len(y)
    shape = (len(s), len(t))
    loss_a, loss_b, acc_a, acc_b, total = (np.full(shape, np.nan) for _ in range(5))
    with Progress(shape[0] * shape[1], f"interference model {a}-{b}", enabled=progress) as bar:
        for i, row_stats in rows(subset, flat_axes, points):
            for j, stats in enumerate(row_stats):
                loss, acc = stats.loss, stats.accuracy
                loss_a[i, j], loss_b[i, j] = loss[a], loss[b]
                acc_a[i, j], acc_b[i, j] = acc[a], acc[b]
                present = stats.count > 0
                total[i, j] = float(np.sum(pi[present] * loss[present]) / np.sum(pi[present]))
                bar.advance()
    min_a = np.unravel_index(int(np.nanargmin(loss_a)), shape)
    min_b = np.unravel_index(int(np.nanargmin(loss_b)), shape)
    separation = float(np.hypot(s[min_a[0]] - s[min_b[0]], t[min_a[1]] - t[min_b[1]]) / r)
    return InterferenceModel(
        a=a, b=b, basis=basis, s=s, t=t, loss_a=loss_a, loss_b=loss_b, accuracy_a=acc_a, accuracy_b=acc_b,
        total=total, radius=float(r), conflict_angle=angle, minimum_a=(int(min_a[0]), int(min_a[1])),
        minimum_b=(int(min_b[0]), int(min_b[1])), minimum_separation=separation, resolution=2.0 / (grid - 1),
        one_dimensional=one_d, note=note, n_samples=len(subset))
