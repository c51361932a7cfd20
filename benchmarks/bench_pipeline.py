"""Time of ``detect``, ``segment`` and ``monitor`` against their floors, on one georeferenced pair.

Floors (the network work a method cannot avoid, timed on random input of the
same shapes, in the same process and thread count):

- ``detect``: the VGG-16 trunk up to conv3_2 over both images' pixels, each once (no halo);
- ``segment``: the crater UNet over ``segment``'s overlapping tiles of one image (the time includes the
  full-scale catalogue);
- ``monitor``: the detect floor plus the UNet over monitor's blocks (their tiles) of both images.

Prints each time, its floor and the ratio, and ``detect``'s own timings
(registration, features, threshold calibration) so what dominates is visible.

Usage::

    python benchmarks/bench_pipeline.py [--size 1024] [--threads 2] [--method nn] [--model ctx-craters] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from planetcd.change.detect import detect
from planetcd import models
from planetcd.craters.segment import predict_tiles, segment, window_tiles
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.features import VGGFeatures, pick_device, run_trunk
from planetcd.monitor import monitor
from planetcd.tiling import halo_tiles


def _bench_detect_module():
    spec = importlib.util.spec_from_file_location("bench_detect", Path(__file__).with_name("bench_detect.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unet_seconds(model, shapes: list[tuple[int, int]], batch_size: int = 4) -> float:
    """Time the UNet on random tiles of the given ``(h, w)`` shapes (grouped by shape, batched)."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for shape in sorted(set(shapes)):
        n = shapes.count(shape)
        predict_tiles(model, rng.uniform(-1, 1, (n, *shape)).astype(np.float32), "cpu", batch_size)
    return time.perf_counter() - start


def segment_tile_shapes(height: int, width: int, tile: int = 512, overlap: int = 64) -> list[tuple[int, int]]:
    """Tile shapes of :func:`planetcd.craters.segment.window_probability` on a window of ``height x width``."""
    grid, _ = window_tiles(height, width, tile, overlap)
    return [(int(h), int(w)) for h, w in grid[:, 2:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", choices=["nn", "paper"], default="nn")
    parser.add_argument("--model", default="ctx-craters")
    parser.add_argument("--n-pseudo", type=int, default=100)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device("cpu")
    trunk = VGGFeatures(layer=6, weights=args.weights)
    model = models.load(args.model)
    size = args.size
    report = {"size": size, "threads": args.threads, "method": args.method, "torch": torch.__version__}

    with tempfile.TemporaryDirectory() as folder:
        pair = make_change_pair((size, size), seed=1, displacement=(4.2, -6.1), new_craters=[[size * 0.4, size * 0.6, 12.0]])
        pre = write_synthetic_geotiff(Path(folder) / "pre.tif", pair.pre)
        post = write_synthetic_geotiff(Path(folder) / "post.tif", pair.post)
        run_trunk(trunk, np.zeros((1, 3, 64, 64), np.float32), device)  # warm-up
        predict_tiles(model, np.zeros((1, 64, 64), np.float32))

        trunk_s = _bench_detect_module().trunk_seconds(trunk, size, size, 1024, device, halo=False)
        start = time.perf_counter()
        change = detect(pre, post, trunk=trunk, method=args.method, n_pseudo=args.n_pseudo)
        detect_s = time.perf_counter() - start
        report["detect"] = {"seconds": round(detect_s, 2), "floor_s": round(trunk_s, 2), "ratio": round(detect_s / trunk_s, 2),
                            "timings": {k: round(v, 2) for k, v in change.timings.items()}}

        unet_s = unet_seconds(model, segment_tile_shapes(size, size))
        start = time.perf_counter()
        segment(pre, model, scales=[1.0], device="cpu")  # probability, mask and the full-scale catalogue
        segment_s = time.perf_counter() - start
        report["segment"] = {"seconds": round(segment_s, 2), "floor_s": round(unet_s, 2), "ratio": round(segment_s / unet_s, 2)}

        blocks = halo_tiles(size, size, 2048, 192)  # monitor's default blocks
        block_shapes = [s for b in blocks for s in segment_tile_shapes(b.read[2], b.read[3])]
        monitor_unet_s = unet_seconds(model, block_shapes * 2)
        start = time.perf_counter()
        result = monitor(pre, post, model=model, trunk=trunk, method=args.method, n_pseudo=args.n_pseudo)
        monitor_s = time.perf_counter() - start
        floor = trunk_s + monitor_unet_s
        report["monitor"] = {"seconds": round(monitor_s, 2), "floor_s": round(floor, 2), "ratio": round(monitor_s / floor, 2),
                             "timings": {k: round(v, 2) for k, v in result.timings.items()}}

    for name in ("detect", "segment", "monitor"):
        entry = report[name]
        print(f"{name:8s} {entry['seconds']:8.2f} s   floor {entry['floor_s']:8.2f} s   ratio {entry['ratio']:.2f}")
    print("detect timings:", report["detect"]["timings"])
    print("monitor timings:", report["monitor"]["timings"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
