"""How many pseudo pairs `detect`'s sequential τ sample scores, with and without the ``decided`` stop.

For each pair, ``detect`` (defaults, ``--threshold both``) is run once with ``pseudo_tolerance=0``: every pair
of the one draw of ``--n-pseudo`` is scored, in the sequential sample's random order (``below floor`` may
still stop it early, as it would for both rules). The stages (40, then 20 at a time) are then replayed on
that prefix-ordered sample, exactly as :meth:`planetcd.change.threshold.PseudoSample.settled` would stop
them at the default tolerance (0.10): once without the patches' scores (the rule before the ``decided``
stop) and once with them (``detect``'s rule now). Prints, per pair and rule, the pairs scored, why it
stopped, the τ used and the patches flagged, and whether the two rules flag the same patches.

Pairs: ``real-like:SEED`` (``benchmarks/real_like_pair.py``'s 1024² pair of MC11E-I with a second date's
real nuisances and three new craters), ``synthetic:SIZE`` (``bench_detect.py``'s synthetic pair with one
new crater, no nuisance, written as GeoTIFFs and read back as ``--floors`` does)::

    python benchmarks/tau_sample.py --pairs real-like:1,real-like:2,real-like:3,real-like:4,real-like:5,synthetic:1024,synthetic:2048,synthetic:4096
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from planetcd.change.detect import detect
from planetcd.change.threshold import (
    PSEUDO_TOLERANCE, PseudoSample, combine_thresholds, self_calibrated_threshold,
)
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.features import VGGFeatures

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_pair(spec: str, folder: str):
    kind, _, value = spec.partition(":")
    if kind == "real-like":
        from real_like_pair import make_pair as real_like

        return real_like(int(value))
    if kind == "synthetic":  # as bench_detect.py --floors: written as GeoTIFFs and read back
        size = int(value)
        pair = make_change_pair((size, size), seed=1, displacement=(4.2, -6.1), new_craters=[[size * 0.4, size * 0.6, 20.0]])
        return (write_synthetic_geotiff(Path(folder) / f"pre{size}.tif", pair.pre),
                write_synthetic_geotiff(Path(folder) / f"post{size}.tif", pair.post))
    raise SystemExit(f"unknown pair {spec!r}: real-like:SEED or synthetic:SIZE")


def replay(pseudo: np.ndarray, change_score: np.ndarray, floor: float, decide: bool, n_max: int) -> dict:
    """Where the sequential sample stops on this draw, and the τ and patches flagged there."""
    sample = PseudoSample(tolerance=PSEUDO_TOLERANCE)
    scored = np.isfinite(change_score)
    reason = None
    for stop in sample.stops(n_max):
        stop = min(stop, len(pseudo))  # detect's own run stops early only when below its floor
        if stop < n_max:
            reason = sample.settled(pseudo[:stop], floor=floor, decide=change_score[scored] if decide else None)
            if reason:
                break
        if stop == len(pseudo):
            break
    reason = reason or "n_max"
    tau = combine_thresholds(self_calibrated_threshold(pseudo[:stop]), floor)
    return {"n": stop, "stopped": reason, "tau": tau, "flagged": np.where(scored, change_score > tau, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="real-like:1,real-like:2,real-like:3,synthetic:2048")
    parser.add_argument("--n-pseudo", type=int, default=100)
    args = parser.parse_args()
    trunk = VGGFeatures(layer=6, weights=os.environ.get("PLANETCD_VGG16_WEIGHTS"))
    print("| pair | patches | pairs scored: tolerance rule | with `decided` | τ used | τ with `decided` | "
          "flagged | flagged with `decided` | same patches |")
    print("|---|---:|---|---|---:|---:|---:|---:|---|")
    for spec in args.pairs.split(","):
        with tempfile.TemporaryDirectory() as folder:
            pre, post = make_pair(spec.strip(), folder)
            r = detect(pre, post, trunk=trunk, n_pseudo=args.n_pseudo, pseudo_tolerance=0.0)
        floor = np.nan if r.thresholds["empirical"] is None else r.thresholds["empirical"]  # the τ detect raised to
        old = replay(r.pseudo_scores, r.change_score, floor, False, args.n_pseudo)
        new = replay(r.pseudo_scores, r.change_score, floor, True, args.n_pseudo)
        print(f"| {spec} | {int(np.isfinite(r.change_score).sum())} | {old['n']} ({old['stopped']}) | "
              f"{new['n']} ({new['stopped']}) | {old['tau']:.4f} | {new['tau']:.4f} | {int(old['flagged'].sum())} | "
              f"{int(new['flagged'].sum())} | {'yes' if np.array_equal(old['flagged'], new['flagged']) else 'no'} |",
              flush=True)


if __name__ == "__main__":
    main()
