"""``planetcd segment``: crater probability, mask and catalog of one image."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import InputError

from .options import (common_options, dask_options, dask_runner, device_opt, outdir_opt, overwrite_opt, precision_opt,
                      setup_logging)

log = logging.getLogger("planetcd.segment")



@click.command("segment")
@click.argument("image", type=click.Path(dir_okay=True))
@outdir_opt
@click.option("--model", "model_name", default="ctx-craters", show_default=True, help="Registered model name or a .pt checkpoint path.")
@click.option("--tile", type=int, default=512, show_default=True, help="Tile side in pixels.")
@click.option("--overlap", type=int, default=64, show_default=True, help="Tile overlap in pixels (blended).")
@click.option("--threshold", type=float, default=None, help="Probability threshold of the mask and the crater extraction [default: the model's].")
@click.option("--pixel-size", type=float, default=None, help="Pixel size in metres, for diameters when the image is not georeferenced.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Tiles per network pass.")
@click.option("--band", type=int, default=1, show_default=True, help="Band to segment (1-based).")
@click.option("--block-size", type=click.IntRange(64), default=None,
              help="Segment blocks of this side (pixels; with a 192 px halo) one at a time: the memory bound and the unit of work on a cluster [default: 8192, an ordinary CTX tile in one block].")
@click.option("--scales", default=None, help="Also find craters on the image resampled by these factors, e.g. 2,1,0.5 (above 1: small craters, below: big ones); merged with the duplicate rule [default: the model's].")
@click.option("--min-contrast", type=float, default=None, help="Keep craters whose mean probability inside the disc exceeds that of the ring around it (1-1.5 radii) by at least this (-1 keeps all; filled-disc models only) [default: the model's].")
@click.option("--tta/--no-tta", default=None, help="Average the network over the four flips of each tile (four times the network time; a sun-aware model: the identity and the up-down mirror only, twice) [default: the model's].")
@click.option("--sun-azimuth", default=None, metavar="DEG|auto|none",
              help="Where the light comes from, degrees clockwise from the image top (0 top, 90 right, 180 bottom, 270 left; taken modulo 360; see docs/sun.md). 'auto' estimates it from the image; 'none' switches the canonical frame off. Sun-aware models segment the image turned so the light comes from the left; the value is recorded in run.json [default: auto].")
@click.option("--sun-refine", is_flag=True, default=False,
              help="With an estimated sun: when the craters found show it clearly 15-45 degrees away from the estimate (always checked, a warning says so), segment again in their frame (twice the time on that image; docs/sun.md).")
@click.option("--verify/--no-verify", default=None,
              help="Second stage: keep only the craters the model's sun-aware chip verifier accepts (a chip of each crater in the canonical frame, scored by a small CNN; docs/segment.md) [default: on when the model has one].")
@click.option("--verifier", "verifier_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A chip verifier checkpoint to use instead of the model's (benchmarks/train_ctx_verifier.py writes one).")
@click.option("--verify-threshold", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Verifier probability a crater needs [default: the verifier's].")
@click.option("--decoy-fdr", default=None, metavar="SHARE|off",
              help="With the verifier: also segment the image turned for the opposite sun (decoys: real craters look like mounds there) and raise the verifier threshold until decoys are at most SHARE of the catalogue (rough and knobby ground; twice the time). 'off': no decoys [default: the verifier's].")
@click.option("--decoy-sigma", default=None, metavar="PX|off",
              help="With decoys: each crater's verifier threshold from the decoys and craters around it (a Gaussian of PX pixels), so knobby parts of the image get a strict threshold and smooth parts keep a lax one. 'off': one threshold for the whole image [default: the verifier's].")
@dask_options
@device_opt
@precision_opt
@overwrite_opt
@common_options
def segment(image, outdir, model_name, tile, overlap, threshold, pixel_size, batch_size, band, block_size, scales,
            min_contrast, tta, sun_azimuth, sun_refine, verify, verifier_path, verify_threshold, decoy_fdr, decoy_sigma,
            scheduler, workers, device, precision, overwrite, verbose, quiet):
    """Segment craters in IMAGE (GeoTIFF, PNG, PGM, JPEG, ...).

    Writes OUTDIR/crater_prob.tif (float32 probability on the input grid and
    CRS), crater_mask.tif (1 = crater, 0 = not, 255 = no data) and
    craters.csv / craters.gpkg (one row per crater: x_px, y_px, radius_px,
    confidence, with map and planetographic coordinates and diameters in
    metres when the image is georeferenced or --pixel-size is given) and
    run.json (the settings, the sun azimuth used: given or estimated, and
    what the chip verifier kept).

    With --workers N (a local Dask cluster) or --scheduler ADDRESS, each block of the image is a task on the
    cluster (workers load the model once); the outputs are those of a single-process run.
    """
    from ..craters.segment import DEFAULT_BLOCK_SIZE, OUTPUTS, parse_sun_azimuth, segment as run_segment
    from ..raster import check_output_places, check_writable

    progress = setup_logging(verbose, quiet)
    outdir = Path(outdir)
    parse_sun_azimuth(sun_azimuth, "--sun-azimuth")  # a bad value fails before any work
    check_output_places(folders=[outdir])
    check_writable([outdir / name for name in OUTPUTS], overwrite)  # refuse before any work
    extraction = {} if min_contrast is None else {"min_contrast": min_contrast}
    if verifier_path and verify is False:
        raise click.UsageError("--verifier and --no-verify contradict each other")
    verify_arg = verifier_path if verifier_path else verify
    decoy_arg = parse_decoy_fdr(decoy_fdr)
    sigma_arg = parse_decoy_sigma(decoy_sigma)
    with dask_runner(scheduler, workers) as runner:
        result = run_segment(image, model_name, prob_threshold=threshold, scales=scales, tile_size=tile,
                             overlap=overlap, block_size=block_size or DEFAULT_BLOCK_SIZE, batch_size=batch_size,
                             band=band, pixel_size_m=pixel_size, device=device, tta=tta, runner=runner,
                             progress=progress, sun_azimuth=sun_azimuth, precision=precision,
                             verify=verify_arg, verify_threshold=verify_threshold, decoy_fdr=decoy_arg,
                             decoy_sigma=sigma_arg,
                             sun_refine=sun_refine, **extraction)
    result.write(outdir, overwrite=overwrite)
    log.info("%d craters; outputs in %s (%.1f s)", len(result.catalog), outdir, result.seconds)


def _parse_decoy_option(value: str | None, option: str, check, what: str) -> float | bool | None:
    """A decoy option: None (the verifier's), ``off`` (False) or a number ``check`` accepts (else a one-line error
    saying ``what`` it takes)."""
    if value is None:
        return None
    if value.strip().lower() == "off":
        return False
    try:
        return check(value, option)
    except ValueError:
        raise InputError(f"{option} {value!r}: {what} or 'off'") from None


def parse_decoy_fdr(value: str | None) -> float | bool | None:
    """``--decoy-fdr``: None (the verifier's), ``off`` (False) or a share in (0, 1]."""
    from ..craters.verify import check_fdr

    return _parse_decoy_option(value, "--decoy-fdr", check_fdr, "a share in (0, 1]")


def parse_decoy_sigma(value: str | None) -> float | bool | None:
    """``--decoy-sigma``: None (the verifier's), ``off`` (False) or a length in pixels."""
    from ..craters.verify import check_sigma

    return _parse_decoy_option(value, "--decoy-sigma", check_sigma, "a length in pixels")
