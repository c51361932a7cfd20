"""A real-like pair from a real CTX tile: how many unchanged patches each τ policy flags (docs/benchmarks.md).

pre: a 1024² window of MC11E-I (a test tile: the crater UNet never trained on it). post: the same ground
(window 20 px larger, then cropped) under the real nuisances of a second date, drawn with ``--seed``
(:func:`planetcd.change.nuisance.real_nuisance`: another sun, dust-devil tracks, a seam, haze, resolution),
three new fresh craters (r 7, 9, 12 px), displaced by (2.3, -1.6) px, with noise. Prints, for each method
and threshold policy, how many craters are flagged (any patch its disc touches), how many patches no crater
touches are flagged, and each crater's rank (its best-ranked patch).

    python benchmarks/real_like_pair.py --seed 1
"""

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from planetcd.change.detect import detect
from planetcd.change.nuisance import REAL_NUISANCE, real_nuisance
from planetcd.datasets.benchmark import default_shared_dir
from planetcd.datasets.synthetic import add_fresh_crater
from planetcd.features import VGGFeatures
from planetcd.tiling import box_distances

CRATERS = [(300, 300, 9.0), (650, 420, 7.0), (820, 760, 12.0)]  # row, col (pre's grid), radius px
SHIFT = (2.3, -1.6)
RUNS = [("nn", "both", "auto"), ("nn", "pseudo", "auto"), ("nn", "empirical", "auto"),
        ("paper", "pseudo", 10.0), ("paper", "both", "auto")]


def make_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(default_shared_dir()) / "data" / "ctx-mc11e" / "images" / "MC11E-I.png"
    tile = np.array(Image.open(path)).astype(np.float32) / 255
    rng = np.random.default_rng(seed)
    pre = tile[500:1524, 500:1524]
    post = real_nuisance(tile[480:1544, 480:1544], rng, REAL_NUISANCE)
    for y, x, r in CRATERS:
        post = add_fresh_crater(post, y + 20 + SHIFT[0], x + 20 + SHIFT[1], r, halo="dark", halo_strength=0.5)
    post = ndimage.shift(post, SHIFT, order=3, mode="nearest")[20:1044, 20:1044]
    post = np.clip(post + rng.normal(0, 0.01, post.shape), 0.004, 1)  # no exact zero: zero is missing data
    return np.clip(pre, 0.004, 1) * 255, post * 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    pre, post = make_pair(args.seed)
    weights = os.environ.get("PLANETCD_VGG16_WEIGHTS")
    trunk = VGGFeatures(layer=6, weights=weights)
    print("| method | --threshold | --max-shift | τ | τ pseudo | τ empirical | craters flagged | "
          "patches no crater touches flagged | crater ranks |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for method, tau, max_shift in RUNS:
        r = detect(pre, post, method=method, tau=tau, max_shift=max_shift, trunk=trunk, patch_size=100, n_pseudo=60)
        order = np.argsort(-np.nan_to_num(r.change_score, nan=-np.inf))
        rank = np.empty(len(order), int)
        rank[order] = np.arange(1, len(order) + 1)
        touched = [box_distances(r.patches, y, x) <= radius for y, x, radius in CRATERS]
        any_touched = np.any(touched, axis=0)
        scored = np.isfinite(r.change_score)
        found = sum(bool(r.changed[t].any()) for t in touched)
        ranks = sorted(int(rank[t].min()) for t in touched)
        t = r.thresholds
        fmt = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
        print(f"| {method} | {tau} | {max_shift} | {r.tau:.4g} | {fmt(t['pseudo'])} | {fmt(t['empirical'])} | "
              f"{found}/{len(CRATERS)} | {int((r.changed & ~any_touched).sum())}/{int((scored & ~any_touched).sum())} "
              f"| {', '.join(map(str, ranks))} |", flush=True)


if __name__ == "__main__":
    main()
