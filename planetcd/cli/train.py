"""``planetcd train``: train a crater segmenter on labelled images."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from ..errors import InputError
from .options import common_options, device_opt, outdir_opt, overwrite_opt, precision_opt, seed_opt, setup_logging

log = logging.getLogger("planetcd.train")

LABEL_SUFFIXES = (".xml", ".csv")

#: Smallest training or validation image side, pixels (the network pools four times, and crops need room).
MIN_IMAGE_SIZE = 32


def _labels_for(image: Path, labels_dir: Path | None) -> Path:
    folder = labels_dir if labels_dir is not None else image.parent
    for suffix in LABEL_SUFFIXES:
        for name in (image.stem + suffix, image.stem + "_labels" + suffix):
            if (folder / name).is_file():
                return folder / name
    raise InputError(f"{image}: no label file {image.stem}.xml / {image.stem}.csv in {folder}")


#: Where a click option's value counts as given by the user (not its default).
_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def _sun_azimuths(values, paths: list[Path]) -> dict[str, float]:
    """``--sun-azimuth`` values (``IMAGE=DEG`` or one plain ``DEG``) → ``{image stem: degrees}``.

    IMAGE is an image's file name or stem; a plain DEG applies to every image
    not named; ``auto`` leaves an image to its labels or the estimator. Degrees
    follow :func:`planetcd.craters.segment.parse_sun_azimuth` (any number modulo 360).
    """
    from ..craters.segment import SUN_OFF, parse_sun_azimuth

    names = {}
    for p in paths:
        names[p.name] = names[p.stem] = p.stem
    default, named = None, {}
    plain = 0
    for value in values:
        image, sep, degrees = value.rpartition("=")
        if sep and not image:
            raise InputError(f"--sun-azimuth {value!r}: give IMAGE=DEG (IMAGE: an image's file name or stem) or DEG")
        if sep and image not in names:
            raise InputError(f"--sun-azimuth {value!r}: {image!r} is not one of the training or validation images "
                             f"({', '.join(sorted({p.name for p in paths}))})")
        if not degrees.strip():
            raise InputError(f"--sun-azimuth {value!r}: no degrees given")
        azimuth = parse_sun_azimuth(degrees, "--sun-azimuth")
        if azimuth == SUN_OFF:
            raise InputError(f"--sun-azimuth {value!r}: training turns every image by its sun azimuth; give degrees or 'auto'")
        if not sep:
            plain += 1
            if plain > 1:
                raise InputError(f"--sun-azimuth {value!r}: only one plain DEG (for all images); name the others IMAGE=DEG")
            default = azimuth
        elif names[image] in named:
            raise InputError(f"--sun-azimuth {value!r}: {image} given twice")
        else:
            named[names[image]] = azimuth
    out = {p.stem: default for p in paths if default is not None}
    out.update(named)
    return {k: v for k, v in out.items() if v is not None}


@click.command("train")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--val", "val_images", multiple=True, type=click.Path(dir_okay=False), help="Validation image (repeat); never trained on.")
@click.option("--labels", "labels_dir", type=click.Path(file_okay=False), default=None, help="Folder of label files named after the images (<stem>.xml VOC boxes or <stem>.csv pixel craters); default: beside each image.")
@outdir_opt
@click.option("--recipe", type=click.Choice(["old", "sun-aware"]), default="old", show_default=True,
              help="sun-aware: TrainConfig.sun_aware_recipe (canonical frame, light-axis mirror, mounds as hard negatives, crater-F1 selection, cosine schedule, bf16 where native; docs/training.md); options given on the command line override its fields (the defaults shown are the old recipe's).")
@click.option("--sun-azimuth", "sun_azimuths", multiple=True, metavar="[IMAGE=]DEG",
              help="Sun azimuth of an image (IMAGE: its file name or stem; repeat), or one plain DEG for all images: degrees clockwise from the image top, the direction the light comes from. Images without one (or 'auto'): read from their labels, else estimated. Needs --recipe sun-aware.")
@click.option("--arch", type=click.Choice(["symmetric", "small", "vgg16-unet"]), default="symmetric", show_default=True, help="DeLatte's SymmetricUNet, the 48×48-chip SmallUNet, or VGG16UNet (ImageNet VGG-16 encoder, TernausNet decoder; its weights from $PLANETCD_VGG16_WEIGHTS).")
@click.option("--vgg-frozen-blocks", type=click.IntRange(0, 5), default=2, show_default=True, help="--arch vgg16-unet: VGG-16 blocks kept at their ImageNet weights (the checkpoints leave them out; loading them needs the ImageNet file).")
@click.option("--vgg-decoder", type=click.IntRange(1, 256), default=32, show_default=True, help="--arch vgg16-unet: the decoder's base width (TernausNet: 32).")
@click.option("--vgg-depth", type=click.IntRange(3, 5), default=5, show_default=True, help="--arch vgg16-unet: VGG-16 blocks in the encoder (3: to conv3_3, stride 8).")
@click.option("--kernel-size", type=click.Choice(["3", "7", "11"]), default="3", show_default=True)
@click.option("--filter-multiple", type=click.Choice(["0.5", "1", "2"]), default="1", show_default=True)
@click.option("--target", type=click.Choice(["filled", "outline", "rings"]), default="filled", show_default=True)
@click.option("--loss", type=click.Choice(["bce", "dice", "focal"]), default="bce", show_default=True)
@click.option("--pos-weight", type=float, default=None, help="Weight of crater pixels in the BCE loss (sparse targets).")
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True, help="cosine: decay the learning rate step by step from --lr to --lr-min over --epochs.")
@click.option("--lr-min", type=float, default=0.0, show_default=True, help="Final learning rate of the cosine schedule.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--patience", type=int, default=10, show_default=True, help="Early stopping: epochs without a better validation loss.")
@click.option("--crop", type=int, default=256, show_default=True, help="Side of the random training crops.")
@click.option("--crops-per-epoch", type=int, default=256, show_default=True)
@click.option("--positive-fraction", type=float, default=0.0, show_default=True, help="Share of crops centred near a labelled crater.")
@click.option("--val-tile", type=int, default=512, show_default=True, help="Validation tile side (the paper's 512×512 sub-images).")
@click.option("--monitor", type=click.Choice(["val_loss", "val_f1", "val_balanced_accuracy"]), default="val_loss", show_default=True, help="What early stopping and the best checkpoint follow (val_f1: crater F1, DeepMoon rule, craters >= 8 px; val_balanced_accuracy: pixels at 0.5).")
@click.option("--init", "init", type=click.Path(dir_okay=False, exists=True), default=None, help="Start from the weights of this checkpoint (same architecture).")
@click.option("--no-augment", is_flag=True, help="Turn rotation/zoom/flip/brightness augmentation off.")
@click.option("--noise", type=float, default=0.0, show_default=True, help="Augmentation: additive Gaussian noise of std up to this (image normalized to -1..1).")
@click.option("--blur", type=float, default=0.0, show_default=True, help="Augmentation: Gaussian blur of sigma up to this many pixels.")
@click.option("--zoom-range", default=None, metavar="LOW,HIGH", help="Augmentation: magnifications drawn log-uniformly in LOW..HIGH (e.g. 0.7,2.5) instead of 1 ± 0.3.")
@click.option("--flips", type=click.Choice(["all", "light-axis", "none"]), default="all", show_default=True,
              help="Augmentation mirrors: all (left-right and up-down; the old recipe), light-axis (up-down only: keeps the light from the left; sun-aware default), none.")
@click.option("--hard-negative-rate", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Mean number of labelled craters turned 180° (mounds, target 0) pasted into each training crop (sun-aware default 1).")
@click.option("--confidence-weights/--no-confidence-weights", default=False, show_default=True,
              help="Weigh crater pixels by min(1, annotators / 3) from the VOC labels' <confidence> (off in the sun-aware recipe too: docs/training.md).")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True,
              help="Channels-last memory format for the model and batches (sun-aware default: on).")
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--time-limit", type=float, default=None, help="Stop after the epoch that passes this many minutes.")
@seed_opt
@device_opt
@precision_opt
@overwrite_opt
@common_options
def train(images, val_images, labels_dir, outdir, recipe, sun_azimuths, arch, vgg_frozen_blocks, vgg_decoder, vgg_depth, kernel_size, filter_multiple, target, loss,
          pos_weight, lr, lr_schedule, lr_min, batch_size, epochs, patience, crop, crops_per_epoch, positive_fraction, val_tile, monitor, init,
          no_augment, noise, blur, zoom_range, flips, hard_negative_rate, confidence_weights, precision, channels_last, threads, time_limit,
          seed, device, overwrite, verbose, quiet):
    """Train a crater segmenter on IMAGES (with --val images held out).

    Writes OUTDIR/best.pt (the checkpoint with the lowest validation loss, or
    the best crater F1 with --monitor val_f1), last.pt, log.csv (metrics per
    epoch), curves.png and config.json. --recipe sun-aware trains the
    sun-aware recipe of docs/training.md; the other options given override
    its fields.
    """
    from ..craters import train as train_mod
    from ..craters.train import TrainConfig, load_labelled
    from ..inputs import check_raster
    from ..raster import check_writable

    progress = setup_logging(verbose, quiet)
    outdir = Path(outdir)
    outputs = [outdir / n for n in ("best.pt", "log.csv", "curves.png", "config.json")]
    check_writable(outputs, overwrite)
    train_paths = [Path(p) for p in images]
    val_paths = [Path(p) for p in val_images]
    labels = Path(labels_dir) if labels_dir else None
    if labels is not None and not labels.is_dir():
        raise InputError(f"{labels}: no such folder")
    shared = {p.resolve() for p in train_paths} & {p.resolve() for p in val_paths}
    if shared:
        raise InputError(f"{sorted(shared)[0]}: in both training and validation images (split by image)")
    zoom_limits = None
    if zoom_range is not None:
        try:
            zoom_limits = tuple(float(v) for v in zoom_range.split(","))
        except ValueError:
            zoom_limits = ()
        if len(zoom_limits) != 2 or not 0 < zoom_limits[0] <= zoom_limits[1]:
            raise InputError(f"--zoom-range {zoom_range}: give LOW,HIGH with 0 < LOW <= HIGH, e.g. 0.7,2.5")
    if vgg_frozen_blocks > vgg_depth:
        raise InputError(f"--vgg-frozen-blocks {vgg_frozen_blocks}: at most --vgg-depth ({vgg_depth}) blocks can be frozen")
    given_azimuths = _sun_azimuths(sun_azimuths, [*train_paths, *val_paths])
    if given_azimuths and recipe != "sun-aware":
        raise InputError("--sun-azimuth: only the sun-aware recipe turns images by their sun azimuth; add --recipe sun-aware")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    fields = dict(
        arch=arch, kernel_size=int(kernel_size), filter_multiple=float(filter_multiple), target=target, loss=loss, pos_weight=pos_weight,
        lr=lr, lr_schedule=lr_schedule, lr_min=lr_min, batch_size=batch_size, epochs=epochs, patience=patience, crop=crop, crops_per_epoch=crops_per_epoch,
        positive_fraction=positive_fraction, val_tile=val_tile, monitor=monitor, init=init, augment=not no_augment, noise=noise, blur=blur, zoom_range=zoom_limits, seed=seed, threads=threads,
        time_limit=None if time_limit is None else 60.0 * time_limit, device=device, flips=flips, hard_negative_rate=hard_negative_rate,
        confidence_weights=confidence_weights, precision=precision, channels_last=channels_last, vgg_frozen_blocks=vgg_frozen_blocks,
        vgg_decoder=vgg_decoder, vgg_depth=vgg_depth,
    )
    if recipe == "sun-aware":
        # the recipe's own fields keep its values unless their option was given on the command line
        ctx = click.get_current_context()
        option_of = {"augment": "no_augment", "zoom_range": "zoom_range", "time_limit": "time_limit"}
        base, sun_recipe = TrainConfig(), TrainConfig.sun_aware_recipe()
        for name in list(fields):
            source = ctx.get_parameter_source(option_of.get(name, name))
            if getattr(sun_recipe, name) != getattr(base, name) and source not in _GIVEN:
                del fields[name]
        config = TrainConfig.sun_aware_recipe(**fields, sun_azimuths=given_azimuths or None)
    else:
        config = TrainConfig(**fields)
    label_paths = {}
    for path in [*train_paths, *val_paths]:  # every input checked before any is read in full
        check_raster(path, min_size=MIN_IMAGE_SIZE, band=1, size_of=f"the {MIN_IMAGE_SIZE} px a training image needs")
        label_paths[path] = _labels_for(path, labels)
    log.info("reading %d training and %d validation images", len(train_paths), len(val_paths))
    train_set = [load_labelled(p, label_paths[p], config.target) for p in train_paths]
    val_set = [load_labelled(p, label_paths[p], config.target) for p in val_paths]
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "config.json").write_text(json.dumps(
        {"config": config.__dict__, "train": [str(p) for p in train_paths], "val": [str(p) for p in val_paths]}, indent=2))
    t0 = time.monotonic()
    result = train_mod.train(
        train_set, val_set, config, outdir, progress=progress,
        extra_metadata={"training_data": [p.name for p in train_paths], "validation_data": [p.name for p in val_paths]},
    )
    log.info(
        "best epoch %d (validation loss %.4f) of %d, %.1f min; weights in %s",
        result["best_epoch"], result["best_val_loss"], result["epochs_run"], (time.monotonic() - t0) / 60, result["checkpoint"],
    )
