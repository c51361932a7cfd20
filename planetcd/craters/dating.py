"""Crater size-frequency distributions and model ages.

The path from a list of crater diameters on a counting area to a model age:

1. bin the diameters (:func:`bin_counts`: pseudo-log, root-2, 10 or 20 per decade);
2. present them (:func:`sfd_points`: cumulative, differential, R-plot or incremental,
   with Poisson error bars);
3. fit a production function scaled by N(1), and turn N(1) into an age with a
   chronology function (:func:`fit_age`: Poisson likelihood, cumulative fit or
   differential fit over a diameter range);
4. plot (:func:`plot_csfd`).

Production and chronology coefficients live in ``data/chronology.json`` with
their references. Chronology systems: ``moon-neukum-1983``,
``mars-neukum-ivanov``, ``mars-ivanov``, ``mars-hartmann-2004``.

The methods follow those of *craterstats* (Michael & Neukum 2010; Michael 2013;
Michael et al. 2016), whose published ages the tests reproduce; where planetcd
departs from craterstats the code says so in a comment.

Units: diameters in km, areas in km², densities per km², ages in Ga.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np
from scipy.special import gammaln
from scipy.stats import chi2

from ..errors import InputError

__all__ = [
    "BINNINGS",
    "METHODS",
    "PRESENTATIONS",
    "AgeFit",
    "BinnedCounts",
    "ChronologyFunction",
    "ChronologySystem",
    "CraterCounts",
    "ProductionFunction",
    "SFDPoints",
    "bin_bias_correction",
    "bin_counts",
    "bin_edges",
    "fit_age",
    "get_system",
    "list_systems",
    "plot_csfd",
    "poisson_age_pdf",
    "sfd_points",
]

BINNINGS = ("pseudo-log", "root-2", "10/decade", "20/decade")
PRESENTATIONS = ("cumulative", "differential", "R", "incremental")
METHODS = ("poisson", "cumulative", "differential")
_METHOD_ALIASES = {"c-fit": "cumulative", "d-fit": "differential", "cfit": "cumulative", "dfit": "differential"}
#: Lower and upper 1-sigma Gaussian-equivalent percentiles (15.9 %, 84.1 %).
SIGMA_PERCENTILES = (0.5 * (1 - math.erf(1 / math.sqrt(2))), 0.5 * (1 + math.erf(1 / math.sqrt(2))))
#: Oldest model age (Ga) the chronology functions are calibrated for; older fits are extrapolations.
CHRONOLOGY_MAX_AGE_GA = 4.5
#: Mantissas of craterstats' pseudo-log bin boundaries within a decade.
PSEUDO_LOG_MANTISSAS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0)


# ----------------------------------------------------------------------------- counts


@dataclass
class CraterCounts:
    """Crater diameters counted on one area.

    Attributes
    ----------
    diameter_km : ndarray, shape (n,)
    area_km2 : float
    fraction : ndarray, shape (n,)
        Weight of each crater in ``(0, 1]`` (buffered counts: the fraction of the
        crater's buffer inside the area); ones for a plain count.
    perimeter_km : float or None
    name : str
    body_radius_km : float or None
        Radius of the body the count was made on (km), when the file states it
        (the ellipsoid of a ``.scc``, the body of a catalogue); :func:`fit_age`
        refuses a chronology system of another body. ``None``: unknown.
    """

    diameter_km: np.ndarray
    area_km2: float
    fraction: np.ndarray | None = None
    perimeter_km: float | None = None
    name: str = ""
    body_radius_km: float | None = None

    def __post_init__(self):
        self.diameter_km = np.asarray(self.diameter_km, dtype=np.float64).reshape(-1)
        if self.fraction is None:
            self.fraction = np.ones_like(self.diameter_km)
        self.fraction = np.asarray(self.fraction, dtype=np.float64).reshape(-1)
        if self.fraction.shape != self.diameter_km.shape:
            raise InputError("crater fractions and diameters differ in length")
        if not np.isfinite(self.area_km2) or self.area_km2 <= 0:
            raise InputError(f"counting area must be positive, got {self.area_km2} km²")
        bad = np.flatnonzero(~(np.isfinite(self.diameter_km) & (self.diameter_km > 0)))
        if bad.size:
            raise InputError(
                f"crater diameters must be positive and finite: {bad.size} of {len(self.diameter_km)} are not "
                f"(first: crater {bad[0] + 1}, {self.diameter_km[bad[0]]:g} km)"
            )
        if np.any(self.fraction < 0) or np.any(self.fraction > 1):
            raise InputError("crater fractions must lie in [0, 1]")
        self.area_km2 = float(self.area_km2)

    def __len__(self) -> int:
        return len(self.diameter_km)


# ----------------------------------------------------------------------------- functions


@dataclass(frozen=True)
class ProductionFunction:
    """A crater production function: cumulative density N(>D) scaled by ``a0 = log10 N(1)``.

    Attributes
    ----------
    name : str
    kind : {"polynomial", "tabular-root2"}
    coefficients : tuple of float
        Polynomial: ``a_0 .. a_11`` of ``log10 N = sum a_i (log10 D)^i``
        (``a_0`` is replaced by the fitted value). Tabular: cumulative
        ``log10 N`` at the root-2 bin boundaries, normalised to 0 at 1 km.
    d_range_km : (float, float)
        Diameters over which the function is defined.
    reference : str
    log_d_table : tuple of float
        Tabular kind only: ``log10`` of the bin boundaries (km).
    """

    name: str
    kind: str
    coefficients: tuple
    d_range_km: tuple
    reference: str = ""
    log_d_table: tuple = ()

    def log10_cumulative(self, d_km: np.ndarray, a0: float = 0.0) -> np.ndarray:
        """``log10`` of the cumulative density N(>D) (per km²) for ``a0 = log10 N(1)``."""
        x = np.log10(np.asarray(d_km, dtype=np.float64))
        if self.kind == "polynomial":
            return a0 + np.polynomial.polynomial.polyval(x, (0.0,) + tuple(self.coefficients[1:]))
        return a0 + self._table_curve()(np.clip(x, self.log_d_table[0], self.log_d_table[-1]))

    def _table_curve(self):
        # Tabular kind: a monotone cubic (PCHIP) through log N at the bin boundaries, so
        # that slopes and differential densities are continuous. It agrees with
        # craterstats' piecewise-linear log-log interpolation at every tabulated diameter.
        from scipy.interpolate import PchipInterpolator

        return PchipInterpolator(np.asarray(self.log_d_table), np.asarray(self.coefficients))

    def cumulative(self, d_km: np.ndarray, a0: float = 0.0) -> np.ndarray:
        """Cumulative density N(>D) per km²."""
        return 10.0 ** self.log10_cumulative(d_km, a0)

    def log_slope(self, d_km: np.ndarray) -> np.ndarray:
        """Local cumulative log-log slope ``d log10 N / d log10 D`` (negative)."""
        x = np.log10(np.asarray(d_km, dtype=np.float64))
        if self.kind == "polynomial":
            derivative = np.polynomial.polynomial.polyder(np.asarray(self.coefficients, dtype=np.float64))
            return np.polynomial.polynomial.polyval(x, derivative)
        # Tabular: the derivative of the PCHIP curve (craterstats instead interpolates
        # binning-bias-corrected bin values; both follow Hartmann's table).
        return self._table_curve().derivative()(np.clip(x, self.log_d_table[0], self.log_d_table[-1]))

    def differential(self, d_km: np.ndarray, a0: float = 0.0) -> np.ndarray:
        """Differential density ``-dN/dD`` per km² per km (Michael & Neukum 2010, Eq. 1)."""
        d = np.asarray(d_km, dtype=np.float64)
        return -self.cumulative(d, a0) * self.log_slope(d) / d

    def evaluate(self, presentation: str, d_km: np.ndarray, a0: float = 0.0) -> np.ndarray:
        """The function in a presentation: cumulative, differential or R (``D**3 * differential``)."""
        d = np.asarray(d_km, dtype=np.float64)
        if presentation == "cumulative":
            return self.cumulative(d, a0)
        if presentation == "differential":
            return self.differential(d, a0)
        if presentation == "R":
            return self.differential(d, a0) * d**3
        raise ValueError(f"no production-function curve for presentation {presentation!r}")


@dataclass(frozen=True)
class ChronologyFunction:
    """Cumulative density of craters larger than 1 km versus time: ``N(1) = a (exp(b t) - 1) + c t``.

    Attributes
    ----------
    name : str
    a, b, c : float
        Coefficients (N(1) per km², t in Ga).
    reference : str
    """

    name: str
    a: float
    b: float
    c: float
    reference: str = ""

    def n1(self, t_ga: np.ndarray) -> np.ndarray:
        """N(1) per km² for a surface of age ``t_ga``."""
        t = np.asarray(t_ga, dtype=np.float64)
        return self.a * np.expm1(self.b * t) + self.c * t

    def rate(self, t_ga: np.ndarray) -> np.ndarray:
        """dN(1)/dt per km² per Ga."""
        t = np.asarray(t_ga, dtype=np.float64)
        return self.a * self.b * np.exp(self.b * t) + self.c

    def age(self, n1: np.ndarray, t_max_ga: float = 6.0) -> np.ndarray:
        """Age in Ga of a surface with crater density ``n1`` (inverse of :meth:`n1`).

        Solved by interpolation on a fine grid and Newton steps (N(1) is strictly
        increasing); densities above ``N(1)(t_max_ga)`` give ``t_max_ga``.
        """
        n1 = np.asarray(n1, dtype=np.float64)
        grid = np.linspace(0.0, t_max_ga, 6001)
        t = np.interp(n1, self.n1(grid), grid)
        for _ in range(4):
            inside = (t > 0) & (t < t_max_ga)
            step = np.where(inside, (self.n1(t) - n1) / self.rate(t), 0.0)
            t = np.clip(t - step, 0.0, t_max_ga)
        return t


@dataclass(frozen=True)
class ChronologySystem:
    """A production function and a chronology function for one body."""

    name: str
    title: str
    body: str
    body_radius_km: float
    production: ProductionFunction
    chronology: ChronologyFunction

    def n1_to_age(self, n1: np.ndarray) -> np.ndarray:
        """Age in Ga of surfaces with N(1) = ``n1`` per km² (the chronology's inverse)."""
        return self.chronology.age(n1)


@lru_cache(maxsize=1)
def _definitions() -> dict:
    text = resources.files("planetcd.craters").joinpath("data/chronology.json").read_text(encoding="utf-8")
    return json.loads(text)


def _production(name: str) -> ProductionFunction:
    spec = _definitions()["production"][name]
    if spec["kind"] == "polynomial":
        return ProductionFunction(name, "polynomial", tuple(spec["coefficients"]), tuple(spec["d_range_km"]), spec["reference"])
    incremental = np.asarray(spec["H"], dtype=np.float64)
    index_1km = int(spec["index_1km"])
    cumulative = np.log10(np.cumsum(incremental[::-1])[::-1])
    cumulative -= cumulative[index_1km]
    log_d = (np.arange(len(incremental)) - index_1km) / 2.0 * np.log10(2.0)
    return ProductionFunction(
        name,
        "tabular-root2",
        tuple(cumulative),
        (10 ** log_d[0], 10 ** log_d[-1]),
        spec["reference"],
        tuple(log_d),
    )


def list_systems() -> list[str]:
    """Names of the chronology systems."""
    return list(_definitions()["systems"])


@lru_cache(maxsize=None)
def get_system(name: str) -> ChronologySystem:
    """A chronology system by name (``moon-neukum-1983``, ``mars-neukum-ivanov``,
    ``mars-ivanov``, ``mars-hartmann-2004``) or a craterstats-style alias (``neukum83``,
    ``neukumivanov``)."""
    systems = _definitions()["systems"]
    key = name.strip().lower()
    if key not in systems:
        key = next((k for k, s in systems.items() if key in s.get("aliases", ())), None)
        if key is None:
            raise InputError(f"unknown chronology system {name!r}; use one of {', '.join(systems)}")
    spec = systems[key]
    chron = _definitions()["chronology"][spec["chronology"]]
    return ChronologySystem(
        name=key,
        title=spec["title"],
        body=spec["body"],
        body_radius_km=float(spec["body_radius_km"]),
        production=_production(spec["production"]),
        chronology=ChronologyFunction(spec["chronology"], chron["a"], chron["b"], chron["c"], chron["reference"]),
    )


def _system(system: str | ChronologySystem) -> ChronologySystem:
    return system if isinstance(system, ChronologySystem) else get_system(system)


# ----------------------------------------------------------------------------- binning


def bin_edges(diameters_km: np.ndarray, binning: str = "pseudo-log", expand: bool = True) -> np.ndarray:
    """Bin boundaries (km) covering the diameters, in one of craterstats' binnings.

    Parameters
    ----------
    diameters_km : array_like
        Diameters to cover (or a ``(d_min, d_max)`` range).
    binning : {"pseudo-log", "root-2", "10/decade", "20/decade"}
        ``pseudo-log``: boundaries at 1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 2, 2.5, 3,
        3.5, 4, 4.5, 5, 6, 7, 8, 9 × 10^k (craterstats' default); the others are
        geometric with ``2**(k/2)``, ``10**(k/10)`` and ``10**(k/20)``.
    expand : bool
        Add one boundary above the largest diameter.

    Returns
    -------
    ndarray, ascending, shape (m,)
    """
    d = np.asarray(diameters_km, dtype=np.float64)
    if d.size == 0 or np.any(d <= 0):
        raise InputError("binning needs positive diameters")
    lo, hi = np.log10(d.min()), np.log10(d.max())
    if expand:
        hi += 0.001
    if binning == "pseudo-log":
        decades = 10.0 ** np.arange(int(np.floor(lo)), int(np.ceil(hi + 0.1)))
        edges = np.outer(decades, PSEUDO_LOG_MANTISSAS).ravel()
    elif binning in ("root-2", "10/decade", "20/decade"):
        per_decade = {"root-2": 2.0 / np.log10(2.0), "10/decade": 10.0, "20/decade": 20.0}[binning]
        k = np.arange(np.floor(lo * per_decade), np.ceil(hi * per_decade) + 1)
        edges = 10.0 ** (k / per_decade)
    else:
        raise InputError(f"unknown binning {binning!r}; use one of {', '.join(BINNINGS)}")
    first, last = np.searchsorted(edges, 10.0 ** np.array([lo, hi]))
    return edges[max(first - 1, 0) : last + 1]


@dataclass
class BinnedCounts:
    """Crater counts per diameter bin.

    Attributes
    ----------
    d_min, d_max, d_mean : ndarray (m,)
        Bin boundaries and geometric centre (km).
    n : ndarray (m,)
        Sum of crater fractions per bin.
    n_event : ndarray (m,)
        Number of craters per bin (for Poisson errors).
    ncum, ncum_event : ndarray (m,)
        The same, cumulated from the largest bin down.
    area_km2 : float
    binning : str
    """

    d_min: np.ndarray
    d_max: np.ndarray
    d_mean: np.ndarray
    n: np.ndarray
    n_event: np.ndarray
    ncum: np.ndarray
    ncum_event: np.ndarray
    area_km2: float
    binning: str


def bin_counts(counts: CraterCounts, binning: str = "pseudo-log") -> BinnedCounts:
    """Histogram of the counted diameters (weighted by their fractions)."""
    if len(counts) == 0:
        raise InputError("no craters to bin")
    edges = bin_edges(counts.diameter_km, binning)
    n_event, _ = np.histogram(counts.diameter_km, bins=edges)
    n, _ = np.histogram(counts.diameter_km, bins=edges, weights=counts.fraction)
    return BinnedCounts(
        d_min=edges[:-1],
        d_max=edges[1:],
        d_mean=np.sqrt(edges[:-1] * edges[1:]),
        n=n.astype(np.float64),
        n_event=n_event.astype(np.float64),
        ncum=np.cumsum(n[::-1])[::-1].astype(np.float64),
        ncum_event=np.cumsum(n_event[::-1])[::-1].astype(np.float64),
        area_km2=counts.area_km2,
        binning=binning,
    )


def bin_bias_correction(beta: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Ratio of the binned to the true differential density for a power law (Michael 2013, Eq. 2).

    Parameters
    ----------
    beta : array_like
        Ratio of a bin's upper to lower boundary.
    slope : array_like
        Cumulative log-log slope ``k`` (negative).
    """
    beta, slope = np.broadcast_arrays(np.asarray(beta, float), np.asarray(slope, float))
    g = np.sqrt(beta) - 1 / np.sqrt(beta)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (beta ** (slope / 2) - beta ** (-slope / 2)) / (g * slope)
    return np.where(np.abs(slope) < 1e-5, 1.0, ratio)


def _poisson_interval(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Garwood) 1-sigma Poisson interval of a count ``n``."""
    n = np.asarray(n, dtype=np.float64)
    lo = np.where(n > 0, chi2.ppf(SIGMA_PERCENTILES[0], 2 * n) / 2, 0.0)
    hi = chi2.ppf(SIGMA_PERCENTILES[1], 2 * n + 2) / 2
    return lo, hi


@dataclass
class SFDPoints:
    """Points of one size-frequency presentation.

    Attributes
    ----------
    presentation : str
    binning : str
    d_km : ndarray (m,)
        Bin lower boundary (cumulative) or geometric centre (others).
    y : ndarray (m,)
        Cumulative N(>D) per km², differential per km² per km, R (dimensionless),
        or incremental per km².
    err : ndarray (m,)
        Symmetric 1-sigma error ``y / sqrt(n)`` (as craterstats; used by the fits).
    err_lo, err_hi : ndarray (m,)
        Exact Poisson 1-sigma interval of the count, in ``y`` units (for plots).
    n, n_event : float
        Crater fractions / craters in the selected bins.
    bin_range : (float, float)
        Lower boundary of the first and upper boundary of the last selected bin.
    """

    presentation: str
    binning: str
    d_km: np.ndarray
    y: np.ndarray
    err: np.ndarray
    err_lo: np.ndarray
    err_hi: np.ndarray
    n: float
    n_event: float
    bin_range: tuple


def sfd_points(
    counts: CraterCounts | BinnedCounts,
    presentation: str = "cumulative",
    binning: str = "pseudo-log",
    d_range: Sequence[float] | None = None,
    production: ProductionFunction | None = None,
) -> SFDPoints:
    """Size-frequency points of non-empty bins in a presentation.

    Parameters
    ----------
    counts : CraterCounts or BinnedCounts
    presentation : {"cumulative", "differential", "R", "incremental"}
    binning : str
        See :func:`bin_edges` (ignored for ``BinnedCounts``).
    d_range : (float, float), optional
        Keep bins whose geometric centre lies strictly inside (km), as craterstats.
    production : ProductionFunction, optional
        For the differential presentation: local slopes for the binning-bias
        correction (Michael 2013, Sect. 5); a slope of -3 when not given.

    Returns
    -------
    SFDPoints
    """
    binned = counts if isinstance(counts, BinnedCounts) else bin_counts(counts, binning)
    area = binned.area_km2
    keep = binned.n > 0
    if d_range is not None:
        keep &= (binned.d_mean > d_range[0]) & (binned.d_mean < d_range[1])
    if not np.any(keep):
        raise _no_craters_error(d_range, binned.d_min[binned.n > 0].min(), binned.d_max[binned.n > 0].max())
    d_min, d_max, d_mean = binned.d_min[keep], binned.d_max[keep], binned.d_mean[keep]
    n, n_event = binned.n[keep], binned.n_event[keep]
    width = d_max - d_min
    if presentation == "cumulative":
        d, y, events = d_min, binned.ncum[keep] / area, binned.ncum_event[keep]
    elif presentation == "incremental":
        d, y, events = d_mean, n / area, n_event
    elif presentation in ("differential", "R"):
        d, y, events = d_mean, n / width / area, n_event
        if presentation == "R":
            y = y * d**3
    else:
        raise InputError(f"unknown presentation {presentation!r}; use one of {', '.join(PRESENTATIONS)}")
    err = y / np.sqrt(events)
    lo, hi = _poisson_interval(events)
    err_lo, err_hi = y * (1 - lo / events), y * (hi / events - 1)
    if presentation == "differential":
        beta = d_max / d_min
        slope = production.log_slope(d) if production is not None else np.full_like(d, -3.0)
        # As craterstats: the values are bias-corrected, the error bars are not.
        y = y / bin_bias_correction(beta, slope)
    return SFDPoints(
        presentation=presentation,
        binning=binned.binning,
        d_km=d,
        y=y,
        err=err,
        err_lo=err_lo,
        err_hi=err_hi,
        n=float(n.sum()),
        n_event=float(n_event.sum()),
        bin_range=(float(d_min[0]), float(d_max[-1])),
    )


# ----------------------------------------------------------------------------- fits


@dataclass
class AgeFit:
    """A model age.

    Attributes
    ----------
    age_ga, age_lo_ga, age_hi_ga : float
        Model age and its lower / upper 1-sigma bounds (Ga). Poisson: median and
        15.9 / 84.1 percentiles of the age likelihood.
    n1, n1_lo, n1_hi : float
        Cumulative density of craters > 1 km (per km²) for those ages.
    a0, a0_lo, a0_hi : float
        ``log10`` of ``n1``, ``n1_lo``, ``n1_hi``.
    n_craters : float
        Craters in the fit (sum of fractions for binned fits).
    area_km2 : float
    system : str
    method : {"poisson", "cumulative", "differential"}
    d_min_km, d_max_km : float
        The diameter range asked for.
    binning : str
        ``"none"`` for the Poisson method (no binning).
    bin_range_km : (float, float) or None
        Boundaries of the bins actually fitted (binned methods).

    A Poisson fit of a range without craters is an upper limit (:attr:`is_upper_limit`):
    ``age_hi_ga`` bounds the age, ``age_ga`` is then only the median of the prior-shaped
    likelihood and not an age to quote.
    """

    age_ga: float
    age_lo_ga: float
    age_hi_ga: float
    n1: float
    n1_lo: float
    n1_hi: float
    n_craters: float
    area_km2: float
    system: str
    method: str
    d_min_km: float
    d_max_km: float
    a0: float = float("nan")
    a0_lo: float = float("nan")
    a0_hi: float = float("nan")
    binning: str = "none"
    bin_range_km: tuple | None = None
    likelihood: tuple | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready dict of the scalar fields."""
        out = asdict(self)
        out.pop("likelihood")
        out["bin_range_km"] = list(self.bin_range_km) if self.bin_range_km is not None else None
        out["upper_limit"] = self.is_upper_limit
        return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in out.items()}

    @property
    def is_upper_limit(self) -> bool:
        """A Poisson fit of a range without craters: only ``age_hi_ga`` (84.1 %) says something, as an upper limit."""
        return self.method == "poisson" and self.n_craters == 0

    def label(self) -> str:
        """A short age label, e.g. ``0.63 +0.04/-0.03 Ga``, or ``< 1.2 Ga`` for an upper limit."""
        if self.is_upper_limit:
            return _upper_label(self.age_hi_ga)
        return _age_label(self.age_ga, self.age_hi_ga - self.age_ga, self.age_ga - self.age_lo_ga)


def _upper_label(age: float) -> str:
    scale, unit = (1e3, "Ma") if age < 0.01 else (1.0, "Ga")
    return f"< {age * scale:.3g} {unit}"


def _age_label(age: float, plus: float, minus: float) -> str:
    if age < 0.01:
        scale, unit = 1e3, "Ma"
    else:
        scale, unit = 1.0, "Ga"
    spread = max(min(plus, minus) * scale, 1e-12)
    decimals = int(np.clip(1 - np.floor(np.log10(spread)), 0, 6))
    return f"{age * scale:.{decimals}f} +{plus * scale:.{decimals}f}/−{minus * scale:.{decimals}f} {unit}"


def poisson_age_pdf(
    k: int, expected_per_n1: float, chronology: ChronologyFunction, t_max_ga: float = 5.0, n_grid: int = 4001
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age likelihood of ``k`` craters when ``expected_per_n1 * N(1)(t)`` are expected.

    Michael et al. (2016): the Poisson probability of the observed count as a
    function of the age, normalised over ``[0, t_max_ga]`` (a uniform prior in t).

    Returns
    -------
    t : ndarray (m,) in Ga; pdf : ndarray (m,) per Ga; cdf : ndarray (m,)
    """

    def log_like(t):
        lam = expected_per_n1 * chronology.n1(t)
        with np.errstate(divide="ignore"):
            return np.where(lam > 0, k * np.log(np.maximum(lam, 1e-300)) - lam - gammaln(k + 1), -np.inf if k else 0.0)

    # A coarse grid uniform in log N(1), then a fine grid where the likelihood is not negligible.
    n1_max = chronology.n1(t_max_ga)
    coarse = chronology.age(np.geomspace(n1_max * 1e-12, n1_max, n_grid), t_max_ga)
    ll = log_like(coarse)
    significant = np.flatnonzero(ll > ll.max() - 40)
    lo = coarse[max(significant[0] - 1, 0)]
    hi = coarse[min(significant[-1] + 1, len(coarse) - 1)]
    t = np.unique(np.concatenate([np.linspace(lo, hi, n_grid), [0.0] if lo == 0 else []]))
    ll = log_like(t)
    like = np.exp(ll - ll.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (like[1:] + like[:-1]) * np.diff(t))])
    total = cdf[-1]
    return t, like / total, cdf / total


def _percentile_age(t: np.ndarray, cdf: np.ndarray, q: Sequence[float]) -> np.ndarray:
    # cdf can be flat where the likelihood underflows: interpolate on its strictly rising part.
    rising = np.concatenate([[True], np.diff(cdf) > 0])
    return np.interp(q, cdf[rising], t[rising])


#: Upper end (Ga) of the age grid of the Poisson likelihood (a uniform prior on [0, this]).
POISSON_MAX_AGE_GA = 5.0


def _warn_beyond_chronology(age_ga: float, at_edge: bool = False) -> None:
    """Warn of a model age (Ga) the chronology cannot give: the Poisson likelihood still rising at the end of its
    age grid (``at_edge``: the age and N(1) are only lower limits), or an age beyond :data:`CHRONOLOGY_MAX_AGE_GA`."""
    if at_edge:
        warnings.warn(
            f"the crater density is above what the chronology reaches at {POISSON_MAX_AGE_GA:g} Ga: the Poisson age "
            "and N(1) are lower limits (a saturated count?)", stacklevel=3,
        )
    elif age_ga > CHRONOLOGY_MAX_AGE_GA:
        warnings.warn(
            f"model age {age_ga:.3g} Ga is older than the chronology's calibration ({CHRONOLOGY_MAX_AGE_GA:g} Ga): "
            "an extrapolation (a saturated count?)", stacklevel=3,
        )


def _weighted_offset(log_y: np.ndarray, log_model0: np.ndarray, weights: np.ndarray) -> float:
    """Least-squares a0 of ``log_y ≈ a0 + log_model0`` (the model is linear in a0)."""
    return float(np.sum(weights * (log_y - log_model0)) / np.sum(weights))


def _no_craters_error(d_range: Sequence[float] | None, d_min_km: float, d_max_km: float) -> InputError:
    """The error of a diameter range (km) that holds no crater, saying where the craters are."""
    asked = f" {d_range[0]:g}-{d_range[1]:g} km" if d_range is not None else ""
    return InputError(
        f"no craters in the diameter range{asked}; the count's craters are {d_min_km:g}-{d_max_km:g} km "
        "(diameters and ranges are in km)"
    )


def _check_body(counts: CraterCounts, sysm: ChronologySystem) -> None:
    """Refuse a chronology system of another body than the one the count states (radii differ by > 1 %)."""
    if counts.body_radius_km is None or abs(counts.body_radius_km / sysm.body_radius_km - 1.0) <= 0.01:
        return
    raise InputError(
        f"the count is on a body of radius {counts.body_radius_km:g} km, but {sysm.name} is a {sysm.body} "
        f"system (radius {sysm.body_radius_km:g} km); choose a system of the count's body"
    )


def _check_area(counts: CraterCounts, sysm: ChronologySystem) -> None:
    """Refuse a counting area (km²) larger than the whole surface of the system's body (an area in m²)."""
    surface_km2 = 4.0 * math.pi * sysm.body_radius_km**2
    if counts.area_km2 > surface_km2:
        raise InputError(
            f"counting area {counts.area_km2:.6g} km² is larger than the whole surface of {sysm.body} "
            f"({surface_km2:.4g} km²); give the area in km², not m²"
        )


def fit_age(
    counts: CraterCounts,
    system: str | ChronologySystem,
    d_range: Sequence[float],
    method: str = "poisson",
    binning: str = "pseudo-log",
) -> AgeFit:
    """Model age of a crater count over a diameter range.

    Parameters
    ----------
    counts : CraterCounts
    system : str or ChronologySystem
        See :func:`get_system`.
    d_range : (float, float)
        Diameter range in km (``d_max`` may be ``inf``).
    method : {"poisson", "cumulative", "differential"}
        ``poisson`` (Michael et al. 2016): likelihood of the number of craters
        with ``d_min <= D < d_max`` (clipped to the production function's range)
        as a function of age; the age is its median, the bounds its 15.9 and
        84.1 percentiles. ``cumulative`` / ``differential`` (craterstats "c-fit",
        "d-fit"): weighted least-squares fit of the production function in
        log-log space to the binned points whose bin centre lies inside the
        range; bounds from the 1-sigma Poisson error of the first fitted point.
    binning : str
        Binning for the binned fits (see :func:`bin_edges`).

    Returns
    -------
    AgeFit

    Raises
    ------
    InputError
        A range that holds no crater (no age can be given); a count whose stated
        body (``counts.body_radius_km``) is not the system's; a counting area
        larger than the body's whole surface (an area given in m²).
    """
    method = _METHOD_ALIASES.get(method, method)
    if method not in METHODS:
        raise InputError(f"unknown fit method {method!r}; use one of {', '.join(METHODS)}")
    sysm = _system(system)
    pf, cf = sysm.production, sysm.chronology
    d_lo, d_hi = float(d_range[0]), float(d_range[1])
    if not (0 <= d_lo < d_hi):
        raise InputError(f"diameter range must satisfy 0 <= d_min < d_max, got {d_lo} {d_hi}")
    _check_body(counts, sysm)
    _check_area(counts, sysm)
    common = dict(area_km2=counts.area_km2, system=sysm.name, method=method, d_min_km=d_lo, d_max_km=d_hi)

    if method == "poisson":
        r0 = np.clip([d_lo, d_hi], *pf.d_range_km)
        # As craterstats: k counts craters, not their fractions (buffered counts
        # need the perimeter-aware likelihood, which is not implemented here).
        k = int(np.count_nonzero((counts.diameter_km >= r0[0]) & (counts.diameter_km < r0[1])))
        expected_per_n1 = counts.area_km2 * float(pf.cumulative(r0[0]) - pf.cumulative(r0[1]))
        if expected_per_n1 <= 0:
            raise InputError(f"diameter range {d_lo}-{d_hi} km lies outside the production function")
        t, pdf, cdf = poisson_age_pdf(k, expected_per_n1, cf, t_max_ga=POISSON_MAX_AGE_GA)
        age, lo, hi = _percentile_age(t, cdf, (0.5, *SIGMA_PERCENTILES))
        _warn_beyond_chronology(float(age), at_edge=bool(pdf.argmax() == len(pdf) - 1 and k > 0))
        n1 = cf.n1(np.array([age, lo, hi]))
        with np.errstate(divide="ignore"):
            a0 = np.log10(n1)
        return AgeFit(
            float(age), float(lo), float(hi), *map(float, n1), float(k), **common, a0=float(a0[0]),
            a0_lo=float(a0[1]), a0_hi=float(a0[2]), binning="none", likelihood=(t, pdf),
        )

    presentation = method
    points = sfd_points(counts, presentation, binning, (d_lo, d_hi), production=pf)
    log_y = np.log10(points.y)
    if presentation == "cumulative":
        log_model0 = pf.log10_cumulative(points.d_km)
        weights = points.y  # craterstats: sigma = 1/sqrt(y); in log space this weights by N_cum.
    else:
        log_model0 = np.log10(pf.differential(points.d_km))
        weights = points.err  # craterstats: sigma = 1/sqrt(err), kept for comparability.
    a0 = _weighted_offset(log_y, log_model0, weights)
    y0, e0 = points.y[0], points.err[0]
    # craterstats: bounds from the Poisson error of the first (smallest-diameter) point.
    with np.errstate(invalid="ignore", divide="ignore"):
        a0_lo = a0 - (np.log10(y0) - np.log10(y0 - 0.99 * e0))
    a0_hi = a0 + (np.log10(y0 + 0.99 * e0) - np.log10(y0))
    a0s = np.array([a0, a0_lo, a0_hi])
    n1 = 10.0**a0s
    ages = cf.age(n1)
    _warn_beyond_chronology(float(ages[0]))
    return AgeFit(
        float(ages[0]), float(ages[1]), float(ages[2]), *map(float, n1), float(points.n), **common,
        a0=float(a0), a0_lo=float(a0_lo), a0_hi=float(a0_hi), binning=binning, bin_range_km=points.bin_range,
    )


# ----------------------------------------------------------------------------- plot


_Y_LABELS = {
    "cumulative": "Cumulative crater frequency, N(>D) (km$^{-2}$)",
    "differential": "Differential crater frequency (km$^{-3}$)",
    "R": "Relative crater frequency, R",
    "incremental": "Incremental crater frequency (km$^{-2}$)",
}


def plot_csfd(
    counts: CraterCounts,
    fits: AgeFit | Sequence[AgeFit] = (),
    system: str | ChronologySystem | None = None,
    presentation: str = "cumulative",
    binning: str = "pseudo-log",
    isochrons_ga: Sequence[float] = (0.001, 0.01, 0.1, 1.0, 3.0, 4.0),
    ax=None,
    title: str | None = None,
):
    """Plot a crater size-frequency distribution with isochrons and fitted ages.

    Log-log axes of diameter (km) and crater density; Poisson (Garwood) 1-sigma
    error bars; thin grey isochrons of the chronology system with their ages;
    for each fit, the production function over its fitted range, the range's
    limits marked on the axis, and the age label with its bounds.

    Parameters
    ----------
    counts : CraterCounts
    fits : AgeFit or sequence of AgeFit
    system : str or ChronologySystem, optional
        Default: the system of the first fit (needed for isochrons).
    presentation : {"cumulative", "differential", "R", "incremental"}
        Isochrons and fits are drawn for cumulative, differential and R.
    binning : str
    isochrons_ga : sequence of float
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=150, layout="constrained")
    else:
        fig = ax.figure
    fits = [fits] if isinstance(fits, AgeFit) else list(fits)
    if system is None and fits:
        system = fits[0].system
    sysm = _system(system) if system is not None else None
    pf = sysm.production if sysm is not None else None

    points = sfd_points(counts, presentation, binning, production=pf)
    lower = np.minimum(points.err_lo, points.y * 0.999)
    ax.errorbar(
        points.d_km, points.y, yerr=[lower, points.err_hi], fmt="o", ms=3.5, mfc="white", mec="black",
        ecolor="0.35", elinewidth=0.7, capsize=0, color="black", zorder=3,
        label=f"{counts.name or 'count'}: {len(counts)} craters, {counts.area_km2:.4g} km²",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    # A fit without an upper limit (d_max = inf) or lower limit (0) leaves the axis to the points.
    d_lo = min([points.d_km.min(), *(f.d_min_km for f in fits if f.d_min_km > 0)]) / 1.5
    d_hi = max([points.d_km.max(), *(f.d_max_km for f in fits if np.isfinite(f.d_max_km))]) * 1.5
    y_lo, y_hi = points.y.min() / 10, points.y.max() * 10
    if pf is not None and presentation in ("cumulative", "differential", "R"):
        d_curve = np.geomspace(max(d_lo, pf.d_range_km[0]), min(d_hi, pf.d_range_km[1]), 300)
        for age in isochrons_ga:
            a0 = float(np.log10(sysm.chronology.n1(age)))
            y = pf.evaluate(presentation, d_curve, a0)
            ax.plot(d_curve, y, color="0.75", lw=0.6, zorder=1)
            visible = np.flatnonzero((y > y_lo * 1.5) & (y < y_hi))
            if visible.size:  # label where the isochron leaves the plot (lower right)
                j = visible[-1]
                ax.annotate(_short_age(age), (d_curve[j], y[j]), fontsize=7, color="0.45", ha="right", va="bottom", rotation=0)
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    for number, fit in enumerate(fits):
        colour = colours[number % len(colours)]
        fit_sys = _system(fit.system)
        lo = max(fit.d_min_km, fit_sys.production.d_range_km[0])
        hi = min(fit.d_max_km, fit_sys.production.d_range_km[1], d_hi)
        d_fit = np.geomspace(lo, hi, 200)
        method = {"poisson": "Poisson", "cumulative": "cumulative fit", "differential": "differential fit"}[fit.method]
        label = f"{fit.label()} ({method}, {fit.n_craters:.0f} craters)"
        for edge in (lo, hi):
            ax.axvline(edge, color=colour, lw=0.6, ls=":", zorder=0)
        if presentation == "incremental":  # no production-function curve in this presentation
            ax.plot([], [], color=colour, lw=1.6, label=label)
            continue
        y_fit = fit_sys.production.evaluate(presentation, d_fit, fit.a0_hi if fit.is_upper_limit else fit.a0)
        ax.plot(d_fit, y_fit, color=colour, lw=1.6, zorder=2, label=label)
        ax.annotate(fit.label(), (d_fit[0], y_fit[0]), xytext=(6, 4 - 13 * number), textcoords="offset points", color=colour, fontsize=9)
    ax.set_xlim(d_lo, d_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("Crater diameter, D (km)")
    ax.set_ylabel(_Y_LABELS[presentation])
    ax.grid(True, which="major", color="0.92", lw=0.5)
    ax.tick_params(which="both", direction="in", top=True, right=True)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    if title or sysm is not None:
        ax.set_title(title or f"{sysm.name}, {points.binning} bins", fontsize=9)
    return fig


def _short_age(age_ga: float) -> str:
    return f"{age_ga:g} Ga" if age_ga >= 0.1 else f"{age_ga * 1e3:g} Ma"
