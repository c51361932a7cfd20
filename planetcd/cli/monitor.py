"""``planetcd monitor PRE POST -o OUTDIR`` (or ``--pairs pairs.csv``): ranked new-impact candidates."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import InputError
from .options import (
    common_options,
    dask_options,
    dask_runner,
    device_opt,
    outdir_opt,
    overwrite_opt,
    precision_opt,
    seed_opt,
    setup_logging,
    weights_opt,
)

log = logging.getLogger("planetcd")


@click.command()
@click.argument("pre", type=click.Path(dir_okay=False), required=False)
@click.argument("post", type=click.Path(dir_okay=False), required=False)
@outdir_opt
@click.option("--pairs", "pairs_csv", type=click.Path(dir_okay=False), default=None,
              help="Batch mode: a CSV with columns pre,post[,id]; one output folder per pair, finished pairs skipped.")
@click.option("--method", type=click.Choice(["nn", "paper"]), default="nn", show_default=True,
              help="Change detector (nn: shift-tolerant, sees small new craters; paper: Saha & Zhu).")
@click.option("--patch-size", type=click.IntRange(8), default=100, show_default=True, help="Change patch side, pixels.")
@click.option("--n-pseudo", type=click.IntRange(2), default=100, show_default=True, help="Pseudo pairs calibrating τ.")
@click.option("--model", "model_name", default="ctx-craters", show_default=True,
              help="Crater segmenter: registered model name or a .pt checkpoint path.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Crater probability threshold, 0..1 [default: the model's].")
@click.option("--tta/--no-tta", default=None,
              help="Average the segmenter over the four flips of each tile (four times its time; a sun-aware model: the identity and the up-down mirror only) [default: the model's].")
@click.option("--match-mode", type=click.Choice(["deepmoon", "strict", "iou"]), default="deepmoon", show_default=True,
              help="Rule under which a post crater already existed in pre.")
@click.option("--near", "near_px", type=click.FloatRange(0), default=32.0, show_default=True,
              help="A changed patch within this many pixels of a crater's rim makes it a candidate.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Drop candidates scoring less (the score is 0..1, docs/monitor.md; a candidate scoring 0 is never listed).")
@click.option("--block-size", type=click.IntRange(64), default=2048, show_default=True,
              help="Segmentation block side, pixels (memory bound; the unit of work on a cluster).")
@click.option("--catalogues", type=click.Choice(["near-change", "all"]), default="near-change", show_default=True,
              help="What is segmented: near-change, only around the changed patches (the only places a new crater can be: much faster on large images; pre_craters.csv and post_craters.csv hold those places' craters); all, both whole images (complete catalogues of both dates).")
@click.option("--pixel-size", type=click.FloatRange(0, min_open=True), default=None,
              help="Pixel size in metres, for diameters when the images are not georeferenced.")
@click.option("--sun-azimuth", default=None, metavar="DEG|auto|none",
              help="Where the light comes from in PRE (and POST unless --post-sun-azimuth), degrees clockwise from the image top (0 top, 90 right, 180 bottom, 270 left; modulo 360; docs/sun.md); 'auto' estimates it from each image, 'none' switches the canonical frame off. Recorded in monitor.json [default: auto].")
@click.option("--post-sun-azimuth", default=None, metavar="DEG|auto|none",
              help="POST's own sun azimuth (a second date has its own sun) [default: --sun-azimuth].")
@dask_options
@weights_opt
@device_opt
@precision_opt
@seed_opt
@overwrite_opt
@common_options
def monitor(pre, post, outdir, pairs_csv, method, patch_size, n_pseudo, model_name, threshold, tta, match_mode, near_px,
            min_score, block_size, catalogues, pixel_size, sun_azimuth, post_sun_azimuth, scheduler, workers, weights, device, precision, seed, overwrite, verbose, quiet):
    """Find new impact craters between PRE and POST, ranked for vetting.

    Writes new_craters.csv and new_craters.gpkg (candidates ranked best
    first, on PRE's pixel grid, with map and planetocentric coordinates,
    diameters and scores), chips/ (one PNG per candidate: pre | post |
    difference), change/ (the outputs of `planetcd detect`), pre_craters.csv,
    post_craters.csv, report.html (a page to vet candidates one by one) and
    monitor.json (written last: a folder with it is complete).

    With --pairs, every pair goes to OUTDIR/<id>/ and OUTDIR/summary.csv lists them all.
    """
    from ..monitor import OUTPUTS, monitor as run_monitor, monitor_batch
    from ..report import craters_where
    from ..raster import check_writable
    from ..raster import check_output_places

    show_progress = setup_logging(verbose, quiet)
    outdir = Path(outdir)
    check_output_places(folders=[outdir])  # before any work, not at the first write
    options = dict(method=method, patch_size=patch_size, n_pseudo=n_pseudo, model=model_name, prob_threshold=threshold,
                   tta=tta, match_mode=match_mode, near_px=near_px, min_score=min_score, block_size=block_size, catalogues=catalogues,
                   pixel_size_m=pixel_size, weights=weights, device=device, seed=seed, sun_azimuth=sun_azimuth,
                   post_sun_azimuth=post_sun_azimuth, precision=precision)
    from ..craters.segment import parse_sun_azimuth

    parse_sun_azimuth(sun_azimuth, "--sun-azimuth")  # bad values fail before any work
    parse_sun_azimuth(post_sun_azimuth, "--post-sun-azimuth")
    if pairs_csv is not None:
        if pre is not None or post is not None:
            raise InputError("give PRE POST or --pairs, not both")
        from ..monitor import read_pairs

        read_pairs(pairs_csv)  # bad lists fail before any model is loaded
        with dask_runner(scheduler, workers) as runner:
            table = monitor_batch(pairs_csv, outdir, overwrite=overwrite, progress=show_progress, runner=runner, **options)
        for row in zip(*(table[k] for k in ("id", "status", "n_candidates", "best_score", "message"))):
            if row[1] == "failed":  # no counts to show: say why instead of '-1 candidates, best score nan'
                log.info("%-20s %-8s %s", row[0], row[1], row[4])
            elif row[2] == 0:
                log.info("%-20s %-8s %5d candidates", row[0], row[1], row[2])
            else:
                log.info("%-20s %-8s %5s candidates  best score %.3f", row[0], row[1], row[2], row[3])
        log.info("summary in %s", outdir / "summary.csv")
        if any(s == "failed" for s in table["status"]):
            raise InputError(f"{sum(s == 'failed' for s in table['status'])} pair(s) failed; see {outdir / 'summary.csv'}")
        return
    if pre is None or post is None:
        raise InputError("give PRE and POST images, or --pairs pairs.csv")
    check_writable([outdir / n for n in OUTPUTS], overwrite)
    with dask_runner(scheduler, workers) as runner:
        result = run_monitor(pre, post, progress=show_progress, runner=runner, **options)
    result.write(outdir, overwrite=overwrite)
    table = result.table()
    dy, dx = result.change.displacement
    log.info("shift of post: dy=%+.2f dx=%+.2f px; %d changed patches; %d pre / %d post craters%s; %d candidates",
             dy, dx, int(result.change.changed.sum()), len(result.pre_craters), len(result.post_craters),
             craters_where(catalogues), len(result))
    for k in range(min(5, len(result))):
        log.info("  #%d  x %.1f y %.1f px  radius %.1f px  score %.3f  (ρ/τ %.2f, confidence %.2f)", table["rank"][k],
                 table["x_px"][k], table["y_px"][k], table["radius_px"][k], table["score"][k],
                 table["change_ratio"][k], table["confidence"][k])
    if len(result) == 0:
        log.info("no new-crater candidates: %s; the outputs in %s are complete (empty tables)",
                 "no patch changed between the dates" if not result.change.changed.any()
                 else "no changed patch holds a new crater or a change above the noise", outdir)
    else:
        log.info("open %s to vet them", outdir / "report.html")
