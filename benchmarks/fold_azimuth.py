"""What the sun estimate costs the tile folds: each held-out tile segmented with three azimuths.

    python benchmarks/fold_azimuth.py --folds runs/folds-sun2 [--tiles A,I,F,H,G] [--threads 2]

For each held-out tile, its fold's segmenter (``FOLDS/fold-XYZ/best.pt``, threshold from the fold's
``result.json``; scale 1, no verifier, the fold pipeline of ``crater_folds.py``) runs with the sun azimuth

- ``estimated``: ``sun.estimate_sun_azimuth`` on the image (what the folds and ``planetcd segment`` use);
- ``labels``: read from the tile's labelled craters (``sun.azimuth_from_craters``; an oracle, not available
  on a new image);
- ``refined``: read from the estimated run's own detections of confidence >= 0.5
  (``sun.azimuth_from_craters`` on them; available on a new image, a second pass).

and prints P/R/F1 of each (DeepMoon rule, >= 8 px, clustered labels). The gap between ``estimated`` and
``labels`` is what a perfect sun estimate would add.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import crater_folds as cf


def main(argv=None) -> int:
    from planetcd import models
    from planetcd.craters import sun

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", required=True, help="folder of crater_folds.py's fold-*/ (best.pt, result.json)")
    ap.add_argument("--tiles", default="A,I,F,H,G")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folds = {}
    for result in sorted(Path(args.folds).glob("fold-*/result.json")):
        info = json.loads(result.read_text())
        for t in info["test"]:
            folds[t] = (result.parent, float(info["threshold"]))
    print("tile  fold  azimuth source  azimuth  tp  fp  fn  precision  recall  F1")
    for t in [x.strip().upper() for x in args.tiles.split(",")]:
        if t not in folds:
            raise SystemExit(f"tile {t} is held out by no fold in {args.folds}")
        folder, threshold = folds[t]
        model = models.load(folder / "best.pt", device="cpu", tta=False)
        image, truth = cf.raw_tile(t)
        t0 = time.monotonic()
        estimated = cf.tile_azimuth(image)["azimuth_deg"]
        prob, frame = cf.canonical_probability(model, image, estimated)
        found = cf.craters_from(prob, frame, threshold)
        labels_az, _ = sun.azimuth_from_craters(image, truth)
        refined_az, _ = sun.azimuth_from_craters(image, found[found[:, 3] >= 0.5])
        rows = [("estimated", estimated, found)]
        for name, azimuth in (("labels", labels_az), ("refined", refined_az)):
            prob, frame = cf.canonical_probability(model, image, azimuth)
            rows.append((name, azimuth, cf.craters_from(prob, frame, threshold)))
        for name, azimuth, craters in rows:
            c = cf.prf(cf.score(craters, truth, t))
            print(f"{t}  {folder.name[5:]}  {name}  {azimuth:.1f}  {c['tp']}  {c['fp']}  {c['fn']}  "
                  f"{c['precision']:.3f}  {c['recall']:.3f}  {c['f1']:.3f}", flush=True)
        print(f"# {t}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
