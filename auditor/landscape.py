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
           "lattice_sizes", "refine_points", "plane_evaluations", "pair_subset", "parallel", "local_rows",
           "plane_evaluator", "BASES"]

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
        classes from a stratified subsample, each class weighted by its share of D). NaN
        at grid points not evaluated (see ``lattice``); ``total`` is known on the lattice.
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
        Samples evaluated per lattice point (D_a ∪ D_b and the subsample of the rest).
    lattice : int
        Points per axis evaluated over the whole plane: every ``(n - 1) / (lattice - 1)``-th
        grid point. Equal to ``n`` when every grid point was evaluated.
    refined : int
        Grid points evaluated near each class's lattice minimum, per class (0 for a full
        grid), on D_a ∪ D_b only (``refine_samples`` samples).
    refine_samples : int
    evaluations : int
        Passes over the pair's samples in all.
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
    lattice: int = 0
    refined: int = 0
    refine_samples: int = 0
    evaluations: int = 0

    def __post_init__(self) -> None:
        for x in (self.s, self.t, self.loss_a, self.loss_b, self.accuracy_a, self.accuracy_b, self.total):
            x.flags.writeable = False

    _ARRAYS = ("s", "t", "loss_a", "loss_b", "accuracy_a", "accuracy_b", "total")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {n: json_array(getattr(self, n)) for n in self._ARRAYS}
        d.update(a=self.a, b=self.b, basis=self.basis, radius=self.radius, conflict_angle=self.conflict_angle,
                 minimum_a=list(self.minimum_a), minimum_b=list(self.minimum_b),
                 minimum_separation=self.minimum_separation, resolution=self.resolution,
                 one_dimensional=self.one_dimensional, note=self.note, n_samples=self.n_samples,
                 lattice=self.lattice, refined=self.refined, refine_samples=self.refine_samples,
                 evaluations=self.evaluations)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterferenceModel:
        arrays = {n: array_from_json(d[n]) for n in cls._ARRAYS}
        return cls(a=int(d["a"]), b=int(d["b"]), basis=d["basis"], radius=float(d["radius"]),
                   conflict_angle=float(d["conflict_angle"]), minimum_a=_index(d["minimum_a"]),
                   minimum_b=_index(d["minimum_b"]),
                   minimum_separation=float(d["minimum_separation"]), resolution=float(d["resolution"]),
                   one_dimensional=bool(d["one_dimensional"]), note=d.get("note", ""),
                   n_samples=int(d.get("n_samples", 0)), lattice=int(d.get("lattice", len(arrays["s"]))),
                   refined=int(d.get("refined", 0)), refine_samples=int(d.get("refine_samples", 0)),
                   evaluations=int(d.get("evaluations", 0)), **arrays)

    def lattice_view(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(s, t, arrays)`` at the lattice points only: every array defined everywhere (for contours)."""
        step = max((len(self.s) - 1) // max(self.lattice - 1, 1), 1) if self.lattice else 1
        rows = slice(None, None, step)
        cols = rows if len(self.t) > 1 else slice(None)
        return self.s[rows], self.t[cols], {n: getattr(self, n)[rows, cols] for n in self._ARRAYS[2:]}


def _index(value: Sequence[int]) -> tuple[int, int]:
    """A grid index ``(i, j)`` read from JSON."""
    i, j = value
    return int(i), int(j)


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


def lattice_sizes(grid: int) -> list[int]:
    """Lattice sizes (points per axis) that a grid of ``grid`` points per axis allows, ascending.

    A lattice takes every k-th grid point with k dividing ``(grid - 1) / 2``, so it keeps
    both ends and θ* (the middle point); ``grid`` itself (k = 1) is the full grid.
    """
    half = (grid - 1) // 2
    return sorted({(grid - 1) // k + 1 for k in range(1, half + 1) if half % k == 0 and (grid - 1) % k == 0})


def _refine_steps(stride: int) -> list[int]:
    """Search steps from a lattice point down to one grid cell: ceil-halving ``stride``."""
    steps, step = [], stride
    while step > 1:
        step = -(-step // 2)
        steps.append(step)
    return steps


def refine_points(grid: int, lattice: int, one_dimensional: bool = False) -> int:
    """Grid points evaluated near each class's minimum for a lattice of ``lattice`` points per axis.

    One search step per halving of the lattice spacing: the up to 8 neighbours (2 in 1-D)
    at that distance from the best point so far; neighbours off the grid or already
    evaluated are made up by the nearest points not yet evaluated. 0 for a full grid.
    """
    if lattice >= grid:
        return 0
    neighbours = 2 if one_dimensional else 8
    return neighbours * len(_refine_steps((grid - 1) // (lattice - 1)))


def plane_evaluations(grid: int, lattice: int, one_dimensional: bool = False) -> tuple[int, int]:
    """``(lattice evaluations, refinement evaluations)`` of one pair; every grid point is evaluated at most once."""
    cols = 1 if one_dimensional else None
    lattice_points = lattice * (cols or lattice)
    points = grid * (cols or grid)
    refined = min(2 * refine_points(grid, lattice, one_dimensional), points - lattice_points)
    return lattice_points, refined


class _Plane:
    """The grid's values as they are evaluated; NaN where not (yet) evaluated."""

    NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj]

    def __init__(self, n: int, m: int, a: int, b: int, pi: np.ndarray) -> None:
        self.a, self.b, self.pi = a, b, pi
        self.values = {name: np.full((n, m), np.nan) for name in ("loss_a", "loss_b", "accuracy_a", "accuracy_b",
                                                                   "total")}
        self.evaluated = np.zeros((n, m), dtype=bool)

    def store(self, points: Sequence[tuple[int, int]], stats: Sequence[StepStats], with_total: bool) -> None:
        for (i, j), st in zip(points, stats):
            loss, acc = st.loss, st.accuracy
            self.values["loss_a"][i, j], self.values["loss_b"][i, j] = loss[self.a], loss[self.b]
            self.values["accuracy_a"][i, j], self.values["accuracy_b"][i, j] = acc[self.a], acc[self.b]
            if with_total:
                present = st.count > 0
                self.values["total"][i, j] = float(np.sum(self.pi[present] * loss[present]) / np.sum(self.pi[present]))
            self.evaluated[i, j] = True

    def best(self, name: str) -> tuple[int, int]:
        """Grid index of the smallest evaluated value (ties: the first in row-major order)."""
        i, j = np.unravel_index(int(np.nanargmin(self.values[name])), self.evaluated.shape)
        return int(i), int(j)

    def neighbours(self, centre: tuple[int, int], step: int) -> list[tuple[int, int]]:
        n, m = self.evaluated.shape
        out = []
        for di, dj in self.NEIGHBOURS:
            i, j = centre[0] + di * step, centre[1] + (dj * step if m > 1 else 0)
            if 0 <= i < n and 0 <= j < m and not self.evaluated[i, j] and (i, j) not in out:
                out.append((i, j))
        return out

    def nearest(self, centre: tuple[int, int]) -> list[tuple[int, int]]:
        """The points not yet evaluated at the smallest Chebyshev distance from ``centre``, row-major."""
        i, j = np.nonzero(~self.evaluated)
        if not len(i):
            return []
        distance = np.maximum(np.abs(i - centre[0]), np.abs(j - centre[1]))
        keep = distance == distance.min()
        return [(int(p), int(q)) for p, q in zip(i[keep], j[keep])]


def _refine(plane: _Plane, name: str, stride: int, quota: int,
            evaluate: Callable[[list[tuple[int, int]]], None]) -> None:
    """Spend ``quota`` evaluations (fewer only if the grid runs out) near the minimum of ``name``."""
    spent = 0
    for step in _refine_steps(stride):
        points = plane.neighbours(plane.best(name), step)[: quota - spent]
        evaluate(points)
        spent += len(points)
    while spent < quota:
        points = plane.nearest(plane.best(name))[: quota - spent]
        if not points:
            return
        evaluate(points)
        spent += len(points)


def parallel(directions: Directions, a: int, b: int) -> bool:
    """d_b is (anti)parallel to d_a: the orthonormal basis has no second axis (a 1-D model)."""
    da, db = directions.vector(a).astype(np.float64), directions.vector(b).astype(np.float64)
    return bool(abs(float(da @ db / (np.linalg.norm(da) * np.linalg.norm(db)))) > 1 - PARALLEL)


def pair_subset(y: np.ndarray, a: int, b: int, total_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a pair's lattice samples (D_a ∪ D_b and a stratified subsample of the rest, at
    most ``total_samples`` unless one sample per other class is more) and of D_a ∪ D_b."""
    return _pair_subset(y, a, b, total_samples), np.flatnonzero((y == a) | (y == b))


def pair_subset_sizes(counts: np.ndarray, a: int, b: int, total_samples: int) -> tuple[int, int]:
    """``len`` of both index arrays :func:`pair_subset` returns, from the class counts alone
    (the budget prices every candidate pair at every size without drawing a subsample)."""
    counts = np.asarray(counts, dtype=np.int64)
    counts = np.pad(counts, (0, max(a, b) + 1 - len(counts))) if max(a, b) >= len(counts) else counts
    n_pair = int(counts[a] + (counts[b] if b != a else 0))
    others = np.delete(counts, sorted({a, b}))
    others = others[others > 0]
    budget = max(total_samples - n_pair, 0)
    if int(others.sum()) <= budget:
        return n_pair + int(others.sum()), n_pair
    per = max(budget // max(len(others), 1), 1)
    return n_pair + int(np.minimum(others, per).sum()), n_pair


@dataclass(frozen=True)
class _Axes:
    flat: list[np.ndarray]
    radius: float
    s: np.ndarray
    one_dimensional: bool
    note: str
    conflict_angle: float


def _axes(a: int, b: int, directions: Directions | None, gradients: ClassGradients, basis: str, grid: int,
          alpha_max: float | None, learning_rate: float) -> _Axes:
    """The plane's axes (flat float32 vectors over θ), its radius and the grid coordinates."""
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
        amax = float(alpha_max if alpha_max is not None else directions.alpha_max[directions.classes.index(a)])
        r = float(amax * max(na, nb))
        axis0, axis1 = u, None
        if parallel(directions, a, b):
            one_d, note = True, "d_b is (anti)parallel to d_a: no second axis, so the model is 1-D along u"
        else:
            v = db - (u @ db) * u
            axis1 = v / np.linalg.norm(v)
    else:
        axis0, axis1 = -ga, -gb  # θ* - s g_a - t g_b
        r = 10 * learning_rate
    flat = [axis.astype(np.float32) for axis in (axis0, axis1) if axis is not None]
    return _Axes(flat, float(r), np.linspace(-r, r, grid), one_d, note, angle)


#: ``rows(subset, axes, points)`` evaluates a pair's grid: ``subset`` the sample indices,
#: ``axes`` the flat float32 axes (1 or 2), ``points[i]`` the coordinates of row ``i``; it
#: yields ``(i, stats of row i's points)`` in any order (see :func:`local_rows`).
GridRows = Callable[[np.ndarray, Sequence[np.ndarray], Sequence[Sequence[tuple[float, ...]]]],
                    Iterable[tuple[int, Sequence[StepStats]]]]


def plane_evaluator(model: Model, data: Dataset, subset: np.ndarray, axes: Sequence[np.ndarray], *,
                    provider: str = "auto", batch_size: int = 256, strategy: str = "auto",
                    parent: Evaluator | None = None) -> Evaluator:
    """An evaluator of ``data.subset(subset)`` at ``θ* + Σ_j p_j · axes[j]`` (axes flat over θ).

    With ``parent`` (an evaluator of the same model over ``data``) it shares the parent's
    sessions: a large model builds its two-direction session and its rebuild graph once per
    audit, not once per grid.
    """
    shapes = tuple(p.shape for p in model.parameters)
    if parent is not None:
        evaluator = parent.restricted(np.asarray(subset), n_directions=len(axes),
                                      strategy=None if strategy == "auto" else strategy)
    else:
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
                       grid: int = 25, lattice: int | None = None, alpha_max: float | None = None,
                       learning_rate: float = 0.01, total_samples: int = 2000, provider: str = "auto",
                       batch_size: int = 256, strategy: str = "auto", progress: bool | None = None,
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
    lattice : int, optional
        Evaluate only every ``(grid - 1) / (lattice - 1)``-th point over the whole plane, then
        search near each class's lattice minimum down to one grid cell, on D_a ∪ D_b only
        (see Notes). One of :func:`lattice_sizes`; default: ``grid`` (every point).
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

    Notes
    -----
    The minimum of each class is the smallest value among the points evaluated (ties: the
    first in row-major order). With a lattice, the search from the lattice's minimum halves
    its step down to one grid cell and then takes the nearest points not yet evaluated, so
    the minimum is resolved to one grid cell in the basin the lattice found.
    """
    if basis not in BASES:
        raise OptionError(f"unknown basis {basis!r}; choose one of {', '.join(BASES)}")
    if grid < 3:
        raise OptionError(f"the interference-model grid needs >= 3 points per axis, got {grid}")
    if gradients is None:
        raise OptionError("interference_model needs the class gradients")
    lattice = grid if lattice is None else lattice
    if lattice not in lattice_sizes(grid):
        raise OptionError(f"a lattice of {lattice} points does not fit a grid of {grid}; choose one of "
                          f"{', '.join(map(str, lattice_sizes(grid)))}")
    ax = _axes(a, b, directions, gradients, basis, grid, alpha_max, learning_rate)
    s, t = ax.s, (np.zeros(1) if ax.one_dimensional else ax.s.copy())
    y = np.asarray(data.y)
    subset, pair = pair_subset(y, a, b, total_samples)
    if rows is None:
        rows = local_rows(model, data, provider=provider, batch_size=batch_size, strategy=strategy)
    plane = _Plane(len(s), len(t), a, b, np.bincount(y, minlength=model.n_classes) / len(y))
    stride = (grid - 1) // (lattice - 1)
    n_lattice, n_refined = plane_evaluations(grid, lattice, ax.one_dimensional)

    def coords(p: tuple[int, int]) -> tuple[float, ...]:
        return (float(s[p[0]]),) if ax.one_dimensional else (float(s[p[0]]), float(t[p[1]]))

    with Progress(n_lattice + n_refined, f"interference model {a}-{b}", enabled=progress) as bar:
        cols = list(range(0, len(t), stride))
        lattice_rows = [[(i, j) for j in cols] for i in range(0, len(s), stride)]
        for r, stats in rows(subset, ax.flat, [[coords(p) for p in row] for row in lattice_rows]):
            plane.store(lattice_rows[r], stats, True)
            bar.advance(len(stats))

        def refine_at(points: list[tuple[int, int]]) -> None:
            if points:
                for _, stats in rows(pair, ax.flat, [[coords(p) for p in points]]):
                    plane.store(points, stats, False)
                    bar.advance(len(stats))

        quota = refine_points(grid, lattice, ax.one_dimensional)
        if quota:
            _refine(plane, "loss_a", stride, quota, refine_at)
            _refine(plane, "loss_b", stride, quota, refine_at)
    min_a, min_b = plane.best("loss_a"), plane.best("loss_b")
    separation = float(np.hypot(s[min_a[0]] - s[min_b[0]], t[min_a[1]] - t[min_b[1]]) / ax.radius)
    return InterferenceModel(
        a=a, b=b, basis=basis, s=s, t=t, **plane.values, radius=ax.radius, conflict_angle=ax.conflict_angle,
        minimum_a=min_a, minimum_b=min_b, minimum_separation=separation, resolution=2.0 / (grid - 1),
        one_dimensional=ax.one_dimensional, note=ax.note, n_samples=len(subset), lattice=lattice,
        refined=quota, refine_samples=len(pair) if quota else 0, evaluations=int(plane.evaluated.sum()))
