"""``planetcd age``: model age of a crater count."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import click

from ..errors import InputError
from .options import common_options, overwrite_opt, setup_logging

log = logging.getLogger("planetcd.age")

SYSTEMS = ("moon-neukum-1983", "mars-neukum-ivanov", "mars-ivanov", "mars-hartmann-2004")


@click.command("age")
@click.argument("counts", type=click.Path())
@click.option("--system", type=click.Choice(SYSTEMS), required=True, help="Production and chronology functions.")
@click.option("--range", "d_range", type=float, nargs=2, default=None, metavar="DMIN DMAX", help="Diameter range of the fit in km [default: all craters].")
@click.option("--method", type=click.Choice(["poisson", "cumulative", "differential"]), default="poisson", show_default=True, help="Poisson likelihood (Michael et al. 2016), or least-squares fit to the cumulative or differential SFD.")
@click.option("--binning", type=click.Choice(["pseudo-log", "root-2", "10/decade", "20/decade"]), default="pseudo-log", show_default=True, help="Binning of the fits and the plot.")
@click.option("--area", "area_km2", type=float, default=None, help="Counting area in km² (required for crater lists; overrides the area of .scc/.diam files).")
@click.option("--pixel-size", type=float, default=None, help="Pixel size in metres, for pixel-only crater lists.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a size-frequency plot (PNG, PDF or SVG).")
@click.option("--presentation", type=click.Choice(["cumulative", "differential", "R"]), default="cumulative", show_default=True, help="Presentation of the plot.")
@click.option("--diam", "diam_path", type=click.Path(dir_okay=False), default=None, help="Also write the count as a craterstats .diam file (diameters in km, fractions, area).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@overwrite_opt
@common_options
def age(counts, system, d_range, method, binning, area_km2, pixel_size, plot_path, presentation, diam_path, as_json, overwrite, verbose, quiet):
    """Model age of the craters in COUNTS.

    COUNTS is a craterstats .scc or .diam file, or any crater list planetcd reads
    (the craters.csv / .gpkg of `planetcd segment`, VOC, PyCDA, Robbins, lunar
    catalogs) with --area. Prints the age with its 1-sigma bounds and N(1).
    """
    from ..craters.catalog import write_diam
    from ..craters.dating import fit_age, plot_csfd
    from ..inputs import check_counts
    from ..raster import atomic_output, check_writable

    setup_logging(verbose, quiet)
    if diam_path:
        check_writable([diam_path], overwrite)
        if Path(diam_path).suffix.lower() != ".diam":
            raise InputError(f"{diam_path}: the craterstats count must be a .diam file")
    if plot_path:
        check_writable([plot_path], overwrite)
        if Path(plot_path).suffix.lower() not in (".png", ".pdf", ".svg"):
            raise InputError(f"{plot_path}: the plot must be a .png, .pdf or .svg file")
    if area_km2 is not None and not area_km2 > 0:
        raise InputError("--area must be positive")
    if pixel_size is not None and not pixel_size > 0:
        raise InputError("--pixel-size must be positive (metres)")
    if area_km2 is None and Path(counts).suffix.lower() not in (".scc", ".diam") and Path(counts).is_file():
        raise InputError(f"{counts}: a crater list without a counting area; give the area in km² (--area)")
    options = {"pixel_size_m": pixel_size} if pixel_size else {}
    crater_counts = check_counts(counts, area_km2, **options)
    if d_range is None:
        d_range = (float(crater_counts.diameter_km.min()), math.inf)
    elif method == "poisson" and d_range[0] < crater_counts.diameter_km.min() / 1.5:
        log.warning(
            "the range starts at %g km, well below the smallest crater counted (%g km); the Poisson fit takes "
            "the count as complete over the whole range", d_range[0], crater_counts.diameter_km.min(),
        )
    fit = fit_age(crater_counts, system, d_range, method, binning)
    d_max = "∞" if math.isinf(fit.d_max_km) else f"{fit.d_max_km:g}"
    if fit.is_upper_limit:
        log.warning(
            "no crater of %g-%s km in the count (its craters are %g-%g km; diameters are in km): "
            "the age is an upper limit", fit.d_min_km, d_max, crater_counts.diameter_km.min(), crater_counts.diameter_km.max(),
        )
    if plot_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plot_csfd(crater_counts, fit, presentation=presentation, binning=binning)
        with atomic_output(plot_path) as tmp:
            fig.savefig(tmp, format=Path(plot_path).suffix.lstrip(".").lower())
        plt.close(fig)
        log.info("wrote %s", plot_path)
    if diam_path:
        write_diam(crater_counts, diam_path)
        log.info("wrote %s", diam_path)
    if as_json:
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fit.to_dict().items()}
        click.echo(json.dumps(record))
        return
    if fit.is_upper_limit:
        click.echo(f"Model age: {fit.label()}  (84.1 % upper limit: no crater in the range)")
        click.echo(f"N(1) < {fit.n1_hi:.3e} km⁻²")
    else:
        click.echo(f"Model age: {fit.label()}  [{fit.age_lo_ga:.4g}, {fit.age_hi_ga:.4g}] Ga")
        click.echo(f"N(1) = {fit.n1:.3e} km⁻²  [{fit.n1_lo:.3e}, {fit.n1_hi:.3e}]")
    click.echo(
        f"{fit.n_craters:g} craters of {fit.d_min_km:g}-{d_max} km on {fit.area_km2:.6g} km²; "
        f"{fit.system}, {fit.method}" + (f", {fit.binning} bins" if fit.method != "poisson" else "")
    )
