"""``planetcd benchmark make OUTDIR``: labelled change pairs generated from real images."""

from __future__ import annotations

import logging

import click

from .options import common_options, overwrite_opt, setup_logging

log = logging.getLogger("planetcd")


@click.group()
def benchmark() -> None:
    """Benchmark sets for change detection (see docs/evaluate.md)."""


@benchmark.command()
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--preset", type=click.Choice(["ctx-impacts", "lroc", "rsl", "small-craters", "real-nuisance"]), default="ctx-impacts",
              show_default=True, help="ctx-impacts: 150 px patches, shifts <= 10 px, new craters; lroc: 100 px, "
                                      "<= 40 px; rsl: 100 px, dark slope streaks; small-craters: 150 px, <= 20 px, "
                                      "craters 6-14 px across; real-nuisance: ctx-impacts with another sun, tracks, "
                                      "seams, haze and coarser resolution on both dates (docs/evaluate.md).")
@click.option("--n-pairs", type=click.IntRange(1), default=200, show_default=True, help="Number of pairs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; the same seed gives the same bytes.")
@click.option("--images", default=None,
              help="Comma-separated source images: MC11E-H, MC11E-I, hrsc-holdout or paths "
                   "[default: MC11E-H,MC11E-I,hrsc-holdout; MC11E-A..G train the UNet and are refused].")
@click.option("--shared", "shared_dir", type=click.Path(file_okay=False), default=None,
              help="Shared data folder [default: $PLANETCD_SHARED, else ../shared].")
@click.option("--changed-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Fraction of changed pairs.")
@click.option("--patch-size", type=click.IntRange(32), default=None, help="Override the preset's patch side, px.")
@click.option("--max-shift", type=click.FloatRange(0), default=None, help="Override the preset's largest shift, px.")
@click.option("--format", "fmt", type=click.Choice(["png", "tif"]), default="png", show_default=True,
              help="Image format of pre/ and post/.")
@click.option("--allow-training-images", is_flag=True,
              help="Allow MC11E-A..G (only for sets that train something, never for test sets).")
@overwrite_opt
@common_options
def make(outdir, preset, n_pairs, seed, images, shared_dir, changed_fraction, patch_size, max_shift, fmt,
         allow_training_images, overwrite, verbose, quiet):
    """Write a labelled set to OUTDIR (pre/, post/, labels.csv, pairs.csv, benchmark.json)."""
    from pathlib import Path

    from ..datasets.benchmark import make_benchmark, write_benchmark
    from ..raster import check_output_places, check_writable

    show_progress = setup_logging(verbose, quiet)
    outdir = Path(outdir)
    check_output_places(folders=[outdir])
    check_writable([outdir / n for n in ("pre", "post", "labels.csv", "pairs.csv", "benchmark.json")], overwrite)
    names = [n.strip() for n in images.split(",") if n.strip()] if images else None
    result = make_benchmark(preset, n_pairs, seed, names, shared_dir=shared_dir, changed_fraction=changed_fraction,
                            patch_size=patch_size, max_shift=max_shift, allow_training_images=allow_training_images,
                            progress=show_progress)
    write_benchmark(outdir, result, fmt=fmt, overwrite=overwrite)
    kinds = {}
    for spec in result.specs:
        kinds[spec.implant] = kinds.get(spec.implant, 0) + 1
    log.info("wrote %d pairs (%s) from %s to %s", n_pairs, ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())),
             ", ".join(result.images), outdir)
