"""``planetcd demo OUTDIR``: make a synthetic georeferenced pair with a new impact and detect it."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .options import common_options, device_opt, overwrite_opt, setup_logging, weights_opt

log = logging.getLogger("planetcd")


@click.command()
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(200, 8192), default=800, show_default=True, help="Image side, pixels.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the synthetic scene.")
@weights_opt
@device_opt
@overwrite_opt
@common_options
def demo(outdir, size, seed, weights, device, overwrite, verbose, quiet):
    """Write pre.tif/post.tif (Mars equirectangular, 6 m/px) with one new crater, then run detect on them.

    The post image is displaced by a few pixels, brighter and noisier; the new
    crater sits in the middle of one patch. Results go to OUTDIR/detect.
    """
    import numpy as np

    from ..change.detect import detect as run_detect
    from ..change.outputs import output_names
    from ..datasets.synthetic import make_change_pair, write_synthetic_geotiff
    from ..raster import check_writable
    from ..raster import check_output_places, removed_on_failure

    show_progress = setup_logging(verbose, quiet)
    outdir = Path(outdir)
    result_dir = outdir / "detect"
    check_output_places(folders=[outdir])
    check_writable([outdir / "pre.tif", outdir / "post.tif", *(result_dir / n for n in output_names(False))], overwrite)
    rng = np.random.default_rng(seed)
    patch = 100
    inner = max(2, size // patch - 1)  # the crater's patch: not on the border (any patch but the first below 300 px)
    row = patch * int(rng.integers(1, inner)) + patch / 2
    col = patch * int(rng.integers(1, inner)) + patch / 2
    pair = make_change_pair((size, size), seed=seed, displacement=(3.4, -5.8), new_craters=[[row, col, 18.0]],
                            crater_density=2e-4, halo="dark", halo_strength=0.6)
    written = [outdir / "pre.tif", outdir / "post.tif", *(result_dir / n for n in output_names(False))]
    with removed_on_failure(written, [outdir, result_dir]):
        write_synthetic_geotiff(outdir / "pre.tif", pair.pre)
        write_synthetic_geotiff(outdir / "post.tif", pair.post)
        log.info("wrote %s and %s; new crater at row %.0f, col %.0f; post displaced by dy=+3.40 dx=-5.80 px",
                 outdir / "pre.tif", outdir / "post.tif", row, col)
        result = run_detect(outdir / "pre.tif", outdir / "post.tif", weights=weights, device=device,
                            progress=show_progress, patch_size=patch)
        result.write(result_dir, overwrite=overwrite)
    top = result.candidates()
    r0, c0 = top["row_off"][0], top["col_off"][0]
    found = r0 <= row < r0 + patch and c0 <= col < c0 + patch
    flagged = bool(found and top["changed"][0])
    dy, dx = result.displacement
    log.info("estimated shift dy=%+.2f dx=%+.2f px; tau=%.4g; %d of %d patches changed; top patch at row %d col %d "
             "(ratio %.2f): %s", dy, dx, result.tau, int(result.changed.sum()), len(top["rank"]), r0, c0,
             top["ratio"][0], ("the new crater, flagged" if flagged else "the new crater, NOT flagged") if found
             else "NOT the new crater")
    log.info("see %s (quicklook.png, candidates.gpkg opens in QGIS)", result_dir)
