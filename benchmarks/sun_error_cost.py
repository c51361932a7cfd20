"""What an error in the sun azimuth costs a sun-aware segmenter: crater F1 against the azimuth's error.

    python benchmarks/sun_error_cost.py [--model ctx-craters] [--tiles H,I,HRSC] [--offsets -30,-20,-10,0,10,20,30]
        [--thresholds 0.3,0.4,0.5,0.6,0.7] [--threads 2]

Each tile is segmented by the network alone (one scale, no verifier, no flip averaging, bf16 autocast, 512 px
tiles overlapping by 64 px: ``planetcd.craters.segment.image_probability``) in the canonical frame of the
azimuth *reference + offset*, where the reference is the label-based sun of the tile
(``planetcd.craters.sun.azimuth_from_craters``, craters >= 4 px) and not the estimator. Craters are the
components of the map at each threshold (``crater_folds.craters_from``), matched with the DeepMoon rule
(craters >= 8 px, clustered labels). One line per tile and offset: the F1 at every threshold and the best.
The estimator's own error on each tile is printed with it (docs/sun.md), so the row nearest to it is what
``planetcd segment`` gets from the estimate. Tiles the model trained on give in-sample numbers: say so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crater_folds as cf  # noqa: E402  (tile paths, scoring)


def main(argv=None) -> int:
    from planetcd import models
    from planetcd.craters import sun
    from planetcd.craters.segment import image_probability

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ctx-craters", help="registry name or checkpoint of a sun-aware segmenter")
    ap.add_argument("--tiles", default="H,I,HRSC", help="CTX tiles MC11E-<letter>, or HRSC")
    ap.add_argument("--offsets", default="-30,-20,-10,0,10,20,30", help="errors of the azimuth given, degrees")
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = models.load(args.model, tta=False)
    if not cf.is_sun_aware(model):
        raise SystemExit(f"{args.model}: not a sun-aware model (no canonical frame to get wrong)")
    offsets = [float(v) for v in args.offsets.split(",")]
    thresholds = [float(v) for v in args.thresholds.split(",")]
    print(f"model {args.model}; F1 (DeepMoon rule, >= 8 px) at thresholds {thresholds}")
    print("tile  reference  estimate  offset  " + "  ".join(f"F1@{t:g}" for t in thresholds) + "  best  s")
    for tile in [t.strip().upper() for t in args.tiles.split(",")]:
        image, truth = cf.raw_tile(tile)
        reference, _ = sun.azimuth_from_craters(image, truth, min_radius=4.0)
        estimate = cf.tile_azimuth(image)
        for offset in offsets:
            start = time.perf_counter()
            with torch.no_grad():
                prob = image_probability(model, image, sun_azimuth=(reference + offset) % 360.0, precision="bf16")
            prob = np.nan_to_num(prob, nan=0.0)
            f1 = [float(np.nan_to_num(cf.score(cf.craters_from(prob, None, t), truth, tile).f1)) for t in thresholds]
            print(f"{tile}  {reference:.1f}  {estimate['estimate_deg']:.1f}  {offset:+.0f}  "
                  + "  ".join(f"{v:.3f}" for v in f1) + f"  {max(f1):.3f}  {time.perf_counter() - start:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
