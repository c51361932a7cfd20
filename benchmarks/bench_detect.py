"""Speed of change detection: the VGG-16 trunk alone, and `detect` end to end.

Makes a 2048 x 2048 georeferenced pair with the synthetic generator (a real
GeoTIFF round trip), then reports, on this machine:

- trunk pixels per second: the conv3_2 trunk over the same halo tiles
  `detect` uses, for both images (the floor of the method);
- detect pixels per second: `planetcd.detect` end to end (reading,
  registration, features, pooling, pseudo-pair calibration), counted as
  2 x 2048^2 input pixels;
- the ratio of the two times.

Usage::

    python benchmarks/bench_detect.py [--size 2048] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from planetcd.change.detect import detect
from planetcd.datasets.synthetic import make_change_pair, write_geotiff
from planetcd.features import VGGFeatures, pick_device, run_trunk
from planetcd.tiling import halo_tiles


def trunk_seconds(trunk: VGGFeatures, height: int, width: int, tile: int, device, repeats: int = 1) -> float:
    """Time the trunk alone on every halo tile of two images of ``height x width``."""
    s = trunk.stride
    halo = -(-trunk.halo // s) * s
    tiles = halo_tiles(height, width, tile, halo, align=s)
    rng = np.random.default_rng(0)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for t in tiles:
            batch = rng.random((2, 3, t.read[2], t.read[3]), dtype=np.float32)
            run_trunk(trunk, batch, device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    trunk = VGGFeatures(layer=6, weights=args.weights).to(device)

    with tempfile.TemporaryDirectory() as folder:
        pair = make_change_pair((args.size, args.size), seed=1, displacement=(4.2, -6.1),
                                new_craters=[[args.size * 0.4, args.size * 0.6, 20.0]])
        pre = write_geotiff(Path(folder) / "pre.tif", pair.pre)
        post = write_geotiff(Path(folder) / "post.tif", pair.post)
        run_trunk(trunk, np.zeros((1, 3, 64, 64), np.float32), device)  # warm-up
        t_trunk = trunk_seconds(trunk, args.size, args.size, args.tile, device)
        start = time.perf_counter()
        result = detect(pre, post, trunk=trunk, tile_size=args.tile, device=args.device)
        t_detect = time.perf_counter() - start

    pixels = 2 * args.size * args.size
    report = {
        "size": args.size,
        "threads": args.threads,
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "trunk_s": round(t_trunk, 2),
        "trunk_mpx_per_s": round(pixels / t_trunk / 1e6, 3),
        "detect_s": round(t_detect, 2),
        "detect_mpx_per_s": round(pixels / t_detect / 1e6, 3),
        "detect_over_trunk": round(t_detect / t_trunk, 2),
        "detect_timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "n_patches": int(len(result.patches)),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
