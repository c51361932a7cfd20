"""Where a fold's craters go, read from its saved catalogues (``crater_folds.py --verifier``: scored*.pkl).

    python benchmarks/fold_diagnosis.py runs/folds-sun2/fold-ADG --tile A --verifier-threshold 0.4
    python benchmarks/fold_diagnosis.py runs/folds-sun2/fold-ADG --decoys        # the inner tiles (labels there)

``--tile T``: the tile's labelled craters >= 8 px (DeepMoon rule) found by the catalogue of every segmenter
threshold at the fold's largest scale set, before the verifier and at ``--verifier-threshold``; and, at the
laxest threshold, how many of six annotators marked the labels found and the labels missed (the clustered
XML's ``<confidence>``). ``--decoys``: on each inner-validation tile, the pair (segmenter, verifier threshold)
that ``--per-tile-f1`` would take (:func:`crater_folds.own_f1_choice`), the decoys >= 8 px passing there and the
false craters >= 8 px the labels count, which the decoys are meant to estimate. No network; seconds.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

from crater_folds import MIN_DIAMETER_PX, SEG_THRESHOLDS, own_f1_choice, own_f1_grid, score, tile_paths


def confidences(tile: str) -> np.ndarray:
    """Annotators (of six) per clustered label of MC11E-``tile``, in :func:`crater_folds.raw_tile`'s order."""
    from planetcd.datasets.crater_labels import read_voc_confidence

    return np.nan_to_num(read_voc_confidence(tile_paths(tile)[1])).astype(np.int64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fold", help="a fold folder of crater_folds.py --verifier (holding scored*.pkl)")
    ap.add_argument("--pickle", default=None, help="which scored*.pkl (default: the only one, else the newest)")
    ap.add_argument("--tile", default=None, help="a held-out or inner tile of the fold")
    ap.add_argument("--verifier-threshold", type=float, default=0.4)
    ap.add_argument("--decoys", action="store_true")
    args = ap.parse_args(argv)
    from planetcd.craters.match import match_craters
    from planetcd.craters.verify import decoy_competition

    found_files = sorted(Path(args.fold).glob("scored*.pkl"), key=lambda p: p.stat().st_mtime)
    path = Path(args.pickle) if args.pickle else (found_files[-1] if found_files else None)
    if path is None or not path.is_file():
        raise SystemExit(f"{args.fold}: no scored*.pkl (run crater_folds.py --verifier first)")
    saved = pickle.loads(path.read_bytes())
    scales = max(saved["meta"]["scale_variants"], key=len)
    if args.tile:
        tile = args.tile.upper()
        truth, found, _ = {**saved["val"], **saved["tested"]}[tile]
        for th in SEG_THRESHOLDS:
            craters, verifier_scores, _ = found[(scales, th)]
            for v in (0.0, args.verifier_threshold):
                m = score(craters[verifier_scores >= v], truth, tile)
                print(f"{tile} scales {scales} segmenter {th:.1f} verifier >= {v:.2f}: recall {m.recall:.3f} "
                      f"precision {m.precision:.3f} F1 {float(np.nan_to_num(m.f1)):.3f}")
        craters = found[(scales, SEG_THRESHOLDS[0])][0]
        m = match_craters(craters[:, :3], truth, mode="deepmoon", min_diameter_px=MIN_DIAMETER_PX, name=tile)
        if tile != "HRSC":
            conf = confidences(tile)
            scored = np.flatnonzero(2 * truth[:, 2] >= MIN_DIAMETER_PX)
            matched = np.zeros(len(truth), bool)
            matched[np.asarray(m.pairs, dtype=int).reshape(-1, 2)[:, 1]] = True
            for name, rows in (("found", scored[matched[scored]]), ("missed", scored[~matched[scored]])):
                counts = np.bincount(np.clip(conf[rows], 1, 6), minlength=7)[1:]
                print(f"{tile} labels >= {MIN_DIAMETER_PX:g} px {name} at segmenter {SEG_THRESHOLDS[0]:.1f}: {len(rows)}; "
                      f"marked by 1..6 annotators: {counts.tolist()}")
    if args.decoys:
        for tile, (truth, found, _) in saved["val"].items():
            counted = own_f1_grid(found, scales)
            choice = own_f1_choice(counted)
            craters, p, (decoys, decoy_scores) = found[(scales, choice[0])]
            big_passing = 0
            if len(craters):
                _, decoy_won = decoy_competition(craters, p, decoys, decoy_scores)
                big = 2 * decoys[:, 2] >= MIN_DIAMETER_PX
                big_passing = int(np.count_nonzero(decoy_won & (decoy_scores >= choice[1]) & big))
            m = score(counted[choice][0], truth, tile)
            print(f"inner tile {tile}: --per-tile-f1 takes segmenter {choice[0]:.1f}, verifier {choice[1]:.1f}; "
                  f"decoys >= {MIN_DIAMETER_PX:g} px passing {big_passing}, false craters the labels count "
                  f"{m.fp}, true {m.tp}, F1 {float(np.nan_to_num(m.f1)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
