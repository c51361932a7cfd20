"""How well candidate features separate matched from unmatched craters (ROC AUC), on cached probability maps.

    python benchmarks/contrast_auc.py --cache DIR [--tiles H,I] [--threshold 0.65] [--min-radius 3]

``DIR`` is a ``benchmarks/val_segment.py --cache`` folder (``prob_<tile>_1.npy``).
Candidates are the components of each full-scale map (``extract_craters``, no
screening) at least 8 px across, labelled by DeepMoon matching against the
clustered labels; for each feature the ROC AUC of "matched" is printed:
the candidate's mean probability (its ``confidence``), the peak probability in
its disc, and its disc contrast (``disc_contrast``: mean in the disc minus mean
over the ring from 1 to 1.5 radii).  Used to choose the contrast screening
(docs/segment.md, "Disc contrast").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("PLANETCD_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--tiles", default="H,I")
    ap.add_argument("--threshold", type=float, default=0.65)
    ap.add_argument("--min-radius", type=float, default=3.0)
    args = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from planetcd.craters.extract import disc_contrast, extract_craters, ring_mean
    from planetcd.craters.match import match_craters
    from planetcd.datasets.crater_labels import read_voc_boxes

    features, matched = [], []
    for t in args.tiles.split(","):
        prob = np.load(Path(args.cache) / f"prob_{t}_1.npy")
        truth = read_voc_boxes(SHARED / "data" / "ctx-mc11e" / "annotations" / "clustered" / f"MC11E-{t}.xml")
        found = extract_craters(prob, threshold=args.threshold, min_radius=args.min_radius, max_radius=150.0)
        found = found[2 * found[:, 2] >= 8]
        result = match_craters(found[:, :3], truth, mode="deepmoon", min_diameter_px=8)
        hit = np.zeros(len(found), bool)
        if len(result.pairs):
            hit[np.asarray(result.pairs)[:, 0]] = True
        peak = np.array([prob[int(max(0, y - r)) : int(y + r) + 1, int(max(0, x - r)) : int(x + r) + 1].max()
                         for x, y, r, _ in found])
        features.append(np.column_stack([found[:, 3], peak, disc_contrast(prob, found), ring_mean(prob, found, 1.0, 1.5)]))
        matched.append(hit)
    features, matched = np.vstack(features), np.concatenate(matched)
    print(f"{matched.sum()} matched and {(~matched).sum()} unmatched candidates >= 8 px (threshold {args.threshold:g})")
    for k, name in enumerate(["mean probability (confidence)", "peak probability", "disc contrast", "ring mean (lower is better)"]):
        auc = roc_auc_score(matched, features[:, k] if k < 3 else -features[:, k])
        print(f"  {name:32s} ROC AUC {auc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
