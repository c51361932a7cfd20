"""Chip-verifier variants compared on tiles held out from the verifier (issue 13): which training choices move the
mound test and the catalogue F1.

    python benchmarks/verifier_variants.py --out runs/verifier-variants [--train A,B,C,D,E] [--eval F,G]
        [--variants "plain;contexts=2,4;contexts=3;mound-offsets=0.5,1"] [--seeds 3] [--threads 2]

1. The shipped segmenter runs as ``planetcd segment`` does (sun estimated, canonical frame, its scales and flip
   averaging; verifier off) on the training and evaluation tiles at the extraction thresholds 0.1, 0.2 and
   0.3, and on the training tiles under the opposite sun (the mounds as it sees them). Detections are cached
   in ``--out`` (``segment-<tile>-<threshold>-<sun>.npy``), so a second run only trains.
2. For each variant, ``--seeds`` verifiers are trained on the training tiles' chips
   (:func:`planetcd.craters.verify.verifier_training_chips` with the opposite-sun negatives, as
   ``benchmarks/train_ctx_verifier.py --opposite-negatives``), 12 epochs each.
3. Each verifier, and the mean of their probabilities (an ensemble), is scored on the evaluation tiles: the
   mound test (``crater_folds.mound_test``'s network pipeline: 128 px chips around the labelled craters >= 8 px,
   extraction at 0.1, found upright / found on the chip turned 180°) at verifier thresholds 0.3-0.8, and the
   pooled catalogue F1 (DeepMoon rule, >= 8 px, clustered labels) at extraction 0.1 and 0.2.

The evaluation tiles are held out from the verifiers, not from the segmenter: the shipped segmenter was trained
on A-G, so on F and G it finds more craters than on unseen ground. The numbers compare variants; they are not
the product's accuracy. Variants: ``plain`` (the shipped recipe), ``contexts=C1,C2`` (chips at several
contexts stacked as channels), ``mound-offsets=LOW,HIGH`` (extra mounds turned about points beside the crater).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crater_folds as cf  # noqa: E402  (tile paths, scoring, merged detections)

EXTRACTION = (0.1, 0.2, 0.3)
VERIFIER_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

log = logging.getLogger("verifier_variants")


def parse_variant(text: str) -> tuple[str, dict]:
    """``plain`` / ``contexts=2,4`` / ``mound-offsets=0.5,1`` -> (name, keyword arguments of the chips and training)."""
    text = text.strip()
    if text == "plain":
        return text, {}
    key, _, value = text.partition("=")
    numbers = tuple(float(v) for v in value.split(","))
    if key == "contexts":
        return text, {"contexts": numbers}
    if key == "mound-offsets" and len(numbers) == 2:
        return text, {"mound_offsets": numbers}
    raise SystemExit(f"unknown variant {text!r}: plain, contexts=C1[,C2...] or mound-offsets=LOW,HIGH")


def cached_detections(out: Path, tile: str, threshold: float, opposite: bool) -> tuple[np.ndarray, float]:
    """The shipped segmenter's craters ``(n, 4)`` on a tile (verifier off), and the sun azimuth of its frame."""
    from planetcd.craters.segment import segment

    name = out / f"segment-{tile}-{threshold:g}-{'opposite' if opposite else 'sun'}.npy"
    sun_file = out / f"sun-{tile}.json"
    if name.exists() and sun_file.exists():
        return np.load(name), json.loads(sun_file.read_text())["azimuth"]
    sun = json.loads(sun_file.read_text())["azimuth"] if sun_file.exists() else None
    if opposite and sun is None:
        sun = cached_detections(out, tile, threshold, False)[1]
    image_path, _ = cf.tile_paths(tile)
    result = segment(image_path, "ctx-craters", prob_threshold=threshold, verify=False,
                     sun_azimuth=None if not opposite else (sun + 180.0) % 360.0)
    if not opposite:
        record = result.params["sun"]
        sun = float(record["sun_azimuth_deg"])
        sun_file.write_text(json.dumps({"azimuth": sun, "canonical_frame": bool(record.get("canonical_frame"))}))
    np.save(name, result.catalog.pixels)
    return result.catalog.pixels, sun


def mound_items(model, tile: str, threshold: float = 0.1) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The mound test's chips of one tile with the network's detections: ``(kind, chip, labelled crater (1, 3),
    detections (n, 4))``, kind ``upright`` or ``turned`` (``crater_folds.mound_chips``, the network pipeline)."""
    from planetcd.craters.extract import extract_craters

    azimuth = cf.tile_azimuth(cf.raw_tile(tile)[0])["azimuth_deg"]
    items = []
    for kind, chip, crater in cf.mound_chips(tile, azimuth):
        with torch.no_grad():
            prob = model(torch.from_numpy(chip)[None, None])[0, 0].float().numpy()
        found = extract_craters(prob, method="components", threshold=threshold, target="filled", min_radius=2.0,
                                max_radius=150.0)
        items.append((kind, chip, crater, found))
    return items


def main(argv=None) -> int:
    from planetcd import models
    from planetcd.craters.match import match_craters, pool_results
    from planetcd.craters.sun import canonical_frame
    from planetcd.craters.verify import image_pyramid, train_verifier, verifier_training_chips, verify_craters

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/verifier-variants")
    ap.add_argument("--train", default="A,B,C,D,E")
    ap.add_argument("--eval", default="F,G")
    ap.add_argument("--variants", default="plain;contexts=2,4;contexts=3;mound-offsets=0.5,1")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("planetcd").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_tiles = [t.strip().upper() for t in args.train.split(",")]
    eval_tiles = [t.strip().upper() for t in args.eval.split(",")]
    if set(train_tiles) & set(eval_tiles):
        raise SystemExit("--train and --eval must not share a tile")
    variants = [parse_variant(v) for v in args.variants.split(";")]

    t0 = time.monotonic()
    detections = {(t, th, opp): cached_detections(out, t, th, opp)
                  for t in train_tiles for th in EXTRACTION for opp in (False, True)}
    detections.update({(t, th, False): cached_detections(out, t, th, False) for t in eval_tiles for th in EXTRACTION})
    log.info("detections ready in %.0f s", time.monotonic() - t0)
    segmenter = models.load("ctx-craters", tta=False)
    mounds = {t: mound_items(segmenter, t) for t in eval_tiles}
    tiles = {t: cf.raw_tile(t) for t in train_tiles + eval_tiles}
    pyramids = {t: image_pyramid(tiles[t][0]) for t in tiles}

    def frame_of(t, opposite=False):
        sun = detections[(t, 0.1, False)][1]
        return canonical_frame(tiles[t][0].shape, (sun + 180.0) % 360.0 if opposite else sun)

    results = {}
    for name, options in variants:
        t1 = time.monotonic()
        rng = np.random.default_rng(0)
        chips, labels = [], []
        for t in train_tiles:
            merged = cf.merged_detections({th: detections[(t, th, False)][0] for th in EXTRACTION}, EXTRACTION)
            opposite = cf.merged_detections({th: detections[(t, th, True)][0] for th in EXTRACTION}, EXTRACTION)
            c, lab = verifier_training_chips(pyramids[t], tiles[t][1], merged, frame_of(t), rng=rng,
                                             opposite_detections=opposite, opposite_frame=frame_of(t, True), **options)
            chips.append(c)
            labels.append(lab)
        chips, labels = np.concatenate(chips), np.concatenate(labels)
        verifiers = [train_verifier(chips, labels, epochs=args.epochs, seed=s, threads=args.threads,
                                    contexts=options.get("contexts")) for s in range(args.seeds)]
        mound_scores = {t: [np.stack([verify_craters(v, image_pyramid(chip), found) for v in verifiers])
                            if len(found) else None for _, chip, _, found in mounds[t]] for t in eval_tiles}
        tile_scores = {(t, th): np.stack([verify_craters(v, pyramids[t], detections[(t, th, False)][0], frame_of(t))
                                          for v in verifiers]) for t in eval_tiles for th in (0.1, 0.2)}
        rows = {}
        for member in [*range(args.seeds), "mean"]:
            def pick(p, member=member):
                return p.mean(0) if member == "mean" else p[member]

            row = {}
            for vt in VERIFIER_THRESHOLDS:
                found = {"upright": 0, "turned": 0}
                for t in eval_tiles:
                    for (kind, _, crater, det), p in zip(mounds[t], mound_scores[t]):
                        kept = det if p is None else det[pick(p) >= vt]
                        found[kind] += int(len(kept) > 0 and match_craters(kept[:, :3], crater, mode="deepmoon",
                                                                           min_diameter_px=0).tp > 0)
                n = sum(kind == "upright" for t in eval_tiles for kind, *_ in mounds[t])
                row[f"mound@{vt:g}"] = [round(found["upright"] / n, 3), round(found["turned"] / n, 3)]
            for th in (0.1, 0.2):
                for vt in (0.3, 0.5, 0.7):
                    scored = [cf.score(detections[(t, th, False)][0][pick(tile_scores[(t, th)]) >= vt], tiles[t][1], t)
                              for t in eval_tiles]
                    row[f"f1@{th:g}/{vt:g}"] = round(float(np.nan_to_num(pool_results(scored).f1)), 4)
            rows["mean" if member == "mean" else f"seed {member}"] = row
        results[name] = {"chips": int(len(labels)), "seconds": round(time.monotonic() - t1, 1), "rows": rows}
        log.info("%s: %d chips, %.0f s", name, len(labels), time.monotonic() - t1)

    print(f"verifiers trained on {','.join(train_tiles)}, scored on {','.join(eval_tiles)} (held out from the verifiers, "
          f"not from the segmenter); mound test: found upright / found turned; F1 at extraction/verifier thresholds")
    header = ["variant", "member"] + [f"mound@{vt:g}" for vt in VERIFIER_THRESHOLDS] + \
        [f"f1@{th:g}/{vt:g}" for th in (0.1, 0.2) for vt in (0.3, 0.5, 0.7)]
    print(" | ".join(header))
    for name, result in results.items():
        for member, row in result["rows"].items():
            cells = [f"{row[k][0]:.3f}/{row[k][1]:.3f}" if k.startswith("mound") else f"{row[k]:.4f}" for k in header[2:]]
            print(" | ".join([name, member, *cells]))
    (out / "summary.json").write_text(json.dumps({"train": train_tiles, "eval": eval_tiles, "seeds": args.seeds,
                                                  "epochs": args.epochs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
