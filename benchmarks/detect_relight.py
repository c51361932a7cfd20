"""``detect``'s ``nn`` (pre relit to post's look) against ``nn-unlit`` at detect's defaults, on real-like pairs.

The pair is benchmarks/real_like_pair.py's (1024² of the CTX tile MC11E-I; post under the ``real-nuisance``
draw of ``--seeds``: another sun, dust-devil tracks, seams, haze, resolution; three new craters r 7-12 px;
a (2.3, -1.6) px shift; noise). Prints one JSON line per seed and method: τ (used, pseudo, empirical), the
craters' patches flagged and ranks, the unchanged patches flagged (and how many the pseudo τ alone would
flag), the median unchanged score, the relighting record and the timings.

    PLANETCD_VGG16_WEIGHTS=... python benchmarks/detect_relight.py --seeds 1,2
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_like_pair import CRATERS, make_pair  # noqa: E402

from planetcd.change.detect import detect  # noqa: E402
from planetcd.features import VGGFeatures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--methods", default="nn,nn-unlit")
    args = parser.parse_args()
    trunk = VGGFeatures(layer=6, weights=os.environ.get("PLANETCD_VGG16_WEIGHTS"))
    for seed in [int(s) for s in args.seeds.split(",")]:
        pre, post = make_pair(seed)
        for method in args.methods.split(","):
            start = time.perf_counter()
            r = detect(pre, post, method=method, trunk=trunk, seed=0)
            seconds = time.perf_counter() - start
            hit = np.zeros(len(r.patches), bool)
            for y, x, _ in CRATERS:
                hit |= ((r.patches[:, 0] <= y) & (y < r.patches[:, 0] + r.patches[:, 2])
                        & (r.patches[:, 1] <= x) & (x < r.patches[:, 1] + r.patches[:, 3]))
            order = np.argsort(-np.nan_to_num(r.change_score, nan=-1), kind="stable")
            ranks = sorted(int(np.flatnonzero(order == i)[0]) + 1 for i in np.flatnonzero(hit))
            s = r.change_score
            print(json.dumps({
                "seed": seed, "method": method, "seconds": round(seconds, 1), "tau": round(r.tau, 4),
                "tau_pseudo": round(r.thresholds["pseudo"], 4), "tau_empirical": round(r.thresholds["empirical"], 4),
                "crater_flagged": int((r.changed & hit).sum()), "unchanged_flagged": int((r.changed & ~hit).sum()),
                "n_unchanged": int((~hit).sum()), "crater_ranks": ranks,
                "pseudo_tau_unchanged_flagged": int(((s > r.thresholds["pseudo"]) & ~hit).sum()),
                "median_unchanged": round(float(np.nanmedian(s[~hit])), 4),
                "relight": {k: v for k, v in r.relight.items() if k != "transfer"},
                "timings": {k: round(v, 1) for k, v in r.timings.items()}}), flush=True)


if __name__ == "__main__":
    main()
