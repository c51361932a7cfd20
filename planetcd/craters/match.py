"""Matching crater lists: the one duplicate rule of planetcd, circle IoU, and scores.

Every other module (extraction, tile merging, monitoring) imports the rule
from here, so "the same crater" means the same thing everywhere.

Craters are given either as arrays of shape ``(n, >=3)`` with columns
``x, y, radius`` (pixels; planar distances), or as catalog-like objects with
``lon_deg``, ``lat_deg``, ``radius_km`` arrays and a ``body_radius_m`` float
(:class:`planetcd.craters.catalog.Catalog`): centre distances are then
great-circle distances on the body's sphere, in kilometres.

Rules
-----
``deepmoon``
    Silburt et al. (2019, DeepMoon): two craters are the same when
    ``distance**2 / min(r1, r2)**2 < 1.8`` and ``|r1 - r2| / min(r1, r2) < 1.0``.
``strict``
    The same form with ``0.5`` and ``0.25`` (meant for geodesic matching of
    catalogs; in pixels it is the same formula on planar distances).
``iou``
    Intersection over union of the two discs, ``>= 0.5`` by default, with the
    one-to-one assignment that maximises the total IoU (Hungarian algorithm).

In every mode the assignment is one-to-one: among the pairs allowed by the rule,
the assignment minimising the total normalised cost is chosen (per connected
group of candidates, so large catalogs stay fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..errors import InputError

__all__ = [
    "MODES",
    "MatchResult",
    "circle_iou",
    "circle_intersection_area",
    "same_crater",
    "candidate_pairs",
    "match_craters",
    "match_catalogs",
    "matching_space",
    "same_body",
    "pool_results",
    "suppress_duplicates",
    "suppress_nested",
    "sqrt2_bin_edges",
]

#: Thresholds ``(distance**2 / min_r**2, |dr| / min_r)`` of the distance rules.
MODES: dict[str, tuple[float, float]] = {"deepmoon": (1.8, 1.0), "strict": (0.5, 0.25)}
DEFAULT_IOU = 0.5


# ----------------------------------------------------------------------------- geometry


def circle_intersection_area(d: np.ndarray, r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Area of the intersection of two discs (the lens), element-wise.

    Parameters
    ----------
    d : array_like
        Centre distance (any length unit), broadcastable with ``r1``, ``r2``.
    r1, r2 : array_like
        Radii (same unit), >= 0.

    Returns
    -------
    ndarray
        Area in squared units: 0 for disjoint discs, ``pi * min(r)**2`` when one
        contains the other, else the lens
        ``r1² acos((d² + r1² - r2²) / (2 d r1)) + r2² acos((d² + r2² - r1²) / (2 d r2))
        - ½ sqrt((-d + r1 + r2)(d + r1 - r2)(d - r1 + r2)(d + r1 + r2))``.
    """
    d, r1, r2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (d, r1, r2)))
    area = np.zeros(d.shape)
    small = np.minimum(r1, r2)
    contained = d <= np.abs(r1 - r2)
    area[contained] = np.pi * small[contained] ** 2
    lens = ~contained & (d < r1 + r2)
    if np.any(lens):
        dl, a, b = d[lens], r1[lens], r2[lens]
        cos1 = np.clip((dl**2 + a**2 - b**2) / (2 * dl * a), -1.0, 1.0)
        cos2 = np.clip((dl**2 + b**2 - a**2) / (2 * dl * b), -1.0, 1.0)
        kite = (-dl + a + b) * (dl + a - b) * (dl - a + b) * (dl + a + b)
        area[lens] = a**2 * np.arccos(cos1) + b**2 * np.arccos(cos2) - 0.5 * np.sqrt(np.clip(kite, 0.0, None))
    return area


def circle_iou(d: np.ndarray, r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Intersection over union of two discs with centre distance ``d`` and radii ``r1``, ``r2``.

    Returns
    -------
    ndarray of float in ``[0, 1]`` (broadcast shape of the inputs).
    """
    d, r1, r2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (d, r1, r2)))
    inter = circle_intersection_area(d, r1, r2)
    union = np.pi * (r1**2 + r2**2) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Points:
    """Crater centres as 2-D (planar) or 3-D (on a sphere) coordinates, radii in the same unit."""

    xyz: np.ndarray  # (n, 2) planar or (n, 3) on the sphere
    radius: np.ndarray  # (n,)
    sphere_radius: float | None  # None: planar distances
    unit: str

    def __len__(self) -> int:
        return len(self.radius)

    def distance(self, i: np.ndarray, j: np.ndarray, other: _Points) -> np.ndarray:
        delta = self.xyz[i] - other.xyz[j]
        chord = np.sqrt(np.sum(delta**2, axis=1))
        if self.sphere_radius is None:
            return chord
        big_r = self.sphere_radius
        return 2 * big_r * np.arcsin(np.clip(chord / (2 * big_r), 0.0, 1.0))


def _check_same_body(pa: _Points, pb: _Points) -> None:
    """Refuse geographic craters on spheres whose radii differ by more than 0.1 % (two bodies)."""
    if pa.sphere_radius is None or pb.sphere_radius is None:
        return
    if abs(pa.sphere_radius - pb.sphere_radius) > 1e-3 * max(pa.sphere_radius, pb.sphere_radius):
        raise InputError(
            f"the crater lists lie on different bodies (radius {pa.sphere_radius:g} km and {pb.sphere_radius:g} km); "
            "give both on the same body"
        )


def _as_points(craters: Any) -> _Points:
    """Arrays (n, >=3) of x, y, r in pixels, or a catalog with lon/lat (deg) and radius (km)."""
    if getattr(craters, "lon_deg", None) is not None and getattr(craters, "radius_km", None) is not None:
        lon = np.deg2rad(np.asarray(craters.lon_deg, dtype=np.float64))
        lat = np.deg2rad(np.asarray(craters.lat_deg, dtype=np.float64))
        radius = np.asarray(craters.radius_km, dtype=np.float64)
        body_km = float(craters.body_radius_m) / 1000.0
        xyz = body_km * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
        return _Points(xyz.reshape(-1, 3), radius.reshape(-1), body_km, "km")
    array = np.asarray(craters, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 3)
    if array.ndim != 2 or array.shape[1] < 3:
        raise ValueError(f"craters must have shape (n, >=3) with columns x, y, radius; got {array.shape}")
    if not np.all(np.isfinite(array[:, :3])) or np.any(array[:, 2] < 0):
        raise ValueError("crater positions must be finite and radii >= 0")
    return _Points(array[:, :2].copy(), array[:, 2].copy(), None, "px")


# ----------------------------------------------------------------------------- the rule


def _thresholds(mode: str, dist2_threshold: float | None, radius_threshold: float | None) -> tuple[float, float]:
    if mode not in MODES:
        raise ValueError(f"unknown distance rule {mode!r}; use one of {', '.join(MODES)}")
    default_d2, default_r = MODES[mode]
    return (default_d2 if dist2_threshold is None else dist2_threshold, default_r if radius_threshold is None else radius_threshold)


def same_crater(
    distance: np.ndarray,
    r1: np.ndarray,
    r2: np.ndarray,
    mode: str = "deepmoon",
    *,
    dist2_threshold: float | None = None,
    radius_threshold: float | None = None,
    iou_threshold: float = DEFAULT_IOU,
) -> np.ndarray:
    """The duplicate rule: whether two craters are the same, element-wise.

    Parameters
    ----------
    distance : array_like
        Centre distance, same unit as the radii.
    r1, r2 : array_like
        Radii.
    mode : {"deepmoon", "strict", "iou"}
    dist2_threshold, radius_threshold : float, optional
        Override the mode's thresholds on ``distance**2 / min_r**2`` and ``|r1 - r2| / min_r``.
    iou_threshold : float
        For ``mode="iou"``: the smallest IoU of a match.

    Returns
    -------
    ndarray of bool
    """
    distance, r1, r2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (distance, r1, r2)))
    if mode == "iou":
        return circle_iou(distance, r1, r2) >= iou_threshold
    t_d2, t_r = _thresholds(mode, dist2_threshold, radius_threshold)
    min_r = np.minimum(r1, r2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (distance**2 < t_d2 * min_r**2) & (np.abs(r1 - r2) < t_r * min_r)
    return ok & (min_r > 0)


def _pair_cost(distance: np.ndarray, r1: np.ndarray, r2: np.ndarray, mode: str, t_d2: float, t_r: float) -> np.ndarray:
    """A cost in [0, 2) for allowed pairs, lower is better (used to choose one-to-one matches)."""
    if mode == "iou":
        return 1.0 - circle_iou(distance, r1, r2)
    min_r = np.minimum(r1, r2)
    return distance**2 / (t_d2 * min_r**2) + np.abs(r1 - r2) / (t_r * min_r)


def candidate_pairs(
    a: Any,
    b: Any,
    mode: str = "deepmoon",
    *,
    dist2_threshold: float | None = None,
    radius_threshold: float | None = None,
    iou_threshold: float = DEFAULT_IOU,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``(i in a, j in b)`` allowed by the rule, with their centre distance.

    Returns
    -------
    i, j : ndarray of int, shape (k,)
    distance : ndarray of float, shape (k,)
        In pixels for arrays, kilometres (great circle) for catalogs.
    """
    pa, pb = _as_points(a), _as_points(b)
    return _candidates(pa, pb, mode, dist2_threshold, radius_threshold, iou_threshold)


def _candidates(pa: _Points, pb: _Points, mode, dist2_threshold, radius_threshold, iou_threshold):
    empty = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    if len(pa) == 0 or len(pb) == 0:
        return empty
    if (pa.sphere_radius is None) != (pb.sphere_radius is None):
        raise ValueError("cannot match pixel arrays against a geographic catalog; convert one of them")
    _check_same_body(pa, pb)
    if mode == "iou" and iou_threshold > 0:
        # IoU <= (min r / max r)**2, so a match needs r_b <= r_a / sqrt(t), and d < r_a + r_b.
        search = pa.radius * (1.0 + 1.0 / np.sqrt(iou_threshold))
    elif mode == "iou":
        search = pa.radius + pb.radius.max()  # discs overlap only if d < r1 + r2
    else:
        t_d2, _ = _thresholds(mode, dist2_threshold, radius_threshold)
        search = np.sqrt(t_d2) * pa.radius  # d < sqrt(t) * min(r) <= sqrt(t) * r_a
    # The chord is never longer than the arc, so a chord search radius equal to the
    # arc bound finds every geodesic candidate.
    tree = cKDTree(pb.xyz)
    neighbours = tree.query_ball_point(pa.xyz, r=search * (1 + 1e-12) + 1e-12)
    counts = np.fromiter((len(n) for n in neighbours), dtype=int, count=len(pa))
    if counts.sum() == 0:
        return empty
    i = np.repeat(np.arange(len(pa)), counts)
    j = np.concatenate([np.asarray(n, dtype=int) for n in neighbours if n])
    distance = pa.distance(i, j, pb)
    keep = same_crater(
        distance,
        pa.radius[i],
        pb.radius[j],
        mode,
        dist2_threshold=dist2_threshold,
        radius_threshold=radius_threshold,
        iou_threshold=iou_threshold,
    )
    return i[keep], j[keep], distance[keep]


def _distinct_per_group(group: np.ndarray, member: np.ndarray) -> np.ndarray:
    """For each pair, how many distinct ``member`` values its group holds (arrays of shape (k,))."""
    _, first = np.unique(np.stack([group, member], axis=1), axis=0, return_index=True)
    return np.bincount(group[first], minlength=group.max() + 1)[group]


def _one_to_one(i: np.ndarray, j: np.ndarray, cost: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Minimum-cost one-to-one assignment among allowed pairs, solved per connected group.

    Returns
    -------
    ndarray of int, shape (k, 2): matched ``(i, j)`` pairs, sorted by ``i``.
    """
    if len(i) == 0:
        return np.zeros((0, 2), dtype=int)
    graph = sparse.coo_matrix((np.ones(len(i)), (i, n_a + j)), shape=(n_a + n_b, n_a + n_b))
    _, label = connected_components(graph, directed=False)
    group = label[i]
    # A group with one crater on either side (a single pair, or a star: most groups of a large
    # catalog) is solved by its cheapest pair; only the others need the assignment solver.
    star = (_distinct_per_group(group, i) == 1) | (_distinct_per_group(group, j) == 1)
    by_cost = np.flatnonzero(star)[np.lexsort((cost[star], group[star]))]
    first = by_cost[np.concatenate([[True], np.diff(group[by_cost]) != 0])] if by_cost.size else by_cost
    pairs = [np.stack([i[first], j[first]], axis=1)]
    i, j, cost, group = i[~star], j[~star], cost[~star], group[~star]
    order = np.argsort(group, kind="stable")
    i, j, cost, group = i[order], j[order], cost[order], group[order]
    splits = np.flatnonzero(np.diff(group)) + 1
    for gi, gj, gc in zip(np.split(i, splits), np.split(j, splits), np.split(cost, splits)):
        if len(gi) == 0:
            continue
        rows, row_index = np.unique(gi, return_inverse=True)
        cols, col_index = np.unique(gj, return_inverse=True)
        # Forbidden pairs cost more than any set of allowed ones, so the solver
        # maximises the number of matches first, then minimises the cost.
        big = 2.0 * (len(gi) + 1) + 10.0
        matrix = np.full((len(rows), len(cols)), big)
        matrix[row_index, col_index] = gc
        r, c = linear_sum_assignment(matrix)
        ok = matrix[r, c] < big
        pairs.append(np.stack([rows[r[ok]], cols[c[ok]]], axis=1))
    out = np.concatenate(pairs).astype(int).reshape(-1, 2)
    return out[np.argsort(out[:, 0], kind="stable")]


def suppress_duplicates(
    craters: Any,
    score: np.ndarray | None = None,
    mode: str = "deepmoon",
    *,
    dist2_threshold: float | None = None,
    radius_threshold: float | None = None,
    iou_threshold: float = DEFAULT_IOU,
) -> np.ndarray:
    """Indices of the craters kept after greedy duplicate suppression (non-maximum suppression).

    Craters are visited from the highest ``score`` down; one is dropped when it is
    the same crater (by the rule) as one already kept.

    Parameters
    ----------
    craters : ndarray (n, >=3) or catalog
    score : ndarray (n,), optional
        Higher is better; default: column 3 of an array when present, else the radius.

    Returns
    -------
    ndarray of int, sorted ascending.
    """
    points = _as_points(craters)
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=int)
    if score is None:
        array = None if points.sphere_radius is not None else np.asarray(craters, dtype=np.float64)
        if array is not None and array.ndim == 2 and array.shape[1] >= 4:
            score = array[:, 3]
        elif hasattr(craters, "confidence"):
            score = np.asarray(craters.confidence, dtype=np.float64)
        else:
            score = points.radius
    score = np.asarray(score, dtype=np.float64)
    i, j, _ = _candidates(points, points, mode, dist2_threshold, radius_threshold, iou_threshold)
    off = i != j
    i, j = i[off], j[off]
    order = np.lexsort((np.arange(n), -score))
    neighbours = np.split(j[np.argsort(i, kind="stable")], np.cumsum(np.bincount(i, minlength=n))[:-1])
    kept = np.zeros(n, dtype=bool)
    removed = np.zeros(n, dtype=bool)
    for k in order:
        if removed[k]:
            continue
        kept[k] = True
        removed[neighbours[k]] = True
    return np.flatnonzero(kept)


def suppress_nested(craters: np.ndarray, radius_ratio: float = 2.0) -> np.ndarray:
    """Indices of the craters kept when those lying wholly inside a much larger one are dropped.

    A segmenter often breaks a large crater's floor into a few small discs. Crater
    catalogues such as the annotated Mars CTX tiles mark almost no crater inside
    another (docs/segment.md, "Unseen terrain", where both segmenters are
    averaged; ``benchmarks/crater_folds.py --nested-labels``), so such discs are
    mostly fragments; where small craters inside large ones matter, do not use
    this. Craters are visited from the largest down; one is dropped when its disc
    lies inside a kept crater of at least ``radius_ratio`` times its radius
    (centre distance + its radius ≤ the larger radius).

    Parameters
    ----------
    craters : ndarray (n, >=3)
        ``x, y, r`` in pixels (further columns are ignored).
    radius_ratio : float
        How many times larger the enclosing crater must be (> 1).

    Returns
    -------
    ndarray of int, sorted ascending.
    """
    from scipy.spatial import cKDTree

    if radius_ratio <= 1.0:
        raise ValueError(f"radius_ratio must be > 1, got {radius_ratio}")
    craters = np.asarray(craters, dtype=np.float64)
    n = len(craters)
    if n < 2:
        return np.arange(n)
    xy, radius = craters[:, :2], craters[:, 2]
    tree = cKDTree(xy)
    removed = np.zeros(n, dtype=bool)
    for k in np.lexsort((np.arange(n), -radius)):  # the largest first; a dropped crater removes nothing
        if removed[k]:
            continue
        inside = np.asarray(tree.query_ball_point(xy[k], radius[k]), dtype=int)
        inside = inside[(radius[inside] * radius_ratio <= radius[k])
                        & (np.hypot(*(xy[inside] - xy[k]).T) + radius[inside] <= radius[k])]
        removed[inside] = True
    return np.flatnonzero(~removed)


# ----------------------------------------------------------------------------- scores


def sqrt2_bin_edges(diameters: np.ndarray) -> np.ndarray:
    """Bin edges ``2**(k/2)`` (same unit as ``diameters``) covering every positive diameter."""
    diameters = np.asarray(diameters, dtype=np.float64)
    diameters = diameters[diameters > 0]
    if diameters.size == 0:
        return np.array([1.0, np.sqrt(2.0)])
    k0 = int(np.floor(2 * np.log2(diameters.min()) + 1e-9))
    k1 = int(np.floor(2 * np.log2(diameters.max()) + 1e-9)) + 1
    return 2.0 ** (np.arange(k0, k1 + 1) / 2.0)


def _quartiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "iqr": float("nan")}
    q25, med, q75 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "iqr": float(q75 - q25)}


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return precision, recall, f1


@dataclass
class MatchResult:
    """What matching a detected list against a truth list gives.

    Attributes
    ----------
    pairs : ndarray of int, shape (tp, 2)
        Matched ``(detected index, truth index)`` pairs (indices into the inputs).
    tp, fp, fn : int
        Matched pairs, unmatched detections, unmatched truth craters (after the
        ``min_diameter`` cut).
    precision, recall, f1 : float
        ``nan`` where undefined (nothing detected / no truth).
    position_error : dict
        Median, quartiles and IQR of the centre distance of matched pairs (``unit``).
    position_error_rel : dict
        The same for centre distance / truth radius.
    diameter_error_rel : dict
        The same for the signed ``(D_detected - D_truth) / D_truth``.
    bins : list of dict
        Per √2 truth/detected diameter bin: ``d_lo, d_hi, n_truth, n_detected,
        tp_truth, tp_detected, precision, recall, f1``.
    mode : str
    unit : {"px", "km"}
    n_detected, n_truth : int
        Craters counted (after the ``min_diameter`` cut).
    """

    pairs: np.ndarray
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    position_error: dict = field(default_factory=dict)
    position_error_rel: dict = field(default_factory=dict)
    diameter_error_rel: dict = field(default_factory=dict)
    bins: list = field(default_factory=list)
    mode: str = "deepmoon"
    unit: str = "px"
    n_detected: int = 0
    n_truth: int = 0
    name: str = ""
    # Raw values kept so that results of several images can be pooled exactly.
    _distance: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _distance_rel: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _diameter_rel: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _truth_d: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _truth_hit: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    _det_d: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _det_hit: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def to_dict(self, pairs: bool = False) -> dict:
        """A JSON-ready dict (``pairs`` included only when asked)."""
        out = {
            "name": self.name,
            "mode": self.mode,
            "unit": self.unit,
            "n_detected": self.n_detected,
            "n_truth": self.n_truth,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "position_error": self.position_error,
            "position_error_rel": self.position_error_rel,
            "diameter_error_rel": self.diameter_error_rel,
            "bins": self.bins,
        }
        if pairs:
            out["pairs"] = self.pairs.tolist()
        return out


def _result(mode, unit, name, pairs, distance, det_r, truth_r, det_count, truth_count, det_hit, truth_hit) -> MatchResult:
    """Build a result from matched pairs and the per-crater "counted" and "matched" flags."""
    tp = len(distance)
    fp = int(np.sum(det_count & ~det_hit))
    fn = int(np.sum(truth_count & ~truth_hit))
    precision, recall, f1 = _prf(tp, fp, fn)
    d_rel = distance / truth_r if tp else np.zeros(0)
    diam_rel = (det_r - truth_r) / truth_r if tp else np.zeros(0)
    result = MatchResult(
        pairs=pairs,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        mode=mode,
        unit=unit,
        name=name,
        _distance=distance,
        _distance_rel=d_rel,
        _diameter_rel=diam_rel,
    )
    return result


def _finish(result: MatchResult, truth_d, truth_hit, det_d, det_hit) -> MatchResult:
    result._truth_d, result._truth_hit, result._det_d, result._det_hit = truth_d, truth_hit, det_d, det_hit
    result.n_truth, result.n_detected = int(truth_d.size), int(det_d.size)
    result.position_error = _quartiles(result._distance)
    result.position_error_rel = _quartiles(result._distance_rel)
    result.diameter_error_rel = _quartiles(result._diameter_rel)
    edges = sqrt2_bin_edges(np.concatenate([truth_d, det_d]))
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_t = (truth_d >= lo) & (truth_d < hi)
        in_d = (det_d >= lo) & (det_d < hi)
        n_t, n_d = int(in_t.sum()), int(in_d.sum())
        tp_t, tp_d = int(np.sum(truth_hit[in_t])), int(np.sum(det_hit[in_d]))
        precision = tp_d / n_d if n_d else float("nan")
        recall = tp_t / n_t if n_t else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if n_t and n_d and precision + recall > 0 else float("nan")
        bins.append(
            {
                "d_lo": float(lo),
                "d_hi": float(hi),
                "n_truth": n_t,
                "n_detected": n_d,
                "tp_truth": tp_t,
                "tp_detected": tp_d,
                "precision": precision,
                "recall": recall,
                "f1": f1,
            }
        )
    result.bins = bins
    return result


def match_craters(
    detected: Any,
    truth: Any,
    mode: str = "deepmoon",
    min_diameter_px: float | None = None,
    *,
    min_diameter_km: float | None = None,
    dist2_threshold: float | None = None,
    radius_threshold: float | None = None,
    iou_threshold: float = DEFAULT_IOU,
    name: str = "",
) -> MatchResult:
    """Match detected craters one-to-one to true craters and score them.

    Parameters
    ----------
    detected, truth : ndarray (n, >=3) or catalog
        Arrays: columns ``x, y, radius`` in pixels (further columns ignored).
        Catalogs (objects with ``lon_deg``, ``lat_deg``, ``radius_km``,
        ``body_radius_m``): matched on great-circle distances, in km.
    mode : {"deepmoon", "strict", "iou"}
        The rule (see the module docstring).
    min_diameter_px, min_diameter_km : float, optional
        Size cut (pixel arrays / catalogs). Matching uses every crater, so a
        crater just under the cut can still match one just above it; unmatched
        craters under the cut are then not counted, and a pair is counted when
        either of its craters reaches the cut.
    dist2_threshold, radius_threshold, iou_threshold : float, optional
        Override the rule's thresholds.
    name : str
        A label kept in the result (an image name, for per-image tables).

    Returns
    -------
    MatchResult
    """
    if mode not in (*MODES, "iou"):
        raise ValueError(f"unknown match mode {mode!r}; use deepmoon, strict or iou")
    pd, pt = _as_points(detected), _as_points(truth)
    i, j, distance = _candidates(pd, pt, mode, dist2_threshold, radius_threshold, iou_threshold)
    t_d2, t_r = (1.0, 1.0) if mode == "iou" else _thresholds(mode, dist2_threshold, radius_threshold)
    cost = _pair_cost(distance, pd.radius[i], pt.radius[j], mode, t_d2, t_r)
    pairs = _one_to_one(i, j, cost, len(pd), len(pt))

    min_d = min_diameter_km if pd.unit == "km" else min_diameter_px
    det_d, truth_d = 2 * pd.radius, 2 * pt.radius
    det_count = det_d >= min_d if min_d else np.ones(len(pd), bool)
    truth_count = truth_d >= min_d if min_d else np.ones(len(pt), bool)
    pair_counts = det_count[pairs[:, 0]] | truth_count[pairs[:, 1]]
    pairs = pairs[pair_counts]
    det_hit = np.zeros(len(pd), bool)
    truth_hit = np.zeros(len(pt), bool)
    det_hit[pairs[:, 0]] = True
    truth_hit[pairs[:, 1]] = True
    # A matched crater is counted even when under the cut (its partner reaches it).
    det_count |= det_hit
    truth_count |= truth_hit

    lookup = {(a, b): k for k, (a, b) in enumerate(zip(i, j))}
    pair_distance = np.array([distance[lookup[(a, b)]] for a, b in pairs], dtype=np.float64)
    result = _result(
        mode,
        pd.unit,
        name,
        pairs,
        pair_distance,
        pd.radius[pairs[:, 0]],
        pt.radius[pairs[:, 1]],
        det_count,
        truth_count,
        det_hit,
        truth_hit,
    )
    return _finish(result, truth_d[truth_count], truth_hit[truth_count], det_d[det_count], det_hit[det_count])


SPACES = ("auto", "pixels", "geographic")


def matching_space(detected: Any, truth: Any, space: str = "auto", mode: str = "deepmoon") -> str:
    """Where two catalogs are matched: ``"pixels"`` (planar) or ``"geographic"`` (great circles).

    ``auto`` picks geographic when both catalogs have lon/lat and diameters in km and either the
    mode is ``strict`` (meant for geodesic matching) or a catalog lacks pixel positions; else pixels.

    Raises
    ------
    InputError
        When the space asked for (or the only one possible) lacks the columns it needs in either catalog.
    """
    if space not in SPACES:
        raise InputError(f"unknown matching space {space!r}; use {', '.join(SPACES)}")
    has_px = all(len(c) == 0 or not np.isnan(c.x_px).all() for c in (detected, truth))  # an empty list has any column
    has_geo = all(getattr(c, name) is not None for c in (detected, truth) for name in ("lon_deg", "diameter_km"))
    if space == "auto":
        space = "geographic" if has_geo and (mode == "strict" or not has_px) else "pixels"
    if space == "geographic" and not has_geo:
        raise InputError("geographic matching needs lon/lat and diameters in km in both crater lists")
    if space == "pixels" and not has_px:
        raise InputError("pixel matching needs pixel positions in both crater lists; match in geographic space")
    return space


def _check_usable(catalog: Any, space: str, role: str) -> None:
    """Refuse craters with a non-finite position or size, or a negative size, in the matching space.

    Raises
    ------
    InputError
        Naming the list (its ``name``, else ``role``), how many craters are bad and the first of them.
    """
    if space == "pixels":
        position, size = np.stack([catalog.x_px, catalog.y_px], axis=1), catalog.radius_px
    else:
        position, size = np.stack([catalog.lon_deg, catalog.lat_deg], axis=1), catalog.diameter_km
    bad = np.flatnonzero(~(np.all(np.isfinite(position), axis=1) & np.isfinite(size) & (size >= 0)))
    if bad.size:
        raise InputError(
            f"{getattr(catalog, 'name', '') or role}: {bad.size} of {len(size)} craters have a non-finite position "
            f"or size, or a negative size (first: crater {bad[0] + 1})"
        )


def same_body(detected: Any, truth: Any) -> tuple[Any, Any]:
    """Put a catalog whose body was assumed (``body_assumed``: a lon/lat list naming none) on the other's body.

    Returns
    -------
    detected, truth : Catalog
        Unchanged when the bodies agree or neither body was assumed (matching then refuses two bodies).
    """
    if detected.body_radius_m == truth.body_radius_m:
        return detected, truth
    if getattr(detected, "body_assumed", False) and not getattr(truth, "body_assumed", False):
        return detected.on_body(truth.body_radius_m), truth
    if getattr(truth, "body_assumed", False) and not getattr(detected, "body_assumed", False):
        return detected, truth.on_body(detected.body_radius_m)
    return detected, truth


def match_catalogs(
    detected: Any,
    truth: Any,
    mode: str = "deepmoon",
    *,
    space: str = "auto",
    min_diameter: float | None = None,
    iou_threshold: float = DEFAULT_IOU,
    name: str = "",
) -> tuple[MatchResult, str]:
    """Match two :class:`~planetcd.craters.catalog.Catalog` in the space :func:`matching_space` picks.

    In geographic space a catalog whose body was assumed takes the other's body (:func:`same_body`);
    catalogs on two different bodies are refused.

    Parameters
    ----------
    detected, truth : Catalog
    mode : {"deepmoon", "strict", "iou"}
    space : {"auto", "pixels", "geographic"}
    min_diameter : float, optional
        Size cut of :func:`match_craters`: pixels in pixel space, km in geographic space.
    iou_threshold : float
    name : str

    Returns
    -------
    result : MatchResult
    space : str
        The space used (``"pixels"`` or ``"geographic"``).
    """
    used = matching_space(detected, truth, space, mode)
    for catalog, role in ((detected, "detected"), (truth, "truth")):
        _check_usable(catalog, used, role)
    if used == "geographic":
        detected, truth = same_body(detected, truth)
    if used == "pixels":
        a, b = np.asarray(detected)[:, :3], np.asarray(truth)[:, :3]
        cut = {"min_diameter_px": min_diameter}
    else:
        a, b = detected, truth
        cut = {"min_diameter_km": min_diameter}
    return match_craters(a, b, mode, iou_threshold=iou_threshold, name=name, **cut), used


def pool_results(results: list[MatchResult], name: str = "pooled") -> MatchResult:
    """Pool per-image results: counts summed, error statistics over all matched pairs.

    The ``pairs`` of the pooled result are left empty (indices refer to different images).
    """
    if not results:
        raise ValueError("no results to pool")
    modes = {r.mode for r in results}
    units = {r.unit for r in results}
    if len(modes) > 1 or len(units) > 1:
        raise ValueError("results to pool must share mode and unit")
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    precision, recall, f1 = _prf(tp, fp, fn)
    pooled = MatchResult(
        pairs=np.zeros((0, 2), dtype=int),
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        mode=results[0].mode,
        unit=results[0].unit,
        name=name,
        _distance=np.concatenate([r._distance for r in results]),
        _distance_rel=np.concatenate([r._distance_rel for r in results]),
        _diameter_rel=np.concatenate([r._diameter_rel for r in results]),
    )
    return _finish(
        pooled,
        np.concatenate([r._truth_d for r in results]),
        np.concatenate([r._truth_hit for r in results]),
        np.concatenate([r._det_d for r in results]),
        np.concatenate([r._det_hit for r in results]),
    )
