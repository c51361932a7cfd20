"""``planetcd segment``: crater probability, mask and catalog of one image."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from ..errors import InputError
from .options import common_options, dask_client, dask_options, device_opt, outdir_opt, overwrite_opt, setup_logging

log = logging.getLogger("planetcd.segment")

OUTPUTS = ("crater_prob.tif", "crater_mask.tif", "craters.csv", "craters.gpkg")


def _catalog_tools():
    """The ``Catalog`` class when the catalog modules are installed, else ``None``."""
    try:
        from ..craters.catalog import Catalog
    except ImportError:  # pragma: no cover - ships with planetcd
        return None
    return Catalog


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
@click.option("--scales", default=None, help="Also find craters on the image resampled by these factors, e.g. 2,1,0.5 (above 1: small craters, below: big ones); merged with the duplicate rule [default: the model's].")
@click.option("--min-contrast", type=float, default=None, help="Keep craters whose mean probability inside the disc exceeds that of the ring around it (1-1.5 radii) by at least this (-1 keeps all; filled-disc models only) [default: the model's].")
@click.option("--tta/--no-tta", default=None, help="Average the network over the four flips of each tile (four times the network time) [default: the model's].")
@dask_options
@device_opt
@overwrite_opt
@common_options
def segment(image, outdir, model_name, tile, overlap, threshold, pixel_size, batch_size, band, scales, min_contrast, tta, scheduler,
            workers, device, overwrite, verbose, quiet):
    """Segment craters in IMAGE (GeoTIFF, PNG, PGM, JPEG, ...).

    Writes OUTDIR/crater_prob.tif (float32 probability on the input grid and
    CRS), crater_mask.tif (1 = crater, 0 = not, 255 = no data) and
    craters.csv / craters.gpkg (one row per crater: x_px, y_px, radius_px,
    confidence, with map and planetographic coordinates and diameters in
    metres when the image is georeferenced or --pixel-size is given).

    With --workers N (a local Dask cluster) or --scheduler ADDRESS, each batch of tiles is a task on the
    cluster (workers load the model once); the outputs are those of a single-process run.
    """
    import torch

    from .. import models
    from ..craters.segment import MIN_SIZE, catalog_craters, parse_scales, segment_raster
    from ..raster import check_writable, is_georeferenced, open_raster

    progress = setup_logging(verbose, quiet)
    outdir = Path(outdir)
    Catalog = _catalog_tools()
    outputs = [outdir / name for name in (OUTPUTS if Catalog else OUTPUTS[:2])]
    check_writable(outputs, overwrite)
    if tile < 32:
        raise InputError(f"--tile {tile}: must be at least 32 pixels")
    if overlap < 0 or overlap >= tile:
        raise InputError(f"--overlap {overlap}: must be at least 0 and smaller than --tile")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InputError(f"--threshold {threshold}: must be between 0 and 1")
    if pixel_size is not None and not pixel_size > 0:
        raise InputError(f"--pixel-size {pixel_size}: must be positive")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if min_contrast is not None and not -1.0 <= min_contrast <= 1.0:
        raise InputError(f"--min-contrast {min_contrast}: must be between -1 and 1")
    scales = parse_scales(scales)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device available")

    # Check the input before loading the network: missing, unreadable, too small, all nodata.
    with open_raster(image) as ds:
        if ds.height < MIN_SIZE or ds.width < MIN_SIZE:
            raise InputError(f"{image}: image of {ds.height}x{ds.width} px is too small (at least {MIN_SIZE}x{MIN_SIZE})")
        transform = ds.transform if is_georeferenced(ds) else None
        crs = ds.crs if is_georeferenced(ds) else None
    model = models.load(model_name, device=device, tta=tta)
    meta = model.metadata
    threshold = float(meta.get("threshold", 0.5) if threshold is None else threshold)
    if min_contrast is not None and min_contrast > -1.0 and meta.get("target", "filled") != "filled":
        raise InputError(f"--min-contrast: model {meta.get('name')} draws {meta.get('target')} targets; the contrast screens filled discs")
    log.info("model %s (%s%s), threshold %.2f, tiles of %d px overlapping by %d px on %s",
             meta.get("name"), meta.get("arch"), ", flip-averaged" if meta["tta"] else "", threshold, tile, overlap, device)

    t0 = time.monotonic()
    options = dict(threshold=threshold, tile=tile, overlap=overlap, device=device, batch_size=batch_size, band=band,
                   progress=progress)
    with dask_client(scheduler, workers) as client:
        if client is None:
            result = segment_raster(image, outdir, model, **options)
        else:
            from ..distributed import segment_raster_distributed

            # workers load a registry name or checkpoint once each; a --tta/--no-tta override travels with the module
            result = segment_raster_distributed(client, image, outdir, model_name if tta is None else model, **options)
    log.info("segmented %dx%d px in %.1f s", result.shape[0], result.shape[1], result.seconds)
    if Catalog is None:
        return
    with open_raster(result.prob_path) as src:
        prob = src.read(1)
    overrides = {} if min_contrast is None else {"min_contrast": min_contrast if min_contrast > -1.0 else None}
    craters = catalog_craters(model, image, prob, threshold=threshold, scales=scales, overrides=overrides, band=band,
                              tile=tile, overlap=overlap, device=device, batch_size=batch_size)
    catalog = Catalog.from_pixels(craters, transform=transform, crs=crs, pixel_size_m=pixel_size, name=Path(image).stem)
    catalog.to_csv(outdir / "craters.csv")
    catalog.to_gpkg(outdir / "craters.gpkg")
    log.info("%d craters; outputs in %s (%.1f s)", len(craters), outdir, time.monotonic() - t0)
