"""Are a fold's false craters mounds? The shading sign of the craters it keeps, true and false, per held-out tile.

    python benchmarks/false_crater_shading.py --folds runs/folds-sun2 [--tiles G,A,D,HRSC]

Reads what step 5 of docs/segment.md ("Unseen terrain") saved in ``FOLDS/fold-XYZ/``: the candidates and
verifier scores of each held-out tile (``scored*.pkl``) and the choices the fold made on its inner tiles
(``verified*.json``: scales, segmenter and verifier thresholds, decoy share). No network runs. For every kept
crater >= 8 px across it measures the **shading sign**: the correlation, over the disc, between the
brightness (Gaussian-smoothed, sigma 1 px) and the position along the direction away from the sun (the
tile's azimuth as the fold used it). A crater's far wall faces the sun and is bright: positive. A mound is
lit on its sun-facing side: negative. It prints, for true and false craters (DeepMoon rule, clustered labels)
and for the labelled craters, the share with a negative sign, the median sign and the radii (10th-90th
percentile), and what dropping the kept craters with a sign below 0 would do to the tile's F1.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from scipy import ndimage

import crater_folds as cf


def shading_sign(image: np.ndarray, craters: np.ndarray, azimuth_deg: float) -> np.ndarray:
    """Per crater ``(x, y, r, ...)`` of ``image`` ``(rows, cols)``: the correlation over its disc between the
    brightness and the position along the direction away from the sun (``azimuth_deg``: where the light comes
    from, clockwise from the top). NaN for a disc that leaves the image."""
    phi = np.deg2rad(azimuth_deg)
    toward_x, toward_y = np.sin(phi), -np.cos(phi)  # image axes: x right, y down
    out = np.full(len(craters), np.nan)
    for k, (x, y, r) in enumerate(np.asarray(craters)[:, :3]):
        h = int(np.ceil(r)) + 1
        r0, r1, c0, c1 = int(y) - h, int(y) + h + 1, int(x) - h, int(x) + h + 1
        if r0 < 0 or c0 < 0 or r1 > image.shape[0] or c1 > image.shape[1]:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        dx, dy = xx - x, yy - y
        disc = dx * dx + dy * dy <= r * r
        values = image[r0:r1, c0:c1][disc]
        away = -(dx * toward_x + dy * toward_y)[disc]
        values = values - values.mean()
        away = away - away.mean()
        spread = np.sqrt((values * values).sum() * (away * away).sum())
        out[k] = float((values * away).sum() / spread) if spread > 0 else np.nan
    return out


def kept_craters(found: tuple, verifier_threshold: float, decoy_fdr: float | None) -> np.ndarray:
    """The catalogue the fold's choice keeps from one tile's scored candidates (as ``crater_folds.py``)."""
    from planetcd.craters.verify import decoy_competition, decoy_threshold

    craters, scores, decoy = found
    if not len(craters):
        return craters
    if decoy_fdr is None:
        return craters[scores >= verifier_threshold]
    decoys, decoy_scores = decoy
    won, decoy_won = decoy_competition(craters, scores, decoys, decoy_scores)
    return craters[(scores >= decoy_threshold(scores[won], decoy_scores[decoy_won], verifier_threshold, decoy_fdr))
                   & won]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", required=True, help="folder of crater_folds.py's fold-*/ after step 5")
    ap.add_argument("--tiles", default="G,A,D,HRSC")
    args = ap.parse_args(argv)
    folds = {}
    for verified in sorted(Path(args.folds).glob("fold-*/verified*.json")):
        choice = json.loads(verified.read_text())
        scored = sorted(verified.parent.glob("scored*.pkl"))
        if not scored:
            continue
        for tile in choice["tiles"]:
            folds[tile] = (choice, scored[0])
    for tile in [t.strip().upper() for t in args.tiles.split(",")]:
        if tile not in folds:
            raise SystemExit(f"tile {tile}: no fold in {args.folds} holds it out with saved candidates")
        choice, scored = folds[tile]
        saved = pickle.loads(scored.read_bytes())
        truth, found, record = saved["tested"][tile]
        key = (tuple(float(s) for s in choice["scales"]), float(choice["threshold"]))
        kept = kept_craters(found[key], float(choice["verifier_threshold"]), choice.get("decoy_fdr"))
        result = cf.score(kept, truth, tile)
        image, _ = cf.raw_tile(tile)
        image = ndimage.gaussian_filter(image, 1.0)
        azimuth = float(record["azimuth_deg"])
        sign = shading_sign(image, kept, azimuth)
        true = np.zeros(len(kept), bool)
        true[result.pairs[:, 0]] = True
        counted = kept[:, 2] * 2 >= cf.MIN_DIAMETER_PX
        labelled = truth[truth[:, 2] * 2 >= cf.MIN_DIAMETER_PX]
        rows = (("true", sign[true & counted], kept[true & counted, 2]),
                ("false", sign[~true & counted], kept[~true & counted, 2]),
                ("labels", shading_sign(image, labelled, azimuth), labelled[:, 2]))
        dropped = cf.score(kept[~(sign < 0)], truth, tile)
        print(f"{tile} (sun {azimuth:.1f} deg): F1 as kept {result.f1:.3f} (TP {result.tp}, FP {result.fp}, FN "
              f"{result.fn}); without the kept craters of sign < 0 {dropped.f1:.3f} (TP {dropped.tp}, FP {dropped.fp}, "
              f"FN {dropped.fn})")
        for name, values, radii in rows:
            values = values[np.isfinite(values)]
            low, high = np.percentile(radii, [10, 90]) if len(radii) else (np.nan, np.nan)
            print(f"    {name:6} craters: {len(values):4d}, sign < 0: {np.mean(values < 0):.2f}, median sign "
                  f"{np.median(values):.2f}; radius {low:.1f}-{high:.1f} px (10th-90th percentile)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
