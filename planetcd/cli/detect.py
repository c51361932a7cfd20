"""``planetcd detect PRE POST -o OUTDIR``: changed patches between two images."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .options import (
    common_options,
    dask_options,
    dask_runner,
    device_opt,
    outdir_opt,
    precision_opt,
    overwrite_opt,
    seed_opt,
    setup_logging,
    weights_opt,
)

log = logging.getLogger("planetcd")


def _max_shift(value: str) -> str | float:
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise click.BadParameter("use 'auto' or a number of pixels >= 0", param_hint="--max-shift")
    return number


def _pseudo_tolerance(value: str) -> float | None:
    """``--pseudo-tolerance``: a number >= 0, or ``none`` (every pseudo pair)."""
    if str(value).lower() == "none":
        return None
    try:
        tolerance = float(value)
    except ValueError:
        tolerance = float("nan")
    if not tolerance >= 0:
        raise click.BadParameter(f"must be a number >= 0 or 'none', got {value!r}", param_hint="--pseudo-tolerance")
    return tolerance


def _tau(value: str) -> str | float:
    from ..change.threshold import TAU_POLICIES

    if value in TAU_POLICIES:
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter("use 'pseudo', 'empirical', 'both', 'kmeans' or a number") from None


@click.command()
@click.argument("pre", type=click.Path(dir_okay=False))
@click.argument("post", type=click.Path(dir_okay=False))
@outdir_opt
@click.option("--patch-size", type=click.IntRange(8), default=100, show_default=True, help="Patch side, pixels.")
@click.option("--stride", type=click.IntRange(1), default=None, help="Step between patches, pixels [default: patch size].")
@click.option("--layer", type=click.IntRange(1, 13), default=6, show_default=True, help="VGG-16 conv layer (6 = conv3_2).")
@click.option("--method", type=click.Choice(["nn", "nn-unlit", "paper"]), default="nn", show_default=True,
              help="nn: nearest-neighbour feature disagreement, each patch scored by its most prominent "
                   "compact peak (shift-tolerant, sees small new craters, discounts tracks, seams and relit "
                   "slopes; the most accurate label-free method on every preset of the latest benchmarks), with pre "
                   "relit to post's look tile by tile; nn-unlit: nn "
                   "without the relighting (as before it); paper: L1 of pooled features (Saha & Zhu; with "
                   "--threshold pseudo --max-shift 10, the faithful reproduction).")
@click.option("--nn-radius", type=click.IntRange(0, 8), default=2, show_default=True,
              help="Search radius of --method nn, in feature cells (4 px at layer 6).")
@click.option("--pooling", type=click.Choice(["max", "avg"]), default="max", show_default=True, help="Global pooling per patch.")
@click.option("--threshold", "threshold", default="both", show_default=True,
              help="'pseudo' (95th percentile of pseudo-unchanged pairs), 'empirical' (median + 3 MAD of the "
                   "pair's own scores), 'both' (the larger of the two), 'kmeans', or a fixed τ.")
@click.option("--percentile", type=click.FloatRange(0, 100), default=95.0, show_default=True,
              help="Percentile of pseudo-pair scores taken as τ.")
@click.option("--max-shift", default="auto", show_default=True,
              help="Largest shift per axis in pseudo pairs, pixels, or 'auto': the residual misregistration "
                   "measured on the pair (+1 px; at least 4 for nn, 10 for paper), which also widens nn's search.")
@click.option("--noise-std", type=click.FloatRange(0), default=0.02, show_default=True,
              help="Gaussian noise of pseudo pairs (0..1 intensity scale).")
@click.option("--n-pseudo", type=click.IntRange(2), default=100, show_default=True,
              help="Most pseudo pairs (all of them with --pseudo-tolerance none).")
@click.option("--pseudo-tolerance", default="0.1", show_default=True,
              help="Stop adding pseudo pairs (40, then 20 at a time) once tau's 5-95 percent bootstrap range is within "
                   "this fraction of tau, under the empirical tau with --threshold both, or free of every patch's "
                   "score (the output is decided; not with 0); 'none': all --n-pseudo.")
@click.option("--register/--no-register", default=True, show_default=True,
              help="Estimate and undo the global shift (phase correlation).")
@click.option("--pixelwise", is_flag=True, help="Also write deep-CVA pixel maps inside changed patches.")
@click.option("--tile-size", type=click.IntRange(64), default=None,
              help="Tile side for feature maps, pixels (larger: less halo recomputed, more memory) "
                   "[default: 512; 1024 when nn relights pre, whose transfer is fitted per tile].")
@click.option("--no-quicklook", is_flag=True, help="Skip quicklook.png.")
@dask_options
@weights_opt
@device_opt
@precision_opt
@seed_opt
@overwrite_opt
@common_options
def detect(pre, post, outdir, patch_size, stride, layer, method, nn_radius, pooling, threshold, percentile, max_shift, noise_std,
           n_pseudo, pseudo_tolerance, register, pixelwise, tile_size, no_quicklook, scheduler, workers, weights, device, precision, seed, overwrite,
           verbose, quiet):
    """Find changed patches between PRE and POST images (VGG-16 features; Saha & Zhu's patch method or nn).

    Writes change_score.tif, change_mask.tif (on PRE's grid), candidates.csv and
    candidates.gpkg (patches ranked by change score), quicklook.png and run.json.

    With --workers N (a local Dask cluster) or --scheduler ADDRESS, every feature tile is a task on the
    cluster; the outputs are those of a single-process run.
    """
    from ..change.detect import detect as run_detect
    from ..change.outputs import output_names
    from ..raster import check_output_places, check_writable

    show_progress = setup_logging(verbose, quiet)
    outdir = Path(outdir)
    check_output_places(folders=[outdir])  # refuse a file as the output folder before any work
    check_writable([outdir / n for n in output_names(pixelwise, not no_quicklook)], overwrite)
    options = dict(
        patch_size=patch_size, stride=stride, layer=layer, method=method, nn_radius=nn_radius, pooling=pooling,
        tau=_tau(threshold), percentile=percentile, max_shift=_max_shift(max_shift), noise_std=noise_std,
        n_pseudo=n_pseudo, pseudo_tolerance=_pseudo_tolerance(pseudo_tolerance), register=register, pixelwise=pixelwise, weights=weights, device=device,
        tile_size=tile_size, seed=seed, progress=show_progress, precision=precision,
    )
    with dask_runner(scheduler, workers) as runner:
        result = run_detect(pre, post, runner=runner, **options)
    result.write(outdir, overwrite=overwrite, quicklook=not no_quicklook)
    table = result.candidates()
    dy, dx = result.displacement
    log.info("shift of post: dy=%+.2f dx=%+.2f px; tau=%.4g; %d of %d patches changed",
             dy, dx, result.tau, int(result.changed.sum()), len(table["rank"]))
    for k in range(min(5, len(table["rank"]))):
        log.info("  #%d  row %d col %d  score %.4g  ratio %.2f%s", table["rank"][k], table["row_off"][k],
                 table["col_off"][k], table["score"][k], table["ratio"][k], "  changed" if table["changed"][k] else "")
    log.info("outputs in %s", outdir)
