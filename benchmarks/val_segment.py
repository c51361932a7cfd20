"""Crater F1 of a segmenter on the validation tiles MC11E-H and I, over a grid of extraction settings.

    python benchmarks/val_segment.py [--model ctx-craters] [--threads 1] [--cache DIR]
        [--thresholds 0.5,0.6,0.7] [--min-radii 3,4] [--scales 1 1,0.5 1,0.25 1,0.5,0.25 2,1,0.5] [--coarse-min-radii 3,6,8]
        [--min-contrasts none,0.2,0.25,0.3] [--cross-validate] [--tta] [--sizes]

Probability maps come from the code paths of ``planetcd segment``: the full
image through ``segment`` (512 px tiles, 64 px overlap) and each other
scale through ``read_scaled`` + ``image_probability`` (in the canonical frame of the
estimated sun for a sun-aware model, as ``segment``); craters are extracted by
components (minimum radius per scale as ``multiscale_craters``: ``--min-radii``
at scale 1 and the same size above it, ``--coarse-min-radii`` below) and merged
over scales as ``multiscale_craters`` does; they are matched
with ``match_craters(mode="deepmoon", min_diameter_px=8)`` and pooled over H
and I.  Prints one line per setting, best pooled F1 first.  ``--min-contrasts``
adds the disc-contrast screening of ``extract_craters`` (``none``: off).

The grid is run on the validation tiles themselves: settings chosen here are
selected on the data they are scored on (say so when you report them).
``--cross-validate`` also prints the honest version: each tile scored with the
setting that is best on the other tile(s), then pooled.
``--cache`` keeps the probability maps (``.npy``) between runs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

SHARED = Path(os.environ.get("PLANETCD_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ctx-craters")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help="folder for the probability maps (reused when present)")
    ap.add_argument("--tiles", default="H,I", help="CTX tiles MC11E-<letter>, or HRSC (the PyCDA HRSC tile)")
    ap.add_argument("--thresholds", default="0.5,0.6,0.7")
    ap.add_argument("--min-radii", default="3,4")
    ap.add_argument("--scales", nargs="+", default=["1", "1,0.5", "1,0.25", "1,0.5,0.25"])
    ap.add_argument("--coarse-min-radii", default="3,6,8")
    ap.add_argument("--methods", default="components", help="extraction methods, e.g. components,template")
    ap.add_argument("--match-thresholds", default="0.6", help="template: smallest correlation of a crater")
    ap.add_argument("--max-radius", type=float, default=150.0, help="largest radius in pixels of each scale's map")
    ap.add_argument("--min-contrasts", default="none", help="disc-contrast cut-offs, e.g. none,0.2,0.3")
    ap.add_argument("--cross-validate", action="store_true", help="score each tile with the setting best on the others")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="flip averaging on/off (default: the model's); give each its own --cache")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--sizes", action="store_true",
                    help="for the best setting, misses and false detections per diameter bin (sqrt 2 bins, px) of each tile")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from planetcd import models
    from planetcd.craters.extract import disc_contrast, extract_craters
    from planetcd.craters.match import match_craters, pool_results
    from planetcd.craters.segment import image_probability, merge_scales, read_scaled, resolve_sun, scale_min_radius, segment
    from planetcd.datasets.crater_labels import read_pycda_csv, read_voc_boxes

    model = models.load(args.model, tta=args.tta)
    tiles = args.tiles.split(",")
    scale_sets = [tuple(floats(s)) for s in args.scales]
    all_scales = sorted({s for ss in scale_sets for s in ss}, reverse=True)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="val_segment_"))
    cache.mkdir(parents=True, exist_ok=True)
    images, truth = {}, {}
    for t in tiles:
        if t.upper() == "HRSC":  # the PyCDA HRSC tile: another camera (never used for training or selection)
            images[t] = SHARED / "data" / "hrsc-pycda" / "holdout_tile.pgm"
            truth[t] = read_pycda_csv(SHARED / "data" / "hrsc-pycda" / "holdout_tile_labels.csv")
        else:
            images[t] = SHARED / "data" / "ctx-mc11e" / "images" / f"MC11E-{t}.png"
            truth[t] = read_voc_boxes(SHARED / "data" / "ctx-mc11e" / "annotations" / "clustered" / f"MC11E-{t}.xml")
    probs = {}
    for t in tiles:
        for s in all_scales:
            path = cache / f"prob_{t}_{s:g}.npy"
            if not path.exists():
                if s == 1.0:
                    prob = segment(images[t], model, prob_threshold=0.5, scales=[1.0], device="cpu").probability
                else:  # a sun-aware model sees every scale in the canonical frame, as segment does
                    rotate, _ = resolve_sun(None, model.metadata, images[t])
                    prob = image_probability(model, read_scaled(images[t], s), sun_azimuth=rotate)
                np.save(path, np.nan_to_num(prob, nan=0.0))
                print(f"# {t} scale {s:g}: probability map {prob.shape}", file=sys.stderr, flush=True)
            probs[t, s] = np.load(path)

    extracted = {}

    def craters(t, s, thr, min_r, method, match, min_contrast):
        key = (t, s, thr, min_r, method, match)
        if key not in extracted:
            found = extract_craters(probs[t, s], method=method, threshold=thr, min_radius=min_r,
                                    max_radius=args.max_radius, match_threshold=match)
            extracted[key] = (found, disc_contrast(probs[t, s], found))
        found, contrast = extracted[key]
        # the same as extract_craters(..., min_contrast=...): screening follows the radius filter
        return found if min_contrast is None else found[contrast >= min_contrast]

    rows = []
    methods = [(m, mt) for m in args.methods.split(",") for mt in (floats(args.match_thresholds) if m == "template" else [None])]
    contrasts = [None if v.strip().lower() == "none" else float(v) for v in args.min_contrasts.split(",")]
    for (method, match), scales, thr, min_r, coarse, min_contrast in itertools.product(
            methods, scale_sets, floats(args.thresholds), floats(args.min_radii), floats(args.coarse_min_radii), contrasts):
        if min(scales) >= 1.0 and coarse != floats(args.coarse_min_radii)[0]:
            continue
        res = []
        for t in tiles:
            parts = {s: craters(t, s, thr, scale_min_radius(s, min_r, coarse), method, match, min_contrast) for s in scales}
            det = merge_scales(parts)  # as multiscale_craters does
            res.append(match_craters(det[:, :3], truth[t], mode="deepmoon", min_diameter_px=8, name=t))
        pooled = pool_results(res)
        label = method if match is None else f"{method}@{match:g}"
        rows.append((pooled.f1, label, scales, thr, min_r, coarse, min_contrast, res + [pooled]))
    rows.sort(key=lambda r: -r[0])
    print("method  scales  threshold  min_radius  coarse_min_radius  min_contrast  "
          + "  ".join(f"{t}:tp/fp/fn/P/R/F1" for t in tiles + ["pooled"]))
    for f1, method, scales, thr, min_r, coarse, min_contrast, res in rows[: args.top]:
        print(f"{method}  {','.join(f'{s:g}' for s in scales)}  {thr:g}  {min_r:g}  {coarse:g}  {min_contrast}  {_cells(res)}")
    if args.sizes and rows:
        print("best setting by crater diameter (px): truth / missed, detected / false")
        for r in rows[0][-1][:-1]:
            cells = [f"{b['d_lo']:.0f}-{b['d_hi']:.0f}: {b['n_truth']}/{b['n_truth'] - b['tp_truth']}, "
                     f"{b['n_detected']}/{b['n_detected'] - b['tp_detected']}" for b in r.bins if b["n_truth"] or b["n_detected"]]
            print(f"  {r.name}: " + "; ".join(cells))
    if args.cross_validate and len(tiles) > 1:
        held = []
        print("cross-validated: each tile scored with the setting best (pooled F1) on the other tiles")
        for k, t in enumerate(tiles):
            def others_f1(row):
                return pool_results([r for j, r in enumerate(row[-1][:-1]) if j != k]).f1
            best = max(rows, key=others_f1)
            held.append(best[-1][k])
            print(f"  {t}: {best[1]}  {','.join(f'{s:g}' for s in best[2])}  {best[3]:g}  {best[4]:g}  {best[5]:g}  "
                  f"{best[6]}  (F1 {others_f1(best):.3f} on the others)  {_cells([best[-1][k]])}")
        print(f"  pooled held-out: {_cells([pool_results(held)])}")
    return 0


def _cells(results) -> str:
    return "  ".join(f"{r.tp}/{r.fp}/{r.fn}/{r.precision:.3f}/{r.recall:.3f}/{r.f1:.3f}" for r in results)


if __name__ == "__main__":
    sys.exit(main())
