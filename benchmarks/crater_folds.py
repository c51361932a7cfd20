"""Crater segmenters selected and scored on unseen terrain: k-fold by tile over MC11E A-I, and the mound test.

    python benchmarks/crater_folds.py --out runs/folds [--recipe sun-aware|old] [--folds ADG,BEH,CFI] [--only BEH]
        [--epochs 60] [--crops-per-epoch 512] [--time-limit SECONDS] [--threads 2] [--precision auto] [--device cpu]
        [--hrsc] [--score-only [--ensemble-with runs/other-folds] [--tta on]] [--table [--choose-among DIR,...]] [--confidence-weights on|off] [--arch vgg16-unet [--vgg-frozen-blocks 2] [--vgg-decoder 32] [--vgg-depth 5]]
    python benchmarks/crater_folds.py --out runs/folds-refit --refit runs/folds [...the same training options]
    python benchmarks/crater_folds.py --out runs/folds --verifier [--opposite-negatives] [--scale-variants "1;1.5,1,0.5"]
        [--decoy-fdr 0.1,0.2,0.3,0.5] [--verifier-epochs 24] [--hrsc] [--infer-precision bf16]
        [--ensemble-with runs/other-folds] [--nested-ratios none,2] [--reselect | --table]
        [--per-tile-threshold] [--local-decoys 150,300] [--per-tile-f1] [--select pooled|worst]
    python benchmarks/crater_folds.py --nested-labels
    python benchmarks/crater_folds.py --mound-test --model runs/folds/fold-BEH/best.pt [--tiles H,I] [--threshold T]
    python benchmarks/crater_folds.py --mound-test --model ctx-craters --pipeline segment --verify-threshold tile
    python benchmarks/crater_folds.py --score-model --model ctx-craters --tiles H,I,HRSC [--threshold T]
    python benchmarks/crater_folds.py --score-product --tiles H,I,HRSC [--verify model|none|PATH] [--scales 2,1,0.5]
        [--tta model|on|off] [--decoy-fdr SHARE|off] [--decoy-sigma PX|off] [--sun-refine]

Folds. Each fold holds out its tiles (e.g. {A, D, G}); the model is trained
on the other folds' tiles minus an inner validation set (the last tile of
each other fold, e.g. H and I for fold ADG). The epoch is the one with the
best crater F1 on the inner validation tiles (``monitor="val_f1"``), and the
probability threshold is chosen afterwards on the same inner validation tiles
with the test-time pipeline below. Neither ever sees the reported tiles.
Then each held-out tile (and with ``--hrsc`` the PyCDA HRSC tile, another
camera) is scored: DeepMoon rule, craters of diameter >= 8 px, clustered
labels (``match_craters(mode="deepmoon", min_diameter_px=8)``). Prints per
tile P/R/F1, the pooled F1 over all held-out CTX tiles of the folds run and
the worst tile; ``fold-*/result.json`` keeps them (``--score-only`` rescores
trained folds).

Refit (``--refit RUN``): after RUN's fold has made its choices on the inner tiles, the same recipe is trained
again on the training AND inner tiles (six tiles instead of four), without validation or early stop, and its
last epoch is scored at the threshold RUN chose; nothing is chosen on the refitted model, and the verifier's
choices (``--verifier``), made on the inner tiles, are refused for it.

Test-time pipeline (:func:`detect`): the tile's sun azimuth is *estimated*
(``sun.estimate_sun_azimuth``, or the fallback when not confident: labels are
not known at test time), a sun-aware model sees the tile turned to its
canonical frame (light from the left), the probability map is made by
``planetcd.craters.segment.image_probability`` (512 px tiles, 64 px overlap),
craters are extracted by components and mapped back to the input grid.

Mound test (issue 13's acceptance: >= 80 % found, <= 10 % on turned chips):
chips of 128 px (more for big craters) around every labelled crater of
diameter >= 8 px of tiles H and I, cut from the tile's canonical frame
(normalized with whole-tile limits); the share of craters the model finds on
its chip (a crater matching it by the DeepMoon rule), and the share found on
the same chip turned 180° (where, lit from the left, it looks like a mound).
``--pipeline network`` (the default) runs the network alone on each chip (one
scale, no flip averaging); ``--pipeline segment`` runs ``planetcd segment`` as
shipped (the registry's scales and flip averaging; the chip normalized by its
own limits), then the verifier. ``--verify-threshold tile``: the verifier
threshold ``planetcd segment`` applies to each whole tile (raised by its decoys).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

SHARED = Path(os.environ.get("PLANETCD_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
CTX = SHARED / "data" / "ctx-mc11e"
HRSC = SHARED / "data" / "hrsc-pycda"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_DIAMETER_PX = 8.0
#: Smallest radius on a map reduced by a scale below 1 (the ``ctx-craters`` registry's ``coarse_min_radius``).
COARSE_MIN_RADIUS = 8.0

log = logging.getLogger("crater_folds")


# --------------------------------------------------------------------------- data


def tile_paths(tile: str) -> tuple[Path, Path]:
    """Image and clustered label paths of MC11E-<tile>, or of the HRSC tile."""
    if tile.upper() == "HRSC":
        return HRSC / "holdout_tile.pgm", HRSC / "holdout_tile_labels.csv"
    return CTX / "images" / f"MC11E-{tile}.png", CTX / "annotations" / "clustered" / f"MC11E-{tile}.xml"


def raw_tile(tile: str) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 (H, W) as stored, truth craters (n, 3))``."""
    from planetcd.craters.train import read_labels
    from planetcd.raster import open_raster

    image_path, labels_path = tile_paths(tile)
    with open_raster(image_path) as ds:
        image = ds.read(1).astype(np.float32)
    return image, read_labels(labels_path)


# --------------------------------------------------------------------------- the one inference function


def tile_azimuth(image: np.ndarray) -> dict:
    """Estimated sun azimuth of a test tile (labels unknown): the estimate, or the fallback when not confident."""
    from planetcd.craters import sun
    from planetcd.raster import missing_pixels

    est = sun.estimate_sun_azimuth(image, missing=missing_pixels(image, np.ones(image.shape, bool), None))
    return {"azimuth_deg": round(est.azimuth_or_fallback, 2), "estimate_deg": round(est.azimuth_deg, 2),
            "confidence": round(est.confidence, 3), "source": "estimated" if est.confident else "fallback"}


def canonical_probability(model: torch.nn.Module, image: np.ndarray, azimuth: float | None, device: str = "cpu"):
    """Crater probability of a raw image on its canonical grid, and the frame back to the input grid.

    The ONE place this benchmark calls the segmentation engine (adapt it when
    ``planetcd.craters.segment`` changes). ``azimuth`` None: no turn (a model
    trained without the sun-aware recipe).
    """
    from planetcd.craters import sun
    from planetcd.craters.segment import image_probability

    # fill 0: the pixels outside the turned tile are missing, and image_probability fills them with the mean
    turned, frame = sun.to_canonical(image, sun.CANONICAL_AZIMUTH_DEG if azimuth is None else azimuth, fill=0.0)
    with torch.no_grad():
        prob = image_probability(model.to(device), np.asarray(turned, np.float32), tile_size=512, overlap=64)
    return np.nan_to_num(prob, nan=0.0), frame


def craters_from(prob: np.ndarray, frame, threshold: float, target: str = "filled", min_radius: float = 2.0) -> np.ndarray:
    """Craters (n, 4) extracted from a canonical probability map, on the input grid (those that fall on it)."""
    from planetcd.craters.extract import extract_craters

    found = extract_craters(prob, method="components", threshold=threshold, target=target, min_radius=min_radius,
                            max_radius=150.0 * max(1.0, min_radius / 2.0))
    if frame is None or not len(found):
        return found
    back = frame.craters_to_input(found)
    rows, cols = frame.input_shape
    keep = (back[:, 0] >= -0.5) & (back[:, 0] <= cols - 0.5) & (back[:, 1] >= -0.5) & (back[:, 1] <= rows - 0.5)
    return back[keep]


def is_sun_aware(model: torch.nn.Module) -> bool:
    meta = getattr(model, "metadata", {}) or {}
    return bool(meta.get("sun_aware", False))


def detect(model, image: np.ndarray, thresholds=THRESHOLDS, target: str = "filled", device: str = "cpu",
           with_frame: bool = False):
    """``({threshold: craters (n, 4) on the input grid}, azimuth record)`` of one raw tile (and its frame)."""
    record = tile_azimuth(image) if is_sun_aware(model) else {"azimuth_deg": None, "source": "not sun-aware: no turn"}
    prob, frame = canonical_probability(model, image, record["azimuth_deg"], device)
    found = {th: craters_from(prob, frame, th, target) for th in thresholds}
    return (found, record, frame) if with_frame else (found, record)


def detect_upsampled(model, image: np.ndarray, scale: float, azimuth: float | None, thresholds, target: str = "filled",
                     device: str = "cpu") -> dict:
    """``{threshold: craters (n, 4) in the pixels of the image resampled by scale}``: the tile magnified (or, below
    1, reduced) as ``planetcd segment --scales`` does (``segment.resample_array``), turned by the 1x tile's azimuth,
    the same extraction with the minimum radius of ``segment.scale_min_radius`` (kept in full-image pixels above
    1; :data:`COARSE_MIN_RADIUS` of the reduced map below 1, as the ``ctx-craters`` registry entry)."""
    from planetcd.craters.segment import resample_array, scale_min_radius

    prob, frame = canonical_probability(model, resample_array(image, scale), azimuth, device)
    min_radius = scale_min_radius(scale, 2.0, COARSE_MIN_RADIUS)
    return {th: craters_from(prob, frame, th, target, min_radius=min_radius) for th in thresholds}


def parse_scale_variants(text: str) -> list[tuple[float, ...]]:
    """``"1;2,1"`` -> ``[(1.0,), (2.0, 1.0)]``: the catalogue scale sets a fold chooses among."""
    variants = [tuple(float(v) for v in part.split(",")) for part in text.split(";") if part.strip()]
    if not variants or any(1.0 not in v for v in variants):
        raise SystemExit(f"--scale-variants {text}: every variant must include scale 1")
    return variants


def parse_nested_ratios(text: str) -> list[float | None]:
    """``"none,2"`` -> ``[None, 2.0]``: the nested-fragment suppressions a fold chooses among (None: off)."""
    return [None if part.strip() == "none" else float(part) for part in text.split(",")]


def detect_opposite(model, image: np.ndarray, thresholds, target: str = "filled", device: str = "cpu"):
    """Craters found with the tile turned for the OPPOSITE sun (estimate + 180°: every crater looks like a mound),
    ``({threshold: craters on the input grid}, that frame)``; the verifier's mound negatives."""
    record = tile_azimuth(image)
    prob, frame = canonical_probability(model, image, (record["azimuth_deg"] + 180.0) % 360.0, device)
    return {th: craters_from(prob, frame, th, target) for th in thresholds}, frame


def score(found: np.ndarray, truth: np.ndarray, name: str):
    from planetcd.craters.match import match_craters

    return match_craters(np.asarray(found)[:, :3], truth, mode="deepmoon", min_diameter_px=MIN_DIAMETER_PX, name=name)


def prf(result) -> dict:
    return {"tp": int(result.tp), "fp": int(result.fp), "fn": int(result.fn), "precision": round(float(result.precision), 4),
            "recall": round(float(result.recall), 4), "f1": round(float(np.nan_to_num(result.f1)), 4)}


# --------------------------------------------------------------------------- folds


def parse_folds(text: str) -> list[list[str]]:
    folds = [list(part.strip().upper()) for part in text.split(",") if part.strip()]
    seen = [t for f in folds for t in f]
    if len(folds) < 2 or len(set(seen)) != len(seen) or not set(seen) <= set("ABCDEFGHI"):
        raise SystemExit(f"--folds: at least two disjoint groups of MC11E tiles A-I, got {text!r}")
    return folds


def inner_split(folds: list[list[str]], k: int) -> tuple[list[str], list[str]]:
    """Training and inner-validation tiles of fold ``k``: the other folds, their last tiles for validation."""
    others = [f for j, f in enumerate(folds) if j != k]
    val = [f[-1] for f in others]
    train = [t for f in others for t in f if t not in val]
    return train, val


def refit_choices(run: str, test: list[str], train_tiles: list[str], val_tiles: list[str]) -> dict:
    """``--refit RUN``: the saved result of the same fold in RUN (trained on ``train_tiles``, its choices made on
    ``val_tiles``), whose choices the refitted model takes; a one-line error when RUN holds no such fold."""
    path = Path(run) / f"fold-{''.join(test)}" / "result.json"
    if not path.is_file():
        raise SystemExit(f"--refit: no {path} (train the fold there first, without --refit)")
    chosen = json.loads(path.read_text())
    if chosen.get("refit") or chosen.get("train") != train_tiles or chosen.get("val") != val_tiles:
        raise SystemExit(f"--refit: {path} is not fold {''.join(test)} trained on {','.join(train_tiles)} with its "
                         f"choices on {','.join(val_tiles)}")
    return chosen


def make_config(args):
    from planetcd.craters.train import TrainConfig

    common = dict(epochs=args.epochs, crops_per_epoch=args.crops_per_epoch, batch_size=args.batch_size, crop=args.crop,
                  patience=args.patience, threads=args.threads, time_limit=args.time_limit, seed=args.seed,
                  ema_decay=args.ema_decay,
                  device=args.device, filter_multiple=args.filter_multiple, val_tile=512, arch=args.arch,
                  vgg_frozen_blocks=args.vgg_frozen_blocks,
                  vgg_decoder=args.vgg_decoder, vgg_depth=args.vgg_depth)
    if args.lr is not None:
        common["lr"] = args.lr
    if args.recipe == "sun-aware":
        return TrainConfig.sun_aware_recipe(precision=args.precision, hard_negative_rate=args.hard_negative_rate,
                                            confidence_weights=args.confidence_weights == "on", **common)
    # the old recipe (all flips, no turn, no mounds, no confidence), with the same crater-F1 selection
    return TrainConfig(positive_fraction=0.5, monitor="val_f1", lr_schedule="cosine", lr_min=5e-5, **common)


def run_fold(args, folds, k) -> dict:
    from planetcd.craters.match import pool_results
    from planetcd.craters.train import load_labelled, train

    test = folds[k]
    train_tiles, val_tiles = inner_split(folds, k)
    outdir = Path(args.out) / f"fold-{''.join(test)}"
    refit = getattr(args, "refit", None)
    chosen = refit_choices(refit, test, train_tiles, val_tiles) if refit else None
    # --refit: the inner tiles are trained on too, so nothing is validated or chosen on them here
    fit_tiles, watch_tiles = (train_tiles + val_tiles, []) if refit else (train_tiles, val_tiles)
    if not args.score_only:
        log.info("fold %s: training on %s, inner validation %s", "".join(test), ",".join(fit_tiles),
                 ",".join(watch_tiles) or f"none (refit; choices of {refit})")
        train_set = [load_labelled(*tile_paths(t)) for t in fit_tiles]
        val_set = [load_labelled(*tile_paths(t)) for t in watch_tiles]
        config = make_config(args)
        if refit:
            config.patience = config.epochs + 1  # no validation: no early stop on the training loss
        if args.init:  # continue this fold's own earlier model (same training tiles: nothing held out is seen)
            config.init = str(Path(args.init) / f"fold-{''.join(test)}" / "best.pt")
        t0 = time.monotonic()
        summary = train(train_set, val_set, config, outdir,
                        extra_metadata={"folds": {"test": test, "train": fit_tiles, "val": watch_tiles}})
        train_seconds = time.monotonic() - t0
        if refit:  # the whole schedule: its last epoch is the fold's model (best.pt, as every later step reads)
            shutil.copyfile(outdir / "last.pt", outdir / "best.pt")
            summary["best_epoch"] = summary["epochs_run"]
        epochs = summary["history"]
        log.info("fold %s: %d epochs in %.0f s (%.1f s/epoch), best epoch %d", "".join(test), len(epochs), train_seconds,
                 train_seconds / max(1, len(epochs)), summary["best_epoch"])
    else:
        saved = json.loads((outdir / "result.json").read_text())
        if saved.get("refit") and not refit:
            raise SystemExit(f"{outdir}: a refitted fold (trained on its inner tiles); rescore it with --refit "
                             f"{saved['refit']['choices_of']}")
        summary, train_seconds = saved.get("training", {}), None
    if args.threads:
        torch.set_num_threads(args.threads)
    model = fold_network(args, outdir)
    target = model.metadata.get("target", "filled")

    # threshold: on the inner validation tiles, with the test-time pipeline (--refit: the one chosen there before)
    val_results = {th: [] for th in THRESHOLDS}
    val_azimuths = {}
    for t in watch_tiles:
        image, truth = raw_tile(t)
        found, record = detect(model, image, THRESHOLDS, target, args.device)
        val_azimuths[t] = record
        for th in THRESHOLDS:
            val_results[th].append(score(found[th], truth, t))
    if refit:
        val_f1, threshold = {}, float(chosen["threshold"])
        log.info("fold %s: threshold %.2f (chosen by %s on %s)", "".join(test), threshold, refit, ",".join(val_tiles))
    else:
        val_f1 = {th: float(np.nan_to_num(pool_results(r).f1)) for th, r in val_results.items()}
        threshold = max(THRESHOLDS, key=lambda th: (val_f1[th], -abs(th - 0.5)))
        log.info("fold %s: threshold %.2f (inner-validation F1 %.3f)", "".join(test), threshold, val_f1[threshold])

    per_tile, azimuths = {}, {}
    for t in test + (["HRSC"] if args.hrsc else []):
        image, truth = raw_tile(t)
        found, record = detect(model, image, (threshold,), target, args.device)
        azimuths[t] = record
        per_tile[t] = prf(score(found[threshold], truth, t))
        log.info("fold %s: %s %s", "".join(test), t, per_tile[t])
    result = {
        "test": test, "train": fit_tiles, "val": watch_tiles, "recipe": args.recipe,
        "refit": None if not refit else {"choices_of": refit, "inner_tiles": val_tiles, "threshold": threshold},
        "confidence_weights": args.confidence_weights if args.recipe == "sun-aware" else "off", "threshold": threshold,
        "ensemble_with": args.ensemble_with, "tta_flips": getattr(model, "flips", None),
        "inner_val_f1": {f"{th:g}": round(v, 4) for th, v in val_f1.items()},
        "best_epoch": model.metadata.get("epoch"), "val_azimuths": val_azimuths, "test_azimuths": azimuths, "tiles": per_tile,
        "training": {k2: v for k2, v in summary.items() if k2 != "history"} | (
            {"seconds": round(train_seconds, 1), "epochs_run": summary.get("epochs_run"),
             "seconds_per_epoch": round(train_seconds / max(1, summary.get("epochs_run", 1)), 1)} if train_seconds else {}),
    }
    (outdir / "result.json").write_text(json.dumps(result, indent=2, default=float))
    return result


# --------------------------------------------------------------------------- the chip verifier (second stage)

SEG_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
VERIFIER_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Segmenter thresholds whose detections (merged) are the verifier's hard negatives.
NEGATIVE_THRESHOLDS = (0.1, 0.2, 0.3, 0.5)


class MeanProbability(torch.nn.Module):
    """Segmenters' crater probabilities averaged (``--ensemble-with``): one network to the fold pipeline.

    The members must share the input normalisation, the target and the canonical sun frame; the metadata is the
    first member's. ``forward``: ``(n, 1, H, W)`` → the mean of the members' probabilities, same shape.
    """

    def __init__(self, *members: torch.nn.Module):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        first = members[0].metadata
        for m in members[1:]:
            for key in ("normalization", "target", "sun_aware", "canonical_azimuth_deg"):
                if m.metadata.get(key) != first.get(key):
                    raise SystemExit(f"--ensemble-with: the models differ in {key}: {first.get(key)} != "
                                     f"{m.metadata.get(key)}")
        self.metadata = dict(first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(0)


def fold_network(args, outdir: Path) -> torch.nn.Module:
    """The segmenter a fold is scored with: ``outdir/best.pt``, averaged with the same fold's model of another run
    (``--ensemble-with``: same training tiles, its own inner selection) and, with ``--tta on``, flip-averaged
    (``FlipAverage``: the identity and the mirror along the light axis for a sun-aware model, as ``segment`` does).
    ``--tta model`` and ``off`` score the network alone, as every fold table before them did."""
    from planetcd import models
    from planetcd.craters.unet import FlipAverage

    model = models.load(outdir / "best.pt", device=args.device, tta=False)
    if args.ensemble_with:
        other = models.load(Path(args.ensemble_with) / outdir.name / "best.pt", device=args.device, tta=False)
        model = MeanProbability(model, other)
    if args.tta == "on":
        model = FlipAverage(model)
    return model.eval()


def merged_detections(found: dict, thresholds=NEGATIVE_THRESHOLDS) -> np.ndarray:
    from planetcd.craters.match import suppress_duplicates

    parts = [found[th] for th in thresholds if len(found[th])]
    if not parts:
        return np.zeros((0, 4))
    merged = np.vstack(parts)
    return merged[suppress_duplicates(merged, merged[:, 3])]


def verifier_tag(args) -> str:
    """The suffix of a --verifier run's files (``verified{tag}.json``, ``scored{tag}.pkl``) for its options."""
    tag = "" if parse_scale_variants(args.scale_variants) == [(1.0,)] else "-scales"
    if args.decoy_fdr:
        tag += "-decoy"
    if args.verifier_epochs != 12:
        tag += f"-ep{args.verifier_epochs}"
    if args.infer_precision != "fp32":
        tag += f"-{args.infer_precision}"
    if args.ensemble_with:
        tag += "-ensemble"
    if args.tta == "on":
        tag += "-tta"
    if args.negative_scales:
        tag += "-negscales"
    return tag


def verified_name(args) -> str:
    """The file a --verifier run's choices and scores are written to (and ``--table --verifier`` reads)."""
    return (f"verified{verifier_tag(args)}{'' if parse_nested_ratios(args.nested_ratios) == [None] else '-nested'}"
            f"{'-pertile' if args.per_tile_threshold else ''}{'-pertilef1' if args.per_tile_f1 else ''}"
            f"{'-local' if args.local_decoys else ''}{'' if args.select == 'pooled' else '-' + args.select}.json")


def verifier_fold(args, folds, k) -> dict:
    """Fold ``k`` with the verifier: the fold's segmenter (trained by :func:`run_fold`), a chip verifier trained on
    the fold's training tiles, segmenter and verifier thresholds chosen together on the inner validation tiles.

    The catalogues of every variant on the inner-validation and test tiles, with their verifier and decoy scores,
    are kept in ``scored{tag}.pkl``: ``--reselect`` makes the choices again from them (no network runs)."""
    import pickle

    test = folds[k]
    outdir = Path(args.out) / f"fold-{''.join(test)}"
    scored_path = outdir / f"scored{verifier_tag(args)}.pkl"
    if args.reselect:
        if not scored_path.exists():
            raise SystemExit(f"--reselect: no {scored_path} (run the fold with --verifier and the same options first)")
        saved = pickle.loads(scored_path.read_bytes())
    else:
        saved = verifier_inference(args, folds, k)
        tmp = scored_path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(saved))
        tmp.replace(scored_path)
    return choose_verified(args, test, outdir, saved)


def verifier_inference(args, folds, k) -> dict:
    """:func:`verifier_fold`'s networks: ``{"val": ..., "tested": ..., "meta": ...}`` (see ``scored`` below)."""
    from planetcd.craters.verify import (
        image_pyramid,
        train_verifier,
        verifier_training_chips,
        verify_craters,
    )
    from planetcd.precision import autocast

    test = folds[k]
    train_tiles, val_tiles = inner_split(folds, k)
    outdir = Path(args.out) / f"fold-{''.join(test)}"
    if (outdir / "result.json").is_file() and json.loads((outdir / "result.json").read_text()).get("refit"):
        raise SystemExit(f"{outdir}: a refitted fold (--refit) trained on its inner tiles; the verifier's choices "
                         "are made there")
    model = fold_network(args, outdir)
    target = model.metadata.get("target", "filled")
    thresholds = tuple(sorted(set(SEG_THRESHOLDS) | set(NEGATIVE_THRESHOLDS)))
    rng = np.random.default_rng(args.seed)
    chips, labels = [], []
    t0 = time.monotonic()
    negative_scales = [float(x) for x in args.negative_scales.split(",")] if args.negative_scales else []
    infer = partial(autocast, args.infer_precision, args.device)  # the networks' inference (not the verifier's training)
    for t in train_tiles:
        image, truth = raw_tile(t)
        with infer():
            found, record, frame = detect(model, image, thresholds, target, args.device, with_frame=True)
            if negative_scales:  # the segmenter's detections on the magnified tile too (its false small craters)
                from planetcd.craters.segment import merge_scales

                magnified = {x: detect_upsampled(model, image, x, record["azimuth_deg"], NEGATIVE_THRESHOLDS, target,
                                                 args.device) for x in negative_scales}
                found = {th: (merge_scales({1.0: found[th], **{x: magnified[x][th] for x in negative_scales}})
                              if th in NEGATIVE_THRESHOLDS else found[th]) for th in found}
            opposite, opposite_frame = (detect_opposite(model, image, NEGATIVE_THRESHOLDS, target, args.device)
                                        if args.opposite_negatives else ({}, None))
        c, lab = verifier_training_chips(image_pyramid(image), truth, merged_detections(found), frame, rng=rng,
                                         opposite_detections=merged_detections(opposite) if opposite else None,
                                         opposite_frame=opposite_frame)
        chips.append(c)
        labels.append(lab)
    chips, labels = np.concatenate(chips), np.concatenate(labels)
    verifier = train_verifier(chips, labels, epochs=args.verifier_epochs, seed=args.seed, threads=args.threads)
    verifier_seconds = time.monotonic() - t0
    log.info("fold %s: verifier trained on %d chips (%d craters) in %.0f s", "".join(test), len(labels),
             int(labels.sum()), verifier_seconds)
    scale_variants = parse_scale_variants(args.scale_variants)
    extra_scales = sorted({s for variant in scale_variants for s in variant if s != 1.0})

    decoy_fdrs = [None] + [float(x) for x in args.decoy_fdr.split(",")] if args.decoy_fdr else [None]

    def merged(one, magnified, scales, th):
        """The catalogue of a scale set at segmenter threshold ``th``: scale 1's craters (``one[th]``) merged
        with the other scales' (``magnified[s][th]``)."""
        from planetcd.craters.segment import merge_scales

        if scales == (1.0,):
            return one[th]
        return merge_scales({s: (one[th] if s == 1.0 else magnified[s][th]) for s in scales})

    def scored(tiles):
        """``{tile: (truth, {(scales, th): (craters, verifier scores, (decoys, decoy scores))}, azimuth record)}``; the
        decoys (``--decoy-fdr``) are the same pipeline's craters under the opposite sun, scored in that frame."""
        out = {}
        for t in tiles:
            image, truth = raw_tile(t)
            with infer():
                out[t] = scored_tile(image, truth)
        return out

    def scored_tile(image, truth):
        """One tile's ``(truth, variants, azimuth record)``, as :func:`scored` gives it."""
        found, record, frame = detect(model, image, SEG_THRESHOLDS, target, args.device, with_frame=True)
        # the other scales in the canonical frame of the 1x tile's azimuth (scaling does not turn the sun)
        scaled = {s: detect_upsampled(model, image, s, record["azimuth_deg"], SEG_THRESHOLDS, target, args.device)
                  for s in extra_scales}
        decoy = None
        if decoy_fdrs != [None]:
            opposite = (record["azimuth_deg"] + 180.0) % 360.0
            prob, decoy_frame = canonical_probability(model, image, opposite, args.device)
            decoy_found = {th: craters_from(prob, decoy_frame, th, target) for th in SEG_THRESHOLDS}
            decoy_scaled = {s: detect_upsampled(model, image, s, opposite, SEG_THRESHOLDS, target, args.device)
                            for s in extra_scales}
        pyramid = image_pyramid(image)
        variants = {}
        for scales in scale_variants:
            for th in SEG_THRESHOLDS:
                c = merged(found, scaled, scales, th)
                if decoy_fdrs != [None]:
                    decoy_craters = merged(decoy_found, decoy_scaled, scales, th)
                    decoy = (decoy_craters, verify_craters(verifier, pyramid, decoy_craters, decoy_frame))
                variants[(scales, th)] = (c, verify_craters(verifier, pyramid, c, frame), decoy)
        return truth, variants, record

    val = scored(val_tiles)
    tested = scored(test + (["HRSC"] if args.hrsc else []))
    meta = {"train": train_tiles, "val": val_tiles, "scale_variants": scale_variants, "decoy_fdrs": decoy_fdrs,
            "opposite_negatives": bool(args.opposite_negatives), "infer_precision": args.infer_precision,
            "ensemble_with": args.ensemble_with, "negative_scales": negative_scales,
            "verifier": {"chips": int(len(labels)), "craters": int(labels.sum()), "seconds": round(verifier_seconds, 1),
                         "epochs": args.verifier_epochs}}
    return {"val": val, "tested": tested, "meta": meta}


def choose_verified(args, test, outdir: Path, saved: dict) -> dict:
    """The fold's choices on its inner-validation tiles (scales, thresholds, decoy share, nested suppression) and
    its test tiles scored with them; writes ``verified{tag}.json``."""
    from planetcd.craters.match import pool_results, suppress_nested
    from planetcd.craters.verify import decoy_cut, local_decoy_weights

    meta, val = saved["meta"], saved["val"]
    scale_variants, decoy_fdrs = meta["scale_variants"], list(meta["decoy_fdrs"])
    if args.local_decoys:  # each share also as a local one, per smoothing length: (share, sigma px)
        sigmas = [float(x) for x in args.local_decoys.split(",")]
        decoy_fdrs += [(q, sigma) for q in decoy_fdrs if q is not None for sigma in sigmas]
    nested_ratios = parse_nested_ratios(args.nested_ratios)
    # What does not depend on the thresholds, once per catalogue (the grid asks for it at every v and share):
    # the target-decoy competition, and --local-decoys' weights per length.
    once: dict = {}

    def competition(craters_scores):
        from planetcd.craters.verify import decoy_competition

        key = (id(craters_scores), "competition")
        if key not in once:
            c, p, (decoys, decoy_scores) = craters_scores
            once[key] = decoy_competition(c, p, decoys, decoy_scores)
        return once[key]

    def local_weights(craters_scores, sigma):
        key = (id(craters_scores), sigma)
        if key not in once:
            c, _, (decoys, _) = craters_scores
            won, decoy_won = competition(craters_scores)
            once[key] = local_decoy_weights(c[won], decoys[decoy_won], sigma)
        return once[key]

    def select_counted(craters_scores, v, fdr=None, nested=None):
        """The catalogue ``segment`` would keep, and how many decoys pass with it
        (:func:`planetcd.craters.verify.decoy_cut`, its competition and local weights made once per catalogue)."""
        c, p, decoy = craters_scores
        if not len(c):
            return c, 0
        if fdr is None:
            kept, n_decoys = c[p >= v], 0
        else:
            share, sigma = fdr if isinstance(fdr, tuple) else (fdr, None)  # --local-decoys: (share, sigma px)
            decided = decoy_cut(c, p, *decoy, v, share, sigma, competition=competition(craters_scores),
                                weights=None if sigma is None else local_weights(craters_scores, sigma))
            kept, n_decoys = c[decided.keep], decided.passing
        return (kept if nested is None else kept[suppress_nested(kept, nested)]), n_decoys

    def select(craters_scores, v, fdr=None, nested=None):
        return select_counted(craters_scores, v, fdr, nested)[0]

    def own_f1(found, scales, nested=None):
        """``--per-tile-f1``: this tile's catalogue at its own segmenter and verifier thresholds, and those two."""
        counted = own_f1_grid(found, scales, nested, competition=competition)
        choice = own_f1_choice(counted)
        return counted[choice][0], choice

    def select_tile(found, scales, th, v, fdr=None, nested=None):
        """:func:`select` at segmenter threshold ``th``; ``th`` None (``--per-tile-threshold``, with a decoy share
        only): each tile's own, the one of :data:`SEG_THRESHOLDS` whose catalogue holds the most craters beyond its
        passing decoys (the target-decoy estimate of the true craters found; ties: nearest 0.3). ``v`` None
        (``--per-tile-f1``): each tile's own segmenter and verifier thresholds (:func:`own_f1`)."""
        if v is None:
            return own_f1(found, scales, nested)[0]
        if th is not None:
            return select(found[(scales, th)], v, fdr, nested)
        counted = {t: select_counted(found[(scales, t)], v, fdr, nested) for t in SEG_THRESHOLDS}
        return counted[own_threshold(counted)][0]

    def name(scales):
        return ",".join(f"{s:g}" for s in scales)

    val_f1, worst_f1 = {}, {}  # pooled F1 of the inner tiles, and the F1 of the worse of them
    seg_thresholds = (*SEG_THRESHOLDS, None) if args.per_tile_threshold else SEG_THRESHOLDS
    for scales in scale_variants:
        for th in seg_thresholds:
            for v in VERIFIER_THRESHOLDS:
                for fdr in decoy_fdrs:
                    if th is None and fdr is None:
                        continue  # a tile's own threshold needs its decoys
                    for nested in nested_ratios:
                        res = [score(select_tile(found, scales, th, v, fdr, nested), truth, t)
                               for t, (truth, found, _) in val.items()]
                        val_f1[(scales, th, v, fdr, nested)] = float(np.nan_to_num(pool_results(res).f1))
                        worst_f1[(scales, th, v, fdr, nested)] = min(float(np.nan_to_num(r.f1)) for r in res)
    if args.per_tile_f1 and any(f is not None for f in decoy_fdrs):  # needs the decoys: each tile's own (th, v)
        for scales in scale_variants:
            for nested in nested_ratios:
                res = [score(select_tile(found, scales, None, None, None, nested), truth, t)
                       for t, (truth, found, _) in val.items()]
                val_f1[(scales, None, None, None, nested)] = float(np.nan_to_num(pool_results(res).f1))
                worst_f1[(scales, None, None, None, nested)] = min(float(np.nan_to_num(r.f1)) for r in res)
    # ties: the fewest scales (cheapest), no decoy pass, one decoy threshold per tile (not local), no nested
    # suppression, one segmenter threshold for every tile, then a threshold near 0.3, then the stricter verifier
    # --select worst: the worse inner tile first (the second target is the worst tile), pooled F1 second
    criterion = (lambda key: (val_f1[key],)) if args.select == "pooled" else (lambda key: (worst_f1[key], val_f1[key]))
    scales, th, v, fdr, nested = max(val_f1, key=lambda key: (*criterion(key), -len(key[0]), key[3] is None,
                                                              not isinstance(key[3], tuple),
                                                              key[4] is None, key[1] is not None,
                                                              key[2] is not None,
                                                              -abs((0.3 if key[1] is None else key[1]) - 0.3),
                                                              -1.0 if key[2] is None else key[2]))
    plain_nested = None if None in nested_ratios else nested_ratios[0]  # "segmenter alone": no suppression if it can
    plain_th = max(SEG_THRESHOLDS, key=lambda x: (val_f1[((1.0,), x, 0.0, None, plain_nested)], -abs(x - 0.3)))
    log.info("fold %s: scales %s, segmenter threshold %s, verifier threshold %s, decoy FDR %s, nested %s "
             "(inner-validation F1 %.3f; without the verifier at scale 1 %.3f at %.2f)", "".join(test), name(scales),
             threshold_name(th), threshold_name(v), fdr, nested, val_f1[(scales, th, v, fdr, nested)],
             val_f1[((1.0,), plain_th, 0.0, None, plain_nested)], plain_th)
    if fdr is not None:
        best_off = max((k for k in val_f1 if k[3] is None), key=lambda key: val_f1[key])
        log.info("fold %s: best without decoys: %s (inner-validation F1 %.3f)", "".join(test), best_off, val_f1[best_off])
    if nested is not None:
        best_off = max((k for k in val_f1 if k[4] is None), key=lambda key: val_f1[key])
        log.info("fold %s: best without nested suppression: %s (inner-validation F1 %.3f)", "".join(test), best_off,
                 val_f1[best_off])
    per_tile, plain_tiles = {}, {}
    for t, (truth, found, record) in saved["tested"].items():
        per_tile[t] = prf(score(select_tile(found, scales, th, v, fdr, nested), truth, t))
        if v is None:  # --per-tile-f1: the tile's own thresholds
            own = own_f1(found, scales, nested)[1]
            per_tile[t]["own_thresholds"] = {"segmenter": own[0], "verifier": own[1]}
        plain_tiles[t] = prf(score(select(found[((1.0,), plain_th)], 0.0, None, plain_nested), truth, t))
        if fdr is not None and th is not None:
            per_tile[t]["without_decoys"] = prf(score(select(found[(scales, th)], v, None, nested), truth, t))
        if nested is not None:
            per_tile[t]["without_nested"] = prf(score(select_tile(found, scales, th, v, fdr), truth, t))
        log.info("fold %s: %s verified %s; segmenter alone %s", "".join(test), t, per_tile[t], plain_tiles[t])
    result = {"test": test, "train": meta["train"], "val": meta["val"], "scales": list(scales), "threshold": th,
              "verifier_threshold": v, "decoy_fdr": fdr_share(fdr), "decoy_fdr_variants": decoy_fdrs,
              "local_decoy_sigma": fdr[1] if isinstance(fdr, tuple) else None,
              "nested_ratio": nested, "nested_variants": nested_ratios,
              "opposite_negatives": meta["opposite_negatives"], "infer_precision": meta["infer_precision"],
              "ensemble_with": meta["ensemble_with"],
              "scale_variants": [name(sv) for sv in scale_variants],
              "plain_threshold": plain_th, "select": args.select,
              "inner_val_worst_f1": round(worst_f1[(scales, th, v, fdr, nested)], 4),
              "per_tile_threshold": bool(args.per_tile_threshold), "per_tile_f1": bool(args.per_tile_f1),
              "inner_val_f1": {f"{name(a)}/{threshold_name(b)}/{threshold_name(c)}" + ("" if d is None else f"/fdr{fdr_name(d)}")
                               + ("" if e is None else f"/nested{e:g}"): round(x, 4)
                               for (a, b, c, d, e), x in val_f1.items()},
              "tiles": per_tile, "plain_tiles": plain_tiles, "verifier": meta["verifier"]}
    if meta["negative_scales"]:
        result["negative_scales"] = meta["negative_scales"]
    (outdir / verified_name(args)).write_text(json.dumps(result, indent=2, default=float))
    return result


def own_threshold(counted: dict) -> float:
    """``--per-tile-threshold``'s choice for one tile: of ``{segmenter threshold: (catalogue kept, decoys passing)}``,
    the threshold whose catalogue holds the most craters beyond its passing decoys (the target-decoy estimate of
    the true craters found; labels unused; ties: nearest 0.3)."""
    return max(counted, key=lambda t: (len(counted[t][0]) - counted[t][1], -abs(t - 0.3)))


def own_f1_grid(found: dict, scales: tuple, nested: float | None = None, competition=None) -> dict:
    """What ``--per-tile-f1`` chooses among for one tile: ``{(segmenter threshold, verifier threshold): (catalogue
    kept, decoys passing)}`` over :data:`SEG_THRESHOLDS` x :data:`VERIFIER_THRESHOLDS`, after the target-decoy
    competition (labels unused). ``found[(scales, th)]`` holds ``(craters, verifier scores, (decoys, decoy
    scores))``; ``competition`` maps one such triple to ``(craters won, decoys won)`` (default:
    :func:`planetcd.craters.verify.decoy_competition`; the folds pass their cached one)."""
    from planetcd.craters.match import suppress_nested
    from planetcd.craters.verify import decoy_competition

    if competition is None:
        def competition(craters_scores):
            c, p, (decoys, decoy_scores) = craters_scores
            return decoy_competition(c, p, decoys, decoy_scores)
    counted = {}
    for t in SEG_THRESHOLDS:
        c, p, (_, decoy_scores) = found[(scales, t)]
        if not len(c):  # nothing kept, so no craters beyond the decoys: the estimate is 0 whatever passes
            counted.update({(t, v): (c, 0) for v in VERIFIER_THRESHOLDS})
            continue
        won, decoy_won = competition(found[(scales, t)])
        winner_scores = np.asarray(decoy_scores)[decoy_won]
        for v in VERIFIER_THRESHOLDS:
            kept = c[won & (p >= v)]
            kept = kept if nested is None or not len(kept) else kept[suppress_nested(kept, nested)]
            counted[(t, v)] = (kept, int(np.count_nonzero(winner_scores >= v)))
    return counted


def own_f1_choice(counted: dict) -> tuple[float, float]:
    """``--per-tile-f1``'s choice for one tile: of ``{(segmenter threshold, verifier threshold): (catalogue kept,
    decoys passing)}`` (after the target-decoy competition), the pair with the highest label-free F1 estimate
    ``2 T / (kept + N)``: ``T = max(kept - passing, 0)`` estimates the true craters found (the target-decoy
    estimate) and ``N``, the largest ``T`` of the tile's grid, the true craters there are (an underestimate: those
    no pair finds are not counted). Ties: segmenter threshold nearest 0.3, then the stricter verifier."""
    found = {key: max(len(kept) - passing, 0) for key, (kept, passing) in counted.items()}
    total = max(found.values())
    if total == 0:  # nothing beyond the decoys anywhere: the strictest pair keeps least
        return max(counted, key=lambda key: (-abs(key[0] - 0.3), key[1]))
    return max(counted, key=lambda key: (2.0 * found[key] / (len(counted[key][0]) + total), -abs(key[0] - 0.3), key[1]))


def fdr_share(fdr) -> float | None:
    """The decoy share of a fold's decoy choice (None, a share, or ``(share, sigma)`` with ``--local-decoys``)."""
    return fdr[0] if isinstance(fdr, tuple) else fdr


def fdr_name(fdr) -> str:
    return f"{fdr[0]:g}local{fdr[1]:g}" if isinstance(fdr, tuple) else f"{fdr:g}"


def threshold_name(th: float | None) -> str:
    """A segmenter or verifier threshold as the tables print it (None: each tile's own, ``--per-tile-threshold``
    or ``--per-tile-f1``)."""
    return "per tile" if th is None else f"{th:.2f}"


def inner_f1(result: dict) -> float:
    """The inner-validation F1 a fold's run chose by: the best of its saved grid (``inner_val_f1``), or with
    ``--select worst`` the worse inner tile's (``inner_val_worst_f1``)."""
    if result.get("select") == "worst" and result.get("inner_val_worst_f1") is not None:
        return float(result["inner_val_worst_f1"])
    # a refitted fold (--refit) trained on its inner tiles and chose nothing on them: never chosen among runs
    return max((float(v) for v in (result.get("inner_val_f1") or {}).values()), default=float("-inf"))


def print_table(results: list[dict]) -> None:
    print("fold  tile  threshold  tp  fp  fn  precision  recall  F1")
    tp = fp = fn = 0
    worst = None
    for res in results:
        if res.get("inner_val_f1"):
            print(f"fold {''.join(res['test'])}: inner-validation F1 {inner_f1(res):.4f} (what the fold chose by)")
        for t, c in res["tiles"].items():
            th = threshold_name(res["threshold"]) + (f"/{threshold_name(res['verifier_threshold'])}" if "verifier_threshold" in res else "") + (
                f" scales {','.join(f'{x:g}' for x in res['scales'])}" if len(res.get("scales", [1])) > 1 else "") + (
                f" decoy FDR {res['decoy_fdr']:g}" if res.get("decoy_fdr") is not None else "") + (
                f" local {res['local_decoy_sigma']:g} px" if res.get("local_decoy_sigma") else "")
            print(f"{''.join(res['test'])}  {t:4s}  {th}  {c['tp']}  {c['fp']}  {c['fn']}  "
                  f"{c['precision']:.3f}  {c['recall']:.3f}  {c['f1']:.3f}")
            if t == "HRSC":
                continue
            tp, fp, fn = tp + c["tp"], fp + c["fp"], fn + c["fn"]
            if worst is None or c["f1"] < worst[1]:
                worst = (t, c["f1"])
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    print(f"pooled (held-out CTX tiles): tp {tp} fp {fp} fn {fn}  P {p:.3f}  R {r:.3f}  F1 {f1:.3f}")
    if worst:
        print(f"worst tile: {worst[0]} F1 {worst[1]:.3f}")


# --------------------------------------------------------------------------- mound test


def tile_verifier_threshold(tile: str, model_name: str = "ctx-craters") -> float:
    """The verifier threshold ``planetcd segment`` (defaults: decoys on) applies on the whole tile: the
    registry's, raised by the tile's decoys (run.json's ``verifier.decoys.threshold``; with local decoys, the
    median of the craters' own thresholds: a chip is too small to set one)."""
    from planetcd.craters.segment import segment

    record = segment(tile_paths(tile)[0], model_name).params["verifier"] or {}
    decoys = record.get("decoys") or {}
    raised = decoys.get("threshold")
    if isinstance(raised, dict):  # --decoy-sigma: each crater's own threshold
        raised = raised.get("median")
    return float(raised if raised is not None else (math.inf if decoys.get("found") else record["threshold"]))


def segment_on_chip(chip_image: np.ndarray, model_name: str, threshold: float, verifier=None) -> np.ndarray:
    """Craters ``(n, 4)`` that ``planetcd segment`` (the registry's scales and flip averaging) finds on a chip already
    turned to the canonical frame, before its verifier's threshold: with ``verifier``, the 5th column holds
    their verifier scores, and the craters that lose to a decoy are dropped (the chip segmented again under the
    opposite sun, :func:`planetcd.craters.verify.decoy_competition`, as ``segment``'s decoy pass does); the
    threshold is left to the caller (the tile's: a chip is too small for the decoys to set one)."""
    from planetcd.craters import sun
    from planetcd.craters.segment import segment
    from planetcd.craters.verify import decoy_competition, image_pyramid, verify_craters

    chip_image = np.ascontiguousarray(chip_image, np.float32)

    def found(azimuth):
        return segment(chip_image, model_name, prob_threshold=threshold, verify=False, sun_azimuth=azimuth).catalog.pixels

    craters = found(sun.CANONICAL_AZIMUTH_DEG)
    if verifier is None:
        return craters
    opposite = (sun.CANONICAL_AZIMUTH_DEG + 180.0) % 360.0
    decoys = found(opposite)
    pyramid = image_pyramid(chip_image)
    scores = verify_craters(verifier, pyramid, craters)
    decoy_scores = verify_craters(verifier, pyramid, decoys, sun.canonical_frame(chip_image.shape, opposite))
    won, _ = decoy_competition(craters, scores, decoys, decoy_scores)
    return np.column_stack([craters, scores])[won]


def mound_chips(tile: str, azimuth: float | None, *, normalized: bool = True, chip: int = 128):
    """The mound test's chips of one tile: yields ``(kind, chip (side, side) float32, crater (1, 3))``.

    For every labelled crater of diameter >= 8 px whose chip lies on ground: a ``chip`` px window (more for big
    craters: 8 radii at least, in steps of 128) around it, cut from the tile turned to the canonical frame of
    ``azimuth`` (None: the canonical side itself, no turn), kind ``"upright"``, then the same window turned 180°,
    kind ``"turned"``, with the crater's ``x, y, r`` on the chip. ``normalized``: the window of the tile
    normalized with whole-tile limits (what the network alone sees); else raw intensities (for ``segment``).
    """
    from planetcd.craters import sun
    from planetcd.craters.train import prepare_image

    image, truth = raw_tile(tile)
    turned, frame = sun.to_canonical(image, sun.CANONICAL_AZIMUTH_DEG if azimuth is None else azimuth)
    turned = np.asarray(turned, np.float32)
    valid = frame.footprint() & (turned != 0)
    source = prepare_image(turned, valid) if normalized else turned
    craters = frame.craters_to_canonical(truth[truth[:, 2] * 2 >= MIN_DIAMETER_PX])
    h, w = source.shape
    for x, y, r in craters[:, :3]:
        side = int(max(chip, 128 * math.ceil(8 * r / 128)))
        half = side // 2
        cx, cy = int(round(x)), int(round(y))
        if cy - half < 0 or cx - half < 0 or cy - half + side > h or cx - half + side > w:
            continue
        if not valid[cy - half : cy - half + side, cx - half : cx - half + side].all():
            continue
        window = source[cy - half : cy - half + side, cx - half : cx - half + side]
        local = np.array([[x - (cx - half), y - (cy - half), r]])
        yield "upright", np.ascontiguousarray(window), local
        yield "turned", np.ascontiguousarray(window[::-1, ::-1]), np.array([[side - 1 - local[0, 0], side - 1 - local[0, 1], r]])


def mound_test(model, tiles, threshold: float, chip: int = 128, device: str = "cpu", verifier=None,
               verify_threshold: float | dict = 0.5, pipeline: str = "network", model_name: str = "ctx-craters") -> dict:
    """Share of labelled craters (>= 8 px) found on chips around them, and on the same chips turned 180°.

    ``verifier``: a chip verifier (:mod:`planetcd.craters.verify`) that the detections must also pass
    (score >= ``verify_threshold``, a number or ``{tile: number}``), as in ``planetcd segment``.
    ``pipeline``: ``"network"``, the network alone on the chip (one scale, no flip averaging, chips
    normalized with whole-tile limits); ``"segment"``, ``planetcd segment`` as shipped on the chip
    (``model_name``'s scales and flip averaging, the chip's own normalization, the sun given as the
    canonical side), then the verifier, with the decoy competition on the chip (:func:`segment_on_chip`)
    and the given threshold.
    """
    from planetcd.craters.verify import image_pyramid, verify_craters
    from planetcd.craters.extract import extract_craters
    from planetcd.craters.match import match_craters

    target = model.metadata.get("target", "filled")
    out = {}
    for t in tiles:
        record = tile_azimuth(raw_tile(t)[0]) if is_sun_aware(model) else {"azimuth_deg": None}
        found = {"upright": 0, "turned": 0}
        n = 0
        cut = verify_threshold.get(t, 0.0) if isinstance(verify_threshold, dict) else verify_threshold
        for name, img, crater in mound_chips(t, record["azimuth_deg"], normalized=pipeline == "network", chip=chip):
            n += name == "upright"
            if pipeline == "segment":
                det = segment_on_chip(img, model_name, threshold, verifier)
                if verifier is not None:
                    det = det[det[:, 4] >= cut]
            else:
                with torch.no_grad():
                    prob = model(torch.from_numpy(img)[None, None].to(device))[0, 0].float().cpu().numpy()
                det = extract_craters(prob, method="components", threshold=threshold, target=target, min_radius=2.0,
                                      max_radius=150.0)
            if verifier is not None and len(det) and pipeline == "network":
                det = det[verify_craters(verifier, image_pyramid(img), det) >= cut]
            hit = match_craters(det[:, :3], crater, mode="deepmoon", min_diameter_px=0).tp > 0 if len(det) else False
            found[name] += int(hit)
        out[t] = {"craters": n, "found": round(found["upright"] / max(n, 1), 4), "found_turned": round(found["turned"] / max(n, 1), 4),
                  "azimuth": record, "verify_threshold": cut if verifier is not None else None}
    n_all = sum(v["craters"] for v in out.values())
    out["pooled"] = {"craters": n_all,
                     "found": round(sum(v["found"] * v["craters"] for v in out.values()) / max(n_all, 1), 4),
                     "found_turned": round(sum(v["found_turned"] * v["craters"] for v in out.values()) / max(n_all, 1), 4)}
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/crater-folds", help="folder of the fold models and results")
    ap.add_argument("--recipe", choices=("sun-aware", "old"), default="sun-aware")
    ap.add_argument("--folds", default="ADG,BEH,CFI")
    ap.add_argument("--only", default=None, help="run only these folds (e.g. BEH)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--crops-per-epoch", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--filter-multiple", type=float, default=1.0)
    ap.add_argument("--hard-negative-rate", type=float, default=1.0)
    ap.add_argument("--confidence-weights", choices=("on", "off"), default="off",
                    help="sun-aware recipe: weigh crater pixels by min(1, annotators / 3) (on) or all alike (off: the "
                         "recipe's since 2026-12-04; the fold runs of docs/segment.md before that date had them on)")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds of training per fold")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ema-decay", type=float, default=0.0,
                    help="> 0: each fold's best.pt is a moving average of the weights (decay per step); the trained "
                         "weights' best epoch is best-raw.pt (TrainConfig.ema_decay)")
    ap.add_argument("--hrsc", action="store_true", help="also score the PyCDA HRSC tile (another camera)")
    ap.add_argument("--score-only", action="store_true", help="rescore trained folds (fold-*/best.pt)")
    ap.add_argument("--table", action="store_true",
                    help="print the table of the folds' saved fold-*/result.json, with --verifier (and its options) "
                         "their verified*.json (nothing trained or scored)")
    ap.add_argument("--opposite-negatives", action="store_true",
                    help="--verifier: also train on the segmenter's detections under the opposite sun (mounds as it sees them)")
    ap.add_argument("--refit", default=None, metavar="RUN",
                    help="train each fold on its training AND inner tiles (no validation, no early stop, the last "
                         "epoch kept), scored at the threshold RUN's same fold chose on the inner tiles")
    ap.add_argument("--init", default=None, help="start each fold from INIT/fold-*/best.pt (that fold's earlier model)")
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate (default: the recipe's, 5e-4; also with --init)")
    ap.add_argument("--arch", default="symmetric", choices=("symmetric", "vgg16-unet"),
                    help="segmenter: DeLatte's symmetric U-Net or the U-Net on the ImageNet VGG-16 encoder")
    ap.add_argument("--vgg-frozen-blocks", type=int, default=2, help="--arch vgg16-unet: encoder blocks kept frozen")
    ap.add_argument("--vgg-decoder", type=int, default=32, help="--arch vgg16-unet: the decoder's base width")
    ap.add_argument("--vgg-depth", type=int, default=5, help="--arch vgg16-unet: VGG-16 blocks in the encoder (3..5)")
    ap.add_argument("--verifier", action="store_true",
                    help="trained folds + a chip verifier per fold (thresholds chosen on the inner validation tiles)")
    ap.add_argument("--scale-variants", default="1",
                    help="with --verifier: catalogue scale sets each fold chooses among on its inner tiles, e.g. '1;2,1' "
                         "(scale 2: the tile magnified twice, as planetcd segment --scales 2,1)")
    ap.add_argument("--negative-scales", default=None,
                    help="with --verifier: the verifier's negatives also come from the training tiles magnified by "
                         "these scales, e.g. 2 (the false small craters of the magnified catalogue)")
    ap.add_argument("--infer-precision", default="fp32", choices=("fp32", "bf16"),
                    help="with --verifier: the networks' inference on the tiles (bf16: about half the time of fp32 "
                         "for the VGG-16 U-Net on two threads; the verifier trains in fp32 either way)")
    ap.add_argument("--ensemble-with", default=None,
                    help="the fold's segmenter (its scores, and with --verifier its pipeline) is the mean of the probabilities of its --out model and "
                         "of ENSEMBLE_WITH/fold-*/best.pt (the same fold trained by another run, e.g. the other --arch)")
    ap.add_argument("--nested-ratios", default="none",
                    help="with --verifier: nested-fragment suppressions each fold also chooses among, e.g. 'none,2' "
                         "(2: drop craters wholly inside a kept crater of twice their radius or more; "
                         "planetcd.craters.match.suppress_nested)")
    ap.add_argument("--nested-labels", action="store_true",
                    help="count the labelled craters (>= 8 px) of A-I lying wholly inside a labelled crater of at "
                         "least twice their radius (what --nested-ratios 2 would drop from the truth), and exit")
    ap.add_argument("--choose-among", default=None, metavar="DIR[,DIR...]",
                    help="with --table: other runs of the same folds (e.g. --confidence-weights off); each fold "
                         "takes the run whose inner-validation F1 is highest (--out wins a tie)")
    ap.add_argument("--reselect", action="store_true",
                    help="with --verifier: make the folds' choices again from their saved scored*.pkl (no network)")
    ap.add_argument("--verifier-epochs", type=int, default=12, help="with --verifier: the verifier's training epochs")
    ap.add_argument("--local-decoys", default=None,
                    help="with --verifier and --decoy-fdr: each decoy share also as a LOCAL one, per Gaussian length "
                         "in px (e.g. 150,300): each crater's verifier threshold from the decoys around it")
    ap.add_argument("--per-tile-threshold", action="store_true",
                    help="with --verifier and --decoy-fdr: each fold may also choose a segmenter threshold per tile, "
                         "the one whose catalogue holds the most craters beyond its passing decoys (labels unused)")
    ap.add_argument("--per-tile-f1", action="store_true",
                    help="with --verifier and --decoy-fdr: each fold may also choose, per catalogue scale set, that "
                         "every tile takes its own segmenter AND verifier thresholds: the pair with the highest "
                         "label-free F1 estimate from the craters beyond the passing decoys (own_f1_choice)")
    ap.add_argument("--select", choices=("pooled", "worst"), default="pooled",
                    help="with --verifier: what each fold maximises on its inner-validation tiles: their pooled F1, or "
                         "the F1 of the worse of them (pooled F1 breaking ties); the choices go to verified*-worst.json")
    ap.add_argument("--decoy-fdr", default=None,
                    help="with --verifier: decoy false-discovery limits each fold also chooses among, e.g. 0.1,0.2,0.3 "
                         "(the verifier threshold rises per tile until the craters found under the opposite sun are at "
                         "most that share of the catalogue: planetcd.craters.verify.decoy_threshold); --score-product: "
                         "one share or 'off' (segment's --decoy-fdr)")
    ap.add_argument("--decoy-sigma", default=None,
                    help="--score-product: segment's --decoy-sigma (each crater's decoy threshold from the decoys "
                         "within about this many px; 'off': one per tile)")
    ap.add_argument("--scales", default=None, help="--score-product: catalogue scales (default: the model's)")
    ap.add_argument("--tta", choices=("model", "on", "off"), default="model",
                    help="flip averaging: --score-product's (model: the registry's); the folds' segmenter with 'on' "
                         "(the light-axis mirror for a sun-aware model), else the network alone")
    ap.add_argument("--mound-test", action="store_true")
    ap.add_argument("--score-model", action="store_true",
                    help="score --model on --tiles with the fold pipeline (at --threshold, else each of 0.3-0.8)")
    ap.add_argument("--score-product", action="store_true",
                    help="score `planetcd segment` with its defaults (--model, default ctx-craters; --verify) on --tiles")
    ap.add_argument("--model", default=None, help="mound test: checkpoint path or registry name")
    ap.add_argument("--sun-refine", action="store_true",
                    help="--score-product: segment's --sun-refine (segmented again in the frame the craters read)")
    ap.add_argument("--verify", default="model",
                    help="mound test: the chip verifier: 'model' (the model's registry verifier, if any), 'none', or a path")
    ap.add_argument("--verify-threshold", default=None,
                    help="mound test: verifier threshold: a number, or 'tile': the one planetcd segment uses on each "
                         "whole tile (raised by its decoys); default: the verifier's own")
    ap.add_argument("--pipeline", choices=("network", "segment"), default="network",
                    help="mound test: the network alone on each chip (one scale), or planetcd segment as shipped "
                         "(its scales and flip averaging), then the verifier")
    ap.add_argument("--tiles", default="H,I", help="mound test tiles")
    ap.add_argument("--threshold", type=float, default=None, help="mound test threshold (default: the fold's, else the model's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("planetcd.craters.train",):
        logging.getLogger(name).setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.nested_labels:
        from planetcd.craters.match import suppress_nested

        total = nested = 0
        for tile in "ABCDEFGHI":
            truth = raw_tile(tile)[1]
            counted = 2 * truth[:, 2] >= MIN_DIAMETER_PX
            inside = np.ones(len(truth), bool)
            inside[suppress_nested(truth, 2.0)] = False
            tile_total, tile_nested = int(counted.sum()), int((counted & inside).sum())
            total, nested = total + tile_total, nested + tile_nested
            print(f"{tile}: {tile_nested} of {tile_total} labelled craters inside a larger one")
        print(f"A-I: {nested} of {total}")
        return 0

    if args.mound_test:
        from planetcd import models

        if not args.model:
            raise SystemExit("--mound-test needs --model")
        model = models.load(args.model, device=args.device, tta=False)
        threshold = args.threshold
        sidecar = Path(args.model).with_name("result.json")
        if threshold is None and sidecar.exists():
            threshold = json.loads(sidecar.read_text())["threshold"]
        if threshold is None:
            threshold = float(model.metadata.get("threshold", 0.5))
        verifier = None
        if args.verify != "none":
            verifier = models.load_verifier(model.metadata if args.verify == "model" else args.verify)
        if args.threshold is None and verifier is not None and verifier.metadata.get("prob_threshold") is not None:
            threshold = float(verifier.metadata["prob_threshold"])  # segment's extraction threshold with the verifier
        tiles = [t.strip().upper() for t in args.tiles.split(",")]
        if args.pipeline == "segment" and Path(args.model).suffix:
            raise SystemExit("--pipeline segment needs a registry model name (planetcd segment's defaults)")
        if args.verify_threshold == "tile":
            if verifier is None or args.verify != "model":
                raise SystemExit("--verify-threshold tile needs the model's own verifier (--verify model)")
            v_threshold = {t: tile_verifier_threshold(t, args.model) for t in tiles}
        elif args.verify_threshold is not None:
            v_threshold = float(args.verify_threshold)
        else:
            v_threshold = float(verifier.metadata.get("threshold", 0.5)) if verifier is not None else None
        res = mound_test(model, tiles, threshold, device=args.device, verifier=verifier,
                         verify_threshold=v_threshold or 0.0, pipeline=args.pipeline, model_name=args.model)
        shown = v_threshold if not isinstance(v_threshold, dict) else ", ".join(f"{t} {v:.3g}" for t, v in v_threshold.items())
        print(f"mound test of {args.model} (pipeline {args.pipeline}; extraction threshold {threshold:g}; sun-aware: "
              f"{is_sun_aware(model)}; verifier: {'none' if verifier is None else f'{args.verify}, threshold {shown}'})")
        print("tile  craters  found  found_turned")
        for t, v in res.items():
            print(f"{t}  {v['craters']}  {v['found']:.3f}  {v['found_turned']:.3f}")
        return 0

    if args.score_product:
        from planetcd.craters.match import pool_results
        from planetcd.craters.segment import segment

        verify = {"model": None, "none": False}.get(args.verify, args.verify)
        from planetcd.cli.segment import parse_decoy_fdr, parse_decoy_sigma

        decoy = parse_decoy_fdr(args.decoy_fdr)  # as planetcd segment --decoy-fdr reads it
        sigma = parse_decoy_sigma(args.decoy_sigma)
        print(f"planetcd segment defaults, model {args.model or 'ctx-craters'}, verifier {args.verify}, "
              f"scales {args.scales or 'its own'}, flip averaging {args.tta}, decoy FDR {args.decoy_fdr or 'its own'}, "
              f"decoy sigma {args.decoy_sigma or 'its own'}" + (", --sun-refine" if args.sun_refine else ""))
        print("tile  tp  fp  fn  precision  recall  F1  verifier kept/checked  sun")
        results = []
        for t in [t.strip().upper() for t in args.tiles.split(",")]:
            image_path, _ = tile_paths(t)
            _, truth = raw_tile(t)
            res = segment(image_path, args.model or "ctx-craters", verify=verify, precision=args.precision,
                          scales=args.scales, tta={"model": None, "on": True, "off": False}[args.tta],
                          decoy_fdr=decoy, decoy_sigma=sigma, sun_refine=args.sun_refine)
            found = res.catalog.pixels
            r = score(found, truth, t)
            results.append(r)
            c, v = prf(r), res.params.get("verifier") or {}
            print(f"{t}  {c['tp']}  {c['fp']}  {c['fn']}  {c['precision']:.3f}  {c['recall']:.3f}  {c['f1']:.3f}  "
                  f"{v.get('kept', '-')}/{v.get('checked', '-')}  {res.params['sun'].get('sun_azimuth_deg')} ({res.params['sun'].get('source')})")
        if len(results) > 1:
            pooled = pool_results(results)
            print(f"pooled  {pooled.tp}  {pooled.fp}  {pooled.fn}  {pooled.precision:.3f}  {pooled.recall:.3f}  {np.nan_to_num(pooled.f1):.3f}")
        return 0

    if args.score_model:
        from planetcd import models

        if not args.model:
            raise SystemExit("--score-model needs --model")
        model = models.load(args.model, device=args.device, tta=False)
        thresholds = (args.threshold,) if args.threshold is not None else THRESHOLDS
        print(f"{args.model} (sun-aware: {is_sun_aware(model)}), fold pipeline, no flip averaging")
        print("tile  threshold  tp  fp  fn  precision  recall  F1  azimuth")
        for t in [t.strip().upper() for t in args.tiles.split(",")]:
            image, truth = raw_tile(t)
            found, record = detect(model, image, thresholds, model.metadata.get("target", "filled"), args.device)
            for th in thresholds:
                c = prf(score(found[th], truth, t))
                print(f"{t}  {th:.2f}  {c['tp']}  {c['fp']}  {c['fn']}  {c['precision']:.3f}  {c['recall']:.3f}  "
                      f"{c['f1']:.3f}  {record.get('azimuth_deg')}")
        return 0

    folds = parse_folds(args.folds)
    only = {s.strip().upper() for s in args.only.split(",")} if args.only else None
    results = []
    if args.table:  # the folds' saved results, nothing trained or scored
        name = verified_name(args) if args.verifier else "result.json"  # with --verifier: the run of the same options
        runs = [args.out] + ([d for d in args.choose_among.split(",") if d] if args.choose_among else [])
        for f in folds:
            fold = "".join(f)
            found = [(run, json.loads(path.read_text())) for run in runs
                     if (path := Path(run) / f"fold-{fold}" / name).exists()]
            if (only and fold not in only) or not found:
                continue
            run, chosen = max(found, key=lambda item: inner_f1(item[1]))  # the first run wins a tie
            if len(runs) > 1:
                print(f"fold {fold}: inner-validation F1 " + ", ".join(f"{r} {inner_f1(x):.4f}" for r, x in found)
                      + f"; chosen {run}")
            results.append(chosen)
        if not results:
            raise SystemExit(f"no fold-*/{name} under {', '.join(runs)}")
        print_table(results)
        return 0
    for k, f in enumerate(folds):
        if only and "".join(f) not in only:
            continue
        results.append(verifier_fold(args, folds, k) if args.verifier else run_fold(args, folds, k))
    print_table(results)
    if args.verifier:
        print("the same folds, segmenter alone (its threshold chosen on the inner validation tiles):")
        plain = [{k: v for k, v in r.items() if k not in ("verifier_threshold", "scales", "decoy_fdr", "local_decoy_sigma", "inner_val_f1")} | {"tiles": r["plain_tiles"], "threshold": r["plain_threshold"]}
                 for r in results]
        print_table(plain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
