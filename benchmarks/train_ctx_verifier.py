"""Train the chip verifier of the shipped ``ctx-craters`` and choose its thresholds (issue 13).

    python benchmarks/train_ctx_verifier.py --out runs/ctx-verifier [--install] [--threads 2]
    python benchmarks/train_ctx_verifier.py --model runs/ctx-craters-gpu/best.pt --device cuda   # a candidate

1. The shipped segmenter runs as ``planetcd segment`` does (sun estimated,
   canonical frame, flip averaging, its scales; the verifier off) on the
   training tiles MC11E-A..G at the probability thresholds 0.1, 0.2 and 0.3.
2. A :class:`planetcd.craters.verify.ChipVerifier` is trained on their chips
   (:func:`~planetcd.craters.verify.verifier_training_chips`: labelled craters,
   the same turned 180° as mounds, and the segmenter's unmatched detections of
   all three thresholds, merged).
3. The segmenter threshold and the verifier threshold are chosen together by
   the pooled F1 on the validation tiles H and I (the tiles the segmenter's
   epoch and extraction were chosen on: these numbers are not held out; the
   tile folds of ``crater_folds.py --verifier`` are).

``--opposite-negatives`` also trains on the segmenter's detections with each
training tile turned for the opposite sun (every crater then looks like a
mound; the detections that match a labelled crater are mounds as the
segmenter mistakes them).

``--install`` copies the verifier to ``planetcd/models/ctx-craters-verifier.pt``
and writes its registry entry (file, sha256, provenance, ``threshold`` = the
verifier's, ``prob_threshold`` = the segmenter threshold of the extraction when
the verifier runs) into ``planetcd/models/ctx-craters.json``; the model's own
``threshold`` (the mask, and the extraction without the verifier, e.g. in
``planetcd monitor``) is left as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crater_folds as cf  # noqa: E402  (tile paths, scoring)

TRAIN_TILES = tuple("ABCDEFG")
VAL_TILES = ("H", "I")
SEG_THRESHOLDS = (0.1, 0.2, 0.3)
VERIFIER_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

log = logging.getLogger("train_ctx_verifier")


def segment_tile(tile: str, threshold: float, sun_azimuth: float | None = None, scales=None, tta: bool | None = None,
                 sun_refine: bool = False, model: str = "ctx-craters", device: str = "auto"):
    """``(craters (n, 4), sun azimuth used or None)`` of the shipped pipeline on one tile, verifier off
    (sun estimated, or ``sun_azimuth``; ``scales``/``tta`` None: the model's; ``sun_refine``: segment's;
    ``model``: a registry name or a segmenter checkpoint, as ``planetcd segment --model``)."""
    from planetcd.craters.segment import segment

    image_path, _ = cf.tile_paths(tile)
    result = segment(image_path, model, prob_threshold=threshold, verify=False, sun_azimuth=sun_azimuth,
                     scales=scales, tta=tta, sun_refine=sun_refine, device=device)
    sun = result.params["sun"]
    rotate = sun["sun_azimuth_deg"] if sun.get("canonical_frame") else None
    return result.catalog.pixels, rotate


def install(path: Path, summary: dict) -> None:
    """Copy a trained verifier into planetcd/models and write its registry entry into ctx-craters.json."""
    from planetcd import models
    from planetcd.craters.verify import load_verifier

    registry = models.MODEL_DIR / "ctx-craters.json"
    meta = json.loads(registry.read_text())
    chosen, plain = summary["chosen"], summary["segmenter_alone"]
    if summary.get("reused") and "verifier" in meta:  # same verifier, new thresholds: keep its training provenance
        meta["verifier"].update({
            "threshold": chosen["verifier_threshold"], "prob_threshold": chosen["prob_threshold"],
            "decoy_fdr": chosen.get("decoy_fdr"), "decoy_sigma": chosen.get("decoy_sigma"),
            "f1_HI": chosen["f1_HI"], "segmenter_alone_f1_HI": plain["f1_HI"]})
        _record_selection(meta, summary)
        _write_registry(registry, meta)
        log.info("new thresholds for the installed verifier (extraction %.2f, verifier %.2f)",
                 chosen["prob_threshold"], chosen["verifier_threshold"])
        return
    verifier = load_verifier(path)
    target = models.MODEL_DIR / "ctx-craters-verifier.pt"
    shutil.copyfile(path, target)
    meta["verifier"] = {
        "file": target.name, "sha256": models.sha256(target), "name": "ctx-craters-verifier",
        "threshold": chosen["verifier_threshold"], "prob_threshold": chosen["prob_threshold"],
        "decoy_fdr": chosen.get("decoy_fdr"), "decoy_sigma": chosen.get("decoy_sigma"), "epochs": summary.get("epochs"),
        "chip_size": verifier.metadata["chip_size"], "context": verifier.metadata["context"],
        "description": "sun-aware chip verifier (planetcd.craters.verify): a 24x24 chip spanning +-2 radii around each "
                       "crater, in the canonical frame, scored by a 3-layer CNN; trained on the craters of MC11E-A..G, "
                       "the same chips turned 180 deg (mounds) and the segmenter's unmatched detections there"
                       + (", and its detections of those craters with the tiles turned for the opposite sun"
                          if summary.get("opposite_negatives") else ""),
        "training_command": "python benchmarks/train_ctx_verifier.py --out runs/ctx-verifier"
                            + (" --opposite-negatives" if summary.get("opposite_negatives") else "")
                            + f" --epochs {summary.get('epochs', 12)}" + _selection_options(summary) + " --install",
        "opposite_negatives": bool(summary.get("opposite_negatives")),
        "selected_on": list(VAL_TILES), "f1_HI": chosen["f1_HI"], "segmenter_alone_f1_HI": plain["f1_HI"],
        "train_seconds": summary["train_seconds"], "chips": summary["chips"],
    }
    _record_selection(meta, summary)
    _write_registry(registry, meta)
    log.info("installed %s and its registry entry (extraction threshold %.2f, verifier %.2f)", target,
             chosen["prob_threshold"], chosen["verifier_threshold"])


def _record_selection(meta: dict, summary: dict) -> None:
    """The catalogue scales and flip averaging the thresholds were chosen with become the model's."""
    selected = {}
    if summary.get("scales"):
        meta["extraction"]["scales"] = summary["scales"]
        selected["scales"] = summary["scales"]
    if summary.get("tta") is not None:
        meta["tta"] = bool(summary["tta"])
        selected["tta"] = bool(summary["tta"])
    if selected:
        meta["verifier"]["selected_with"] = selected
    if summary.get("reused"):
        meta["verifier"]["thresholds_command"] = (
            "python benchmarks/train_ctx_verifier.py --out OUT --reuse planetcd/models/ctx-craters-verifier.pt"
            + _selection_options(summary) + " --install")


def _selection_options(summary: dict) -> str:
    """The command-line options of the selection a summary records (scales, flip averaging, decoy limits)."""
    fdrs = [f for f in summary.get("decoy_fdr_variants") or [] if f is not None]
    sigmas = summary.get("decoy_sigma_variants") or []
    return ((f" --scales {','.join(f'{x:g}' for x in summary['scales'])}" if summary.get("scales") else "")
            + ("" if summary.get("tta") is None else f" --tta {'on' if summary['tta'] else 'off'}")
            + (f" --decoy-fdr {','.join(f'{x:g}' for x in fdrs)}" if fdrs else "")
            + (f" --local-decoys {','.join(f'{x:g}' for x in sigmas)}" if sigmas else ""))


def decoy_name(fdr: float | None, sigma: float | None) -> str:
    """A decoy variant as the tables print it: ``-`` (none), the share, and the local length if any."""
    return "-" if fdr is None else f"{fdr:g}" + ("" if sigma is None else f" local {sigma:g} px")


def per_tile_rows(val: dict, kept_counted, decoy_variants, chosen_f1: float) -> dict:
    """The grid with each tile's own segmenter threshold (``--per-tile-threshold``; for reading): per verifier
    threshold and decoy variant, each tile takes the threshold of :data:`SEG_THRESHOLDS` whose catalogue holds
    the most craters beyond its passing decoys (:func:`crater_folds.own_threshold`). Prints the best rows."""
    from planetcd.craters.match import pool_results

    rows = {}
    for v in VERIFIER_THRESHOLDS:
        for fdr, sigma in decoy_variants:
            if fdr is None:
                continue
            picked, results = {}, []
            for t, (_, truth, _, _) in val.items():
                counted = {th: kept_counted(t, th, v, fdr, sigma) for th in SEG_THRESHOLDS}
                th_t = cf.own_threshold(counted)
                picked[t] = th_t
                results.append(cf.score(counted[th_t][0], truth, t))
            pooled = pool_results(results)
            rows[f"{v:g}/{decoy_name(fdr, sigma)}"] = {
                "f1": round(float(np.nan_to_num(pooled.f1)), 4), "thresholds": picked,
                "tiles": {t: cf.prf(r) for t, r in zip(val, results)}}
    ranked = sorted(rows.items(), key=lambda kv: -kv[1]["f1"])
    print("per-tile segmenter threshold (for reading: the product has one): verifier / decoys, pooled F1 (H+I), "
          "each tile's threshold, H tp/fp/fn, I tp/fp/fn")
    for name, row in ranked[:8]:
        cells = "  ".join(f"{c['tp']}/{c['fp']}/{c['fn']}" for c in row["tiles"].values())
        print(f"{name}  {row['f1']:.4f}  {row['thresholds']}  {cells}")
    print(f"best per-tile row {ranked[0][0]}: F1 {ranked[0][1]['f1']:.4f} against {chosen_f1:.4f} chosen with one "
          "threshold (H+I; not held out)" if ranked else "no decoy variant: no per-tile rows")
    return rows


def _write_registry(registry: Path, meta: dict) -> None:
    tmp = registry.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, registry)


def main(argv=None) -> int:
    from planetcd.craters.match import pool_results
    from planetcd.craters.sun import canonical_frame
    from planetcd.craters.verify import (decoy_competition, decoy_cut, image_pyramid, save_verifier, train_verifier,
                                         verifier_contexts, verifier_training_chips, verify_craters)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ctx-verifier")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=12, help="verifier training epochs")
    ap.add_argument("--decoy-fdr", default=None,
                    help="also choose among these decoy false-discovery limits, e.g. 0.1,0.2,0.3,0.5 (segment's decoy pass)")
    ap.add_argument("--local-decoys", default=None, metavar="SIGMAS",
                    help="also choose each decoy limit applied locally (segment's --decoy-sigma), at these lengths in "
                         "px, e.g. 150,300")
    ap.add_argument("--per-tile-threshold", action="store_true",
                    help="also print, for reading (the product has one extraction threshold), the grid with each "
                         "tile's own segmenter threshold: the one whose catalogue holds the most craters beyond its "
                         "passing decoys (as crater_folds.py --per-tile-threshold)")
    ap.add_argument("--opposite-negatives", action="store_true",
                    help="also train on the segmenter's detections under the opposite sun (mounds as it sees them)")
    ap.add_argument("--install", action="store_true", help="write the verifier into planetcd/models and the registry")
    ap.add_argument("--reuse", default=None, metavar="VERIFIER.pt",
                    help="do not train: choose the thresholds for this verifier (e.g. the installed one) on H and I")
    ap.add_argument("--scales", default=None, help="catalogue scales of the segmenter (default: the model's), e.g. 2,1,0.5")
    ap.add_argument("--decoy-scales", default=None,
                    help="catalogue scales of the decoy pass (default: the catalogue's, --scales), e.g. 1")
    ap.add_argument("--tta", choices=("model", "on", "off"), default="model", help="flip averaging of the segmenter")
    ap.add_argument("--contexts", default=None,
                    help="chip contexts in crater radii, one input channel each, e.g. 2,4 (default: one chip at 2)")
    ap.add_argument("--sun-refine", action="store_true",
                    help="segment's --sun-refine: each tile segmented again in the frame its craters read the sun in "
                         "(the training chips and the thresholds in those frames)")
    ap.add_argument("--model", default="ctx-craters",
                    help="the segmenter: a registry name or a checkpoint (e.g. a candidate from train_ctx_craters.py); "
                         "--install needs the shipped ctx-craters")
    ap.add_argument("--device", default="auto", help="where the segmenter runs (auto, cpu, cuda)")
    ap.add_argument("--install-only", action="store_true",
                    help="install the verifier an earlier run wrote in --out (its summary.json), without training")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if (args.install or args.install_only) and args.model != "ctx-craters":
        ap.error(f"--install writes the verifier of ctx-craters; this one was chosen on {args.model}'s catalogues")
    if args.install_only:
        out = Path(args.out)
        summary = json.loads((out / "summary.json").read_text())
        if summary.get("segmenter", "ctx-craters") != "ctx-craters":
            ap.error(f"{out}: that verifier was chosen on {summary['segmenter']}'s catalogues, not ctx-craters'")
        install(out / "ctx-craters-verifier.pt", summary)
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from planetcd.craters.segment import parse_scales
    from planetcd.craters.verify import load_verifier

    scales = parse_scales(args.scales)
    decoy_scales = parse_scales(args.decoy_scales)
    contexts = tuple(float(c) for c in args.contexts.split(",")) if args.contexts else None
    tta = {"model": None, "on": True, "off": False}[args.tta]
    segmenter = {"model": args.model, "device": args.device}

    def run(tiles, opposite=False, decoys=False):
        found = {}
        for t in tiles:
            image, truth = cf.raw_tile(t)
            per = {}
            rotate = None
            for th in SEG_THRESHOLDS:
                # with --sun-refine, the frame the first (lowest, the verifier's extraction) threshold's craters
                # read is every threshold's
                given = rotate if args.sun_refine and th != SEG_THRESHOLDS[0] else None
                craters, rotate = segment_tile(t, th, given, scales=scales, tta=tta,
                                               sun_refine=args.sun_refine and given is None,
                                               **segmenter)
                per[th] = craters
            frame = canonical_frame(image.shape, rotate) if rotate is not None else None
            if decoys:  # the same pipeline under the opposite sun (segment's decoy pass), per threshold
                back = (rotate + 180.0) % 360.0
                per["decoys"] = {th: segment_tile(t, th, back, decoy_scales or scales, tta, **segmenter)[0]
                                for th in SEG_THRESHOLDS}
                per["decoy_frame"] = canonical_frame(image.shape, back)
            if opposite:  # the same tile segmented under the opposite sun: its craters look like mounds
                per["opposite"] = cf.merged_detections(
                    {th: segment_tile(t, th, (rotate + 180.0) % 360.0, scales, tta, **segmenter)[0]
                     for th in SEG_THRESHOLDS},
                    SEG_THRESHOLDS)
                per["opposite_frame"] = canonical_frame(image.shape, (rotate + 180.0) % 360.0)
            found[t] = (image, truth, frame, per)
            log.info("%s: %s craters at %s", t, [len(per[th]) for th in SEG_THRESHOLDS], SEG_THRESHOLDS)
        return found

    t0 = time.monotonic()
    if args.reuse:  # thresholds only: the verifier as it is (trained on the detections of its own run)
        verifier = load_verifier(args.reuse)
        previous = json.loads((Path(args.reuse).parent / "summary.json").read_text()) \
            if (Path(args.reuse).parent / "summary.json").exists() else {}
        n_chips, n_craters, train_seconds = previous.get("chips"), previous.get("craters"), previous.get("train_seconds")
        args.opposite_negatives = bool(previous.get("opposite_negatives", args.opposite_negatives))
    else:
        rng = np.random.default_rng(args.seed)
        chips, labels = [], []
        for t, (image, truth, frame, per) in run(TRAIN_TILES, args.opposite_negatives).items():
            merged = cf.merged_detections(per, SEG_THRESHOLDS)
            c, lab = verifier_training_chips(image_pyramid(image), truth, merged, frame, rng=rng,
                                             opposite_detections=per.get("opposite"), opposite_frame=per.get("opposite_frame"),
                                             contexts=contexts)
            chips.append(c)
            labels.append(lab)
        chips, labels = np.concatenate(chips), np.concatenate(labels)
        t1 = time.monotonic()
        verifier = train_verifier(chips, labels, epochs=args.epochs, seed=args.seed, threads=args.threads,
                                  contexts=contexts)
        train_seconds = round(time.monotonic() - t1, 1)
        n_chips, n_craters = int(len(labels)), int(labels.sum())
        log.info("verifier: %d chips (%d craters), trained in %.0f s", n_chips, n_craters, train_seconds)

    fdrs = [None] + ([float(x) for x in args.decoy_fdr.split(",")] if args.decoy_fdr else [])
    val = run(VAL_TILES, decoys=fdrs != [None])
    pyramids = {t: image_pyramid(image) for t, (image, _, _, _) in val.items()}  # one per tile, for every threshold
    scores = {t: {th: verify_craters(verifier, pyramids[t], per[th], frame) for th in SEG_THRESHOLDS}
              for t, (image, truth, frame, per) in val.items()}
    decoy_scores = {t: {th: verify_craters(verifier, pyramids[t], per["decoys"][th], per["decoy_frame"])
                        for th in SEG_THRESHOLDS} if "decoys" in per else {}
                    for t, (image, truth, frame, per) in val.items()}

    sigmas = [float(x) for x in args.local_decoys.split(",")] if args.local_decoys else []
    decoy_variants = [(fdr, None) for fdr in fdrs] + [(fdr, sigma) for fdr in fdrs if fdr is not None for sigma in sigmas]
    competition = {t: {th: decoy_competition(per[th], scores[t][th], per["decoys"][th], decoy_scores[t][th])
                        for th in SEG_THRESHOLDS} if "decoys" in per else {} for t, (_, _, _, per) in val.items()}

    def kept_counted(t, th, v, fdr, sigma=None):
        """The catalogue ``planetcd segment`` keeps, and how many decoys pass with it
        (:func:`planetcd.craters.verify.decoy_cut`, the competition made once per catalogue)."""
        craters, p = val[t][3][th], scores[t][th]
        if fdr is None or not len(p):
            return craters[p >= v], 0
        decided = decoy_cut(craters, p, val[t][3]["decoys"][th], decoy_scores[t][th], v, fdr, sigma,
                            competition=competition[t][th])
        return craters[decided.keep], decided.passing

    def kept(t, th, v, fdr, sigma=None):
        return kept_counted(t, th, v, fdr, sigma)[0]

    table = {}
    for th in SEG_THRESHOLDS:
        for v in VERIFIER_THRESHOLDS:
            for fdr in decoy_variants:
                res = [cf.score(kept(t, th, v, *fdr), truth, t) for t, (_, truth, _, per) in val.items()]
                pooled = pool_results(res)
                table[(th, v, fdr)] = {"f1": round(float(np.nan_to_num(pooled.f1)), 4),
                                       "tiles": {t: cf.prf(r) for t, r in zip(val, res)}}
    # ties: no decoy pass (half the time), then one threshold per tile, then the higher thresholds
    best = max(table, key=lambda k: (table[k]["f1"], k[2][0] is None, k[2][1] is None, k[0], k[1]))
    plain = max((k for k in table if k[1] == 0.0 and k[2][0] is None), key=lambda k: table[k]["f1"])

    print("segmenter threshold  verifier threshold  decoy FDR  pooled F1 (H+I)  H tp/fp/fn  I tp/fp/fn")
    for (th, v, fdr), row in table.items():
        cells = "  ".join(f"{c['tp']}/{c['fp']}/{c['fn']}" for c in row["tiles"].values())
        print(f"{th:.2f}  {v:.2f}  {decoy_name(*fdr)}  {row['f1']:.4f}  {cells}"
              f"{'   <- chosen' if (th, v, fdr) == best else ''}")
    print(f"chosen: segmenter {best[0]:.2f}, verifier {best[1]:.2f}, decoy FDR {decoy_name(*best[2])}: F1 "
          f"{table[best]['f1']:.4f} on H+I (segmenter alone, best threshold {plain[0]:.2f}: {table[plain]['f1']:.4f}); "
          "not held out")

    path = save_verifier(verifier, out / "ctx-craters-verifier.pt", name="ctx-craters-verifier")
    summary = {"chosen": {"prob_threshold": best[0], "verifier_threshold": best[1], "decoy_fdr": best[2][0],
                          "decoy_sigma": best[2][1], "f1_HI": table[best]["f1"]},
               "segmenter_alone": {"prob_threshold": plain[0], "f1_HI": table[plain]["f1"]},
               "scales": list(scales) if scales else None, "tta": tta, "reused": args.reuse,
               "decoy_scales": list(decoy_scales) if decoy_scales else None,
               "chips": n_chips, "craters": n_craters, "train_seconds": train_seconds,
               "total_seconds": round(time.monotonic() - t0, 1),
               "epochs": None if args.reuse else args.epochs, "decoy_fdr_variants": fdrs,
               "decoy_sigma_variants": sigmas,
               "table": {f"{a:g}/{b:g}" + ("" if c is None else f"/fdr{c:g}") + ("" if sg is None else f"/local{sg:g}"): row
                         for (a, b, (c, sg)), row in table.items()}}
    summary["opposite_negatives"] = bool(args.opposite_negatives)
    summary["segmenter"] = args.model
    summary["sun_refine"] = bool(args.sun_refine)
    summary["contexts"] = list(verifier_contexts(verifier))
    if args.per_tile_threshold:
        summary["per_tile_threshold"] = per_tile_rows(val, kept_counted, decoy_variants, table[best]["f1"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.install:
        install(path, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
