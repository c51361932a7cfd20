"""Peak memory of ``detect`` and ``monitor`` on a pair larger than memory would allow as whole arrays.

1. ``make``: writes a SIZE x SIZE georeferenced pair (uint16 GeoTIFF, tiled)
   strip by strip: real CTX texture (MC11E-H, a validation tile, mirrored
   so the texture is continuous), post displaced by a sub-pixel shift, 10 %
   brighter, noisier, with a few fresh craters. No full-size array is ever
   built: memory is one strip of ``STRIP`` rows.
2. ``run``: runs ``detect`` (or ``monitor``, or monitor's segmentation stage alone:
   ``segment-blocks``) on it in a child process and
   samples the child's peak resident memory (``VmHWM``) every second, with a
   time limit; the child prints its progress, so a run stopped by the limit
   says how much of the image it covered.

Usage::

    python benchmarks/bench_memory.py make /tmp/big --size 20000
    python benchmarks/bench_memory.py run /tmp/big --what detect --time-limit 600 [--json out.json]
    python benchmarks/bench_memory.py run /tmp/big --what segment-blocks --time-limit 300

Requires ``../shared`` (or ``$PLANETCD_SHARED``) for the texture and the VGG-16 weights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STRIP = 1024
SHIFT = (3.3, -5.6)


def shared_dir() -> Path:
    return Path(os.environ.get("PLANETCD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def mirrored(texture: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``texture`` repeated with mirror symmetry (continuous at tile edges), sampled at integer ``rows x cols``."""
    def fold(index: np.ndarray, n: int) -> np.ndarray:
        index = np.mod(index, 2 * n)
        return np.where(index < n, index, 2 * n - 1 - index)

    return texture[np.ix_(fold(rows, texture.shape[0]), fold(cols, texture.shape[1]))]


def strip_pair(texture: np.ndarray, row0: int, rows: int, width: int, craters: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Pre and post rows ``row0 .. row0 + rows`` (float32, 0..1) of the infinite mirrored scene."""
    from scipy import ndimage

    from planetcd.datasets.synthetic import add_fresh_crater

    margin = 8
    r = np.arange(row0 - margin, row0 + rows + margin)
    c = np.arange(-margin, width + margin)
    ground = mirrored(texture, r, c)
    changed = ground.copy()
    for y, x, radius in craters:
        if row0 + 4 * radius <= y < row0 + rows - 4 * radius:
            y0, x0 = int(y - row0 + margin), int(x + margin)
            half = int(4 * radius)
            window = changed[y0 - half : y0 + half, max(0, x0 - half) : x0 + half]
            window[:] = add_fresh_crater(window, half, min(half, x0), radius, halo="none")
    post = ndimage.shift(changed, SHIFT, order=1, mode="nearest")[margin:-margin, margin:-margin]
    post = post * 1.1 + 0.02 + rng.normal(0.0, 0.01, post.shape).astype(np.float32)
    return ground[margin:-margin, margin:-margin], post.astype(np.float32)


def make(folder: Path, size: int, seed: int = 0) -> dict:
    """Write ``pre.tif`` and ``post.tif`` of ``size x size`` px, strip by strip."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from planetcd.datasets.synthetic import MARS_EQC_WKT

    folder.mkdir(parents=True, exist_ok=True)
    texture = np.asarray(Image.open(shared_dir() / "data" / "ctx-mc11e" / "images" / "MC11E-H.png").convert("L"),
                         np.float32) / 255.0
    rng = np.random.default_rng(seed)
    n_craters = max(3, size * size // 20_000_000)
    craters = np.column_stack([rng.uniform(100, size - 100, n_craters), rng.uniform(100, size - 100, n_craters),
                               rng.uniform(8, 16, n_craters)])
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint16", "crs": MARS_EQC_WKT,
               "transform": from_origin(1_000_000.0, 500_000.0, 6.0, 6.0), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "BIGTIFF": "YES"}
    start = time.perf_counter()
    with rasterio.open(folder / "pre.tif", "w", **profile) as pre_dst, rasterio.open(folder / "post.tif", "w", **profile) as post_dst:
        for row0 in range(0, size, STRIP):
            rows = min(STRIP, size - row0)
            pre, post = strip_pair(texture, row0, rows, size, craters, rng)
            window = Window(0, row0, size, rows)
            pre_dst.write(np.clip(np.round(pre * 3000), 0, 65535).astype(np.uint16), 1, window=window)
            post_dst.write(np.clip(np.round(post * 3000), 0, 65535).astype(np.uint16), 1, window=window)
    np.savetxt(folder / "new_craters.csv", craters, delimiter=",", header="y,x,radius", comments="")
    return {"size": size, "strip_rows": STRIP, "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


CHILD = r"""
import sys, time, logging
import torch
torch.set_num_threads({threads})
from planetcd.runtime import tune_allocator_from_env
tune_allocator_from_env()  # as the planetcd command does: PLANETCD_MALLOC_TUNING=on keeps freed memory
what, pre, post, out = sys.argv[1:5]
t0 = time.perf_counter()
if what == "detect":
    from planetcd.change.detect import detect
    result = detect(pre, post, method="{method}", progress=True, weights={weights!r}, **{tile_option!r})
    print("RESULT features_s=%.1f threshold_s=%.1f" % (result.timings["features_s"], result.timings["threshold_s"]), flush=True)
    result.write(out, overwrite=True)
elif what == "segment-blocks":
    # monitor's segmentation stage alone (both images, block by block, post on pre's grid), with the
    # displacement the generator applied, so it can be measured without the hours of detect before it
    from planetcd import models
    from planetcd.craters.segment import run_blocks
    from planetcd.monitor import monitor_block, prepare_setup
    from planetcd.tiling import halo_tiles
    model = models.cached({model!r})
    setup = prepare_setup(pre, post, {shift!r}, model, prob_threshold=None, tile_size=512, overlap=64, batch_size=4,
                          match_mode="deepmoon")
    from planetcd.raster import open_raster
    with open_raster(pre) as ds:
        blocks = halo_tiles(ds.height, ds.width, 2048, 192)
    for _ in run_blocks(monitor_block, blocks, progress=True, desc="segment", setup=setup, model={model!r}):
        pass
else:
    from planetcd.monitor import monitor
    result = monitor(pre, post, method="{method}", progress=True, weights={weights!r}, model={model!r})
    result.write(out, overwrite=True)
print("DONE seconds=%.1f" % (time.perf_counter() - t0), flush=True)
"""


def _vm_hwm_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) if match else 0


def run(folder: Path, what: str, time_limit: float, threads: int, method: str, model: str,
        tile_size: int | None = None) -> dict:
    """Run ``what`` on the pair in a child process; peak RSS, progress and whether it finished."""
    weights = os.environ.get("PLANETCD_VGG16_WEIGHTS") or str(shared_dir() / "weights" / "vgg16_imagenet_features.pth")
    tile_option = {} if tile_size is None else {"tile_size": tile_size}
    code = CHILD.format(threads=threads, method=method, weights=weights, model=model, shift=SHIFT, tile_option=tile_option)
    log = folder / f"{what}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        child = subprocess.Popen([sys.executable, "-c", code, what, str(folder / "pre.tif"), str(folder / "post.tif"),
                                  str(folder / f"{what}_out")], stdout=fh, stderr=subprocess.STDOUT)
        peak_kb, series, next_mark = 0, [], 0.0
        while child.poll() is None and time.perf_counter() - start < time_limit:
            peak_kb = max(peak_kb, _vm_hwm_kb(child.pid))
            if time.perf_counter() - start >= next_mark:  # the peak every 30 s: a plateau means bounded memory
                series.append((round(time.perf_counter() - start), round(peak_kb / 1024)))
                next_mark += 30.0
            time.sleep(1.0)
        finished = child.poll() is not None
        peak_kb = max(peak_kb, _vm_hwm_kb(child.pid))
        if not finished:
            child.terminate()
        child.wait()
    elapsed = time.perf_counter() - start
    text = log.read_text(errors="replace")
    bars = re.findall(r"(detect|segment):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", text)
    progress = {name: f"{done}/{total}" for name, done, total in bars}  # the last bar line of each stage
    return {"what": what, "method": method, "finished": finished and "DONE" in text, "seconds": round(elapsed, 1),
            "time_limit_s": time_limit, "peak_rss_mb": round(peak_kb / 1024, 1), "progress": progress,
            "peak_rss_mb_over_time": series, "gdal_cachemax": os.environ.get("GDAL_CACHEMAX", "GDAL default (5 % of RAM)"),
            "threads": threads, "tile_size": tile_size or "detect's default", "returncode": child.returncode,
            "log": str(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["make", "run"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--what", choices=["detect", "monitor", "segment-blocks"], default="detect")
    parser.add_argument("--method", choices=["nn", "paper"], default="nn")
    parser.add_argument("--model", default="ctx-craters")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=None, help="detect's tile side [default: detect's].")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.action == "make":
        report = make(args.folder, args.size)
    else:
        report = run(args.folder, args.what, args.time_limit, args.threads, args.method, args.model, args.tile_size)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
