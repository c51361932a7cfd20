"""Speed of change detection: the VGG-16 trunk on the two images' pixels, and `detect` end to end.

On a pair (``--pair FOLDER`` with ``pre.tif`` and ``post.tif``, e.g. written by
``bench_memory.py make``; or a synthetic ``--size`` pair made here, a real
GeoTIFF round trip) reports, on this machine:

- the floor: the conv3_2 trunk alone over the two images' pixels, each pixel
  once (non-overlapping ``--floor-tile`` tiles of random data, no halo);
- ``planetcd.detect`` end to end for each ``--methods`` entry (reading,
  registration, features in halo tiles, pooling, pseudo-pair calibration of τ),
  with its own timings and the ratio detect / floor;
- the load average before and after (the machine may be shared) and the peak RSS.

Usage::

    python benchmarks/bench_detect.py --pair /tmp/pair4096 --methods paper,nn [--tile 1024] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from planetcd.change.detect import detect
from planetcd.datasets.synthetic import make_change_pair, write_geotiff
from planetcd.features import VGGFeatures, pick_device, run_trunk
from planetcd.raster import open_raster
from planetcd.tiling import halo_tiles


def trunk_seconds(trunk: VGGFeatures, height: int, width: int, tile: int, device, repeats: int = 1,
                  halo: bool = True) -> float:
    """Time the trunk alone on both images of ``height x width``: detect's halo tiles, or (``halo=False``)
    non-overlapping tiles, so each pixel goes through the trunk once."""
    s = trunk.stride
    tiles = halo_tiles(height, width, tile, -(-trunk.halo // s) * s if halo else 0, align=s)
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
    parser.add_argument("--pair", type=Path, default=None, help="Folder with pre.tif and post.tif.")
    parser.add_argument("--size", type=int, default=2048, help="Side of the synthetic pair (without --pair).")
    parser.add_argument("--methods", default="paper", help="Comma-separated detect methods to time.")
    parser.add_argument("--tile", type=int, default=None, help="detect's --tile-size [default: detect's].")
    parser.add_argument("--floor-tile", type=int, default=1024, help="Tile side of the floor (no halo).")
    parser.add_argument("--n-pseudo", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    trunk = VGGFeatures(layer=6, weights=args.weights).to(device)
    tile_option = {} if args.tile is None else {"tile_size": args.tile}
    report = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "threads": args.threads,
              "device": str(device), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}

    with tempfile.TemporaryDirectory() as folder:
        if args.pair is not None:
            pre, post = args.pair / "pre.tif", args.pair / "post.tif"
        else:
            pair = make_change_pair((args.size, args.size), seed=1, displacement=(4.2, -6.1),
                                    new_craters=[[args.size * 0.4, args.size * 0.6, 20.0]])
            pre = write_geotiff(Path(folder) / "pre.tif", pair.pre)
            post = write_geotiff(Path(folder) / "post.tif", pair.post)
            del pair
        with open_raster(pre) as ds:
            height, width = ds.height, ds.width
        report["pair"] = str(args.pair) if args.pair is not None else f"synthetic {args.size}"
        report["shape"] = [height, width]
        run_trunk(trunk, np.zeros((1, 3, 64, 64), np.float32), device)  # warm-up
        floor = trunk_seconds(trunk, height, width, args.floor_tile, device, halo=False)
        pixels = 2 * height * width
        report["floor_s"] = round(floor, 2)
        report["floor_mpx_per_s"] = round(pixels / floor / 1e6, 3)
        for method in args.methods.split(","):
            start = time.perf_counter()
            result = detect(pre, post, trunk=trunk, method=method, n_pseudo=args.n_pseudo, device=args.device,
                            **tile_option)
            seconds = time.perf_counter() - start
            report[method] = {
                "detect_s": round(seconds, 2),
                "detect_over_floor": round(seconds / floor, 3),
                "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
                "tile_size": result.params["tile_size"],
                "n_patches": int(len(result.patches)),
                "tau": result.tau,
                "n_pseudo_pre_reused": result.params.get("n_pseudo_pre_reused"),
            }
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
