"""Dating: the craterstats reference ages, binning, presentations, chronology and plots."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from planetcd.craters.catalog import read_craterstats
from planetcd.craters.dating import (
    AgeFit,
    CraterCounts,
    bin_bias_correction,
    bin_counts,
    bin_edges,
    fit_age,
    get_system,
    list_systems,
    plot_csfd,
    sfd_points,
)
from planetcd.errors import InputError

# Columns of reference_ages.csv -> AgeFit fields and the relative tolerance of the acceptance.
_CHECKS = (
    ("age_Ga", "age_ga", 0.02),
    ("age_lo_Ga", "age_lo_ga", 0.05),
    ("age_hi_Ga", "age_hi_ga", 0.05),
    ("N1", "n1", 0.02),
    ("N1_lo", "n1_lo", 0.05),
    ("N1_hi", "n1_hi", 0.05),
)


def _reference_rows(shared_dir):
    path = shared_dir / "data" / "craterstats-samples" / "reference_ages.csv"
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_reference_age_is_reproduced(shared_dir):
    rows = _reference_rows(shared_dir)
    assert rows, "reference_ages.csv is empty"
    for row in rows:
        counts = read_craterstats(shared_dir / "data" / "craterstats-samples" / row["file"])
        assert counts.area_km2 == pytest.approx(float(row["area_km2"]), rel=1e-4)
        assert row["binning"] == "pseudo-log"
        fit = fit_age(
            counts, row["chronology_system"], (float(row["d_min_km"]), float(row["d_max_km"])), method=row["method"],
            binning=row["binning"],
        )
        where = f"{row['file']} {row['method']}"
        assert fit.n_craters == pytest.approx(float(row["N"]), abs=0.5), where
        for column, attribute, tolerance in _CHECKS:
            assert getattr(fit, attribute) == pytest.approx(float(row[column]), rel=tolerance), f"{where}: {attribute}"
        # The published a0 (log10 N(1)) is reported to 3 decimals.
        assert fit.a0 == pytest.approx(float(row["a0"]), abs=0.01), where
        assert fit.age_lo_ga < fit.age_ga < fit.age_hi_ga


def test_systems_and_chronology_inverse():
    assert set(list_systems()) == {"moon-neukum-1983", "mars-neukum-ivanov", "mars-ivanov", "mars-hartmann-2004"}
    for name in list_systems():
        system = get_system(name)
        t = np.array([0.001, 0.1, 1.0, 3.0, 3.9])
        np.testing.assert_allclose(system.chronology.age(system.chronology.n1(t)), t, rtol=1e-9)
        assert system.chronology.reference and system.production.reference
        # N(>1 km) of the production function at a0 is 10**a0.
        assert system.production.cumulative(1.0, -3.0) == pytest.approx(1e-3, rel=1e-9)
        d = np.geomspace(0.05, 10, 50)
        assert np.all(np.diff(system.production.cumulative(d)) < 0)
        assert np.all(system.production.differential(d) > 0)
    assert get_system("neukumivanov").name == "mars-neukum-ivanov"
    with pytest.raises(InputError):
        get_system("venus-someone")
    # Neukum (1983): the Moon's N(1) at 3 Ga ~ 2.6e-3 km^-2 (5.44e-14 (e^20.79 - 1) + 8.38e-4 * 3).
    assert get_system("moon-neukum-1983").chronology.n1(3.0) == pytest.approx(
        5.44e-14 * np.expm1(6.93 * 3) + 8.38e-4 * 3
    )


def test_differential_is_minus_derivative_of_cumulative():
    for name in list_systems():
        pf = get_system(name).production
        d = np.geomspace(0.1, 5, 40)
        h = 1e-5
        numeric = -(pf.cumulative(d * (1 + h), -3) - pf.cumulative(d * (1 - h), -3)) / (2 * h * d)
        np.testing.assert_allclose(pf.differential(d, -3), numeric, rtol=1e-5)


def test_bin_edges_styles():
    d = np.array([0.135, 0.7, 2.2])
    pseudo = bin_edges(d, "pseudo-log")
    assert pseudo[0] <= 0.135 < pseudo[1] and pseudo[-1] > 2.2
    assert np.all(np.isin(np.round(pseudo / 10.0 ** np.floor(np.log10(pseudo)), 6), [1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9]))
    for style, ratio in (("root-2", np.sqrt(2)), ("10/decade", 10**0.1), ("20/decade", 10**0.05)):
        edges = bin_edges(d, style)
        np.testing.assert_allclose(edges[1:] / edges[:-1], ratio)
        assert edges[0] <= 0.135 and edges[-1] > 2.2
    with pytest.raises(InputError):
        bin_edges(d, "fibonacci")


def test_counts_presentations_and_poisson_errors():
    rng = np.random.default_rng(0)
    # Diameters from a D^-2 cumulative power law above 0.1 km on 1000 km².
    d = 0.1 * rng.uniform(size=2000) ** (-1 / 2)
    counts = CraterCounts(d, 1000.0, fraction=np.where(rng.uniform(size=2000) < 0.1, 0.5, 1.0))
    binned = bin_counts(counts, "root-2")
    assert binned.n_event.sum() == 2000 and binned.n.sum() == pytest.approx(counts.fraction.sum())
    cum = sfd_points(counts, "cumulative", "root-2")
    assert cum.y[0] == pytest.approx(counts.fraction.sum() / 1000.0)
    assert np.all(np.diff(cum.y) <= 0)
    assert np.all(cum.err_lo > 0) and np.all(cum.err_hi > cum.err_lo)  # Poisson intervals are asymmetric
    diff = sfd_points(counts, "differential", "root-2", d_range=(0.15, 1.0))
    assert np.all((diff.d_km > 0.15) & (diff.d_km < 1.0))
    # The binning-bias-corrected differential of a D^-2 cumulative law is 2 * N / D^3 * ...:
    # slope of log F vs log D is -3 within noise.
    slope = np.polyfit(np.log10(diff.d_km), np.log10(diff.y), 1)[0]
    assert slope == pytest.approx(-3, abs=0.25)
    r_plot = sfd_points(counts, "R", "root-2", d_range=(0.15, 1.0))
    inside = (binned.n > 0) & (binned.d_mean > 0.15) & (binned.d_mean < 1.0)
    expected_r = binned.d_mean[inside] ** 3 * binned.n[inside] / (binned.d_max - binned.d_min)[inside] / 1000.0
    np.testing.assert_allclose(r_plot.y, expected_r)
    assert bin_bias_correction(np.sqrt(2), 0.0) == 1.0
    assert bin_bias_correction(2.0, -3.0) > 1.0


def test_poisson_fit_recovers_a_simulated_age():
    system = get_system("mars-neukum-ivanov")
    rng = np.random.default_rng(42)
    age, area, d_min = 1.5, 2000.0, 0.3
    n1 = system.chronology.n1(age)
    expected = area * system.production.cumulative(d_min, np.log10(n1))
    n = rng.poisson(expected)
    # Inverse-transform sampling of the production function above d_min.
    grid = np.geomspace(d_min, 50, 4000)
    cdf = 1 - system.production.cumulative(grid) / system.production.cumulative(d_min)
    d = np.interp(rng.uniform(size=n) * cdf[-1], cdf, grid)
    fits = {m: fit_age(CraterCounts(d, area), system, (d_min, 50.0), m) for m in ("poisson", "cumulative", "differential")}
    poisson = fits["poisson"]
    assert abs(poisson.age_ga - age) < 3 * (poisson.age_hi_ga - poisson.age_lo_ga) / 2  # within 3 sigma
    for fit in fits.values():
        assert fit.age_ga == pytest.approx(age, rel=0.15)
    d = fits["poisson"].to_dict()
    for key in ("age_ga", "age_lo_ga", "age_hi_ga", "n1", "n1_lo", "n1_hi", "n_craters", "area_km2", "system", "method", "d_min_km", "d_max_km"):
        assert key in d
    assert d["system"] == "mars-neukum-ivanov" and d["method"] == "poisson"


def test_poisson_with_no_crater_gives_an_upper_bound():
    fit = fit_age(CraterCounts([5.0], 10.0), "moon-neukum-1983", (0.5, 1.0), "poisson")
    assert fit.n_craters == 0 and fit.age_lo_ga < fit.age_ga < fit.age_hi_ga and fit.age_ga < 3.0


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError):
        CraterCounts([1.0, -2.0], 10.0)
    with pytest.raises(InputError):
        CraterCounts([1.0], 0.0)
    counts = CraterCounts([1.0, 2.0], 10.0)
    with pytest.raises(InputError):
        fit_age(counts, "mars-ivanov", (0.5, 0.1))
    with pytest.raises(InputError):
        fit_age(counts, "mars-ivanov", (0.5, 3.0), method="bayes")
    with pytest.raises(InputError, match="no craters"):
        fit_age(counts, "mars-ivanov", (5.0, 9.0), method="cumulative")


def test_plot_csfd_draws_data_fit_and_isochrons(tmp_path, shared_dir):
    counts = read_craterstats(shared_dir / "data" / "craterstats-samples" / "Pickering.scc")
    fit = fit_age(counts, "mars-neukum-ivanov", (0.2, 0.7), "poisson")
    assert isinstance(fit, AgeFit)
    for presentation in ("cumulative", "differential", "R"):
        fig = plot_csfd(counts, fit, presentation=presentation)
        ax = fig.axes[0]
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        # data + fit + 6 isochrons at least
        assert len(ax.lines) >= 8
        assert any(fit.label() in t.get_text() for t in ax.texts)
        path = tmp_path / f"{presentation}.png"
        fig.savefig(path)
        assert path.stat().st_size > 10_000


# ----------------------------------------------------------------------------- science sweep


def _power_law_counts(n: int = 300, d_min: float = 0.2, seed: int = 0, **kwargs) -> CraterCounts:
    """``n`` diameters (km) of a cumulative D^-2 law above ``d_min`` on 1000 km²."""
    rng = np.random.default_rng(seed)
    return CraterCounts(d_min * rng.uniform(size=n) ** -0.5, 1000.0, **kwargs)


@pytest.mark.parametrize("presentation", ["cumulative", "differential", "R"])
def test_plot_of_a_fit_without_an_upper_diameter(presentation):
    # `planetcd age COUNTS --plot` without --range fits up to d_max = inf; the axis limits
    # were max(one number, *()) and raised TypeError.
    counts = _power_law_counts()
    fit = fit_age(counts, "mars-ivanov", (counts.diameter_km.min(), np.inf), "cumulative")
    fig = plot_csfd(counts, fit, presentation=presentation)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo < counts.diameter_km.min() and hi > counts.diameter_km.max()
    assert "D (km)" in ax.get_xlabel()


@pytest.mark.parametrize("method", ["cumulative", "differential"])
def test_a_range_without_craters_is_refused_naming_the_diameters(method):
    # The message now says where the craters are (a range typed in metres is then plain to see).
    counts = _power_law_counts()
    with pytest.raises(InputError, match=r"no craters in the diameter range 200-700 km; the count's craters are 0\.2"):
        fit_age(counts, "mars-neukum-ivanov", (200.0, 700.0), method)


def test_poisson_without_craters_is_labelled_as_an_upper_limit():
    # The label was "2.2 +1.5/-1.5 Ga" for a range holding no crater: a median of the prior, not an age.
    fit = fit_age(_power_law_counts(), "mars-neukum-ivanov", (50.0, 100.0), "poisson")
    assert fit.is_upper_limit and fit.label() == f"< {fit.age_hi_ga:.3g} Ga"
    assert not fit_age(_power_law_counts(), "mars-neukum-ivanov", (0.2, 1.0), "poisson").is_upper_limit


def test_a_count_of_another_body_is_refused():
    counts = _power_law_counts(body_radius_km=1737.4)
    assert fit_age(counts, "moon-neukum-1983", (0.2, 1.0)).n_craters > 0
    with pytest.raises(InputError, match="Mars system"):
        fit_age(counts, "mars-neukum-ivanov", (0.2, 1.0))
    assert fit_age(_power_law_counts(), "mars-neukum-ivanov", (0.2, 1.0)).n_craters > 0  # body unknown: allowed


def test_an_area_larger_than_the_body_is_refused_as_m2():
    counts = _power_law_counts()
    mars_km2 = 4 * np.pi * 3396.19**2
    in_m2 = CraterCounts(counts.diameter_km, 3036.6e6)  # Pickering's 3036.6 km², typed in m²
    with pytest.raises(InputError, match="larger than the whole surface of Mars.*not m²"):
        fit_age(in_m2, "mars-ivanov", (0.2, 1.0))
    whole = CraterCounts(counts.diameter_km, mars_km2 * 0.999)
    assert fit_age(whole, "mars-ivanov", (0.2, 1.0)).area_km2 == whole.area_km2


def test_bad_diameters_are_named():
    with pytest.raises(InputError, match=r"2 of 4 are not \(first: crater 2, nan km\)"):
        CraterCounts([1.0, np.nan, 2.0, -1.0], 10.0)


def test_a_density_beyond_the_chronology_is_warned():
    # 3000 craters > 1 km on 10 km² of Mars: the Poisson fit said "4.999962 +0.000029/-0.000063 Ga"
    # (the end of its age grid, N(1) = 36 where the cumulative fit finds 385) and the
    # cumulative fit "5.34 Ga", both without a word.
    dense = CraterCounts(1.0 * np.random.default_rng(0).uniform(size=3000) ** -0.5, 10.0)
    with pytest.warns(UserWarning, match="lower limits"):
        fit_age(dense, "mars-neukum-ivanov", (1.0, 10.0), "poisson")
    with pytest.warns(UserWarning, match="older than the chronology's calibration"):
        fit_age(dense, "mars-neukum-ivanov", (1.0, 10.0), "cumulative")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_age(_power_law_counts(), "mars-neukum-ivanov", (0.2, 1.0), "poisson")
        fit_age(_power_law_counts(n=1), "mars-neukum-ivanov", (0.2, 10.0), "poisson")  # broad, not saturated
