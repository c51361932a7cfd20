"""Crater segmentation speed: pixels per second on a 2000×2000 tile with 2 CPU threads.

    python benchmarks/bench_segment.py [--model ctx-craters] [--threads 2] [--tile 512] [--overlap 64] [--repeat 2]
        [--tta model|on|off] [--scales 2,1,0.5] [--precision auto|fp32|bf16]
    python benchmarks/bench_segment.py --profile    # where one default catalogue spends its time, then stop
    python benchmarks/bench_segment.py --cpu 3      # wall and CPU seconds of 3 default catalogues, then stop

Uses CTX tile MC11E-I from ``$PLANETCD_SHARED`` (default ``../shared``) when
present, else a synthetic 2000×2000 image (the speed does not depend on the
content).  Reports the whole-file path (``segment`` with the full-scale
catalogue only, then ``SegmentResult.write``: read, tiles, blending, GeoTIFF
writes), the crater catalogue as ``planetcd segment`` makes it (the model's
extraction settings: its other scales, components, contrast screening, the chip
verifier and its decoy pass; and the same with ``verify=False`` and with ``decoy_fdr=False``, interleaved),
and the network alone.  ``--tta``:
flip averaging as the model's registry entry says (``model``), or forced on/off;
``--scales``: the catalogue's scales instead of the model's (as ``planetcd segment --scales``).
``--cpu N``: N default catalogues after a warm-up, one JSON line each with the wall seconds, the CPU seconds
of the process (``time.process_time``, both threads counted: a reading that a neighbouring job on the machine
moves less than the wall time) and the load average. ``--profile``: one catalogue after a warm-up, under
``cProfile``; prints the cumulative seconds and calls of the steps that read, clip and resample the image,
segment it and verify its craters. With ``PYTHONPATH`` set to another checkout, both measure that code (for
``--profile``, a step it lacks prints no calls).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from planetcd.runtime import tune_allocator_from_env

    tune_allocator_from_env()  # as the planetcd command does: PLANETCD_MALLOC_TUNING=on keeps freed memory
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ctx-craters")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--tta", choices=["model", "on", "off"], default="model")
    ap.add_argument("--scales", default=None, help="catalogue scales, e.g. 2,1,0.5 (default: the model's)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="segment's precision (and the network-alone line's); bench_detect.py --floors --segment "
                         "compares fp32 and bf16 interleaved")
    ap.add_argument("--profile", action="store_true", help="profile one default catalogue instead of timing")
    ap.add_argument("--cpu", type=int, default=0, metavar="N",
                    help="time N default catalogues (wall and CPU seconds) after a warm-up instead")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import rasterio

    from planetcd import models
    from planetcd.craters.segment import parse_scales, segment
    from planetcd.raster import open_raster

    scales = parse_scales(args.scales)
    model = models.load(args.model, tta=None if args.tta == "model" else args.tta == "on")
    shared = Path(os.environ.get("PLANETCD_SHARED", REPO.parent / "shared"))
    tile_png = shared / "data" / "ctx-mc11e" / "images" / "MC11E-I.png"
    with tempfile.TemporaryDirectory() as tmp:
        if tile_png.exists():
            src = tile_png
        else:
            src = Path(tmp) / "synthetic.tif"
            data = np.random.default_rng(0).integers(1, 255, (2000, 2000)).astype(np.uint8)
            with rasterio.open(src, "w", driver="GTiff", width=2000, height=2000, count=1, dtype="uint8") as dst:
                dst.write(data, 1)
        with open_raster(src) as ds:
            n_px = ds.width * ds.height
            shape = (ds.height, ds.width)
        times, catalog_times, unverified_times, no_decoy_times = [], [], [], []
        options = dict(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch_size, device="cpu",
                       precision=args.precision)
        if args.profile:
            return profile_catalogue(src, model, scales, options)
        if args.cpu:
            return cpu_catalogues(src, model, scales, options, args.cpu)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            segment(src, model, scales=[1.0], **options).write(Path(tmp) / "out", overwrite=True)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            craters = segment(src, model, scales=scales, **options).catalog
            catalog_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            unverified = segment(src, model, scales=scales, verify=False, **options).catalog
            unverified_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            no_decoys = segment(src, model, scales=scales, decoy_fdr=False, **options).catalog
            no_decoy_times.append(time.perf_counter() - t0)
        from planetcd.precision import autocast, resolve_precision

        x = torch.zeros(1, 1, args.tile, args.tile)
        with torch.inference_mode(), autocast(resolve_precision(args.precision, "cpu"), "cpu"):
            model(x)
            t0 = time.perf_counter()
            for _ in range(3):
                model(x)
            net = (time.perf_counter() - t0) / 3
    best, best_catalog = min(times), min(catalog_times)
    print(f"image            {src.name} {shape[0]}x{shape[1]} px")
    print(f"model            {model.metadata.get('name')} ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"flip averaging {'on' if model.metadata['tta'] else 'off'}")
    print(f"threads          {args.threads} (torch.get_num_threads() = {torch.get_num_threads()}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"tiles            {args.tile} px, overlap {args.overlap} px; precision {args.precision}")
    print(f"segment + write  {best:.2f} s (best of {args.repeat}) = {n_px / best:,.0f} px/s")
    print(f"with catalogue   {best_catalog:.2f} s (best of {args.repeat}) = {n_px / best_catalog:,.0f} px/s "
          f"({len(craters)} craters; scales {', '.join(f'{s:g}' for s in scales or model.metadata.get('extraction', {}).get('scales', [1.0]))})")
    best_unverified = min(unverified_times)
    print(f"  --no-verify    {best_unverified:.2f} s (best of {args.repeat}; {len(unverified)} craters): the chip verifier "
          f"costs {best_catalog - best_unverified:+.2f} s = {best_catalog / best_unverified:.2f} x")
    best_no_decoys = min(no_decoy_times)
    print(f"  --decoy-fdr off {best_no_decoys:.2f} s (best of {args.repeat}; {len(no_decoys)} craters): the decoy pass "
          f"costs {best_catalog - best_no_decoys:+.2f} s = {best_catalog / best_no_decoys:.2f} x")
    print(f"network alone    {net * 1000:.0f} ms per {args.tile}x{args.tile} tile = {args.tile ** 2 / net:,.0f} px/s")
    return 0


#: Steps :func:`profile_catalogue` reports, by function name (planetcd's, and scipy's ``affine_transform``: the
#: turns to and from the sun's canonical frame before commit 946fba7; since then ``affine_resample``'s, and
#: ``affine_transform`` counts only the sun estimate's and other callers').
PROFILED_STEPS = ("read_scaled", "full_read", "rescale_read", "read_band", "clip_impulses", "gdal_resample",
                  "image_probability", "segment_block", "extract_craters", "affine_transform", "affine_resample",
                  "mirror_fill", "intensity_stats", "verifier_pyramid", "verify_craters", "estimate_sun_azimuth",
                  "refined_sun_azimuth")


def cpu_catalogues(src, model, scales, options, n: int) -> int:
    """Print wall and CPU seconds of ``n`` default catalogues after a warm-up, one JSON line each."""
    import json

    from planetcd.craters.segment import segment

    segment(src, model, scales=scales, **options)
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        craters = segment(src, model, scales=scales, **options).catalog
        print(json.dumps({"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2),
                          "craters": len(craters), "load": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


def profile_catalogue(src, model, scales, options) -> int:
    """Print where one catalogue (after a warm-up run) spends its time, per step of :data:`PROFILED_STEPS`."""
    import cProfile
    import pstats

    import planetcd
    from planetcd.craters.segment import segment

    segment(src, model, scales=scales, **options)
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    craters = segment(src, model, scales=scales, **options).catalog
    profiler.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(profiler).stats
    print(f"planetcd         {Path(planetcd.__file__).parent}")
    print(f"catalogue        {total:.2f} s under the profiler, {len(craters)} craters")
    for step in PROFILED_STEPS:
        # cumulative time of the outermost calls: a step that calls itself (or another listed step) counts once
        found = [(value[3], value[1]) for key, value in stats.items() if key[2] == step]
        seconds, calls = sum(f[0] for f in found), sum(f[1] for f in found)
        print(f"  {step:<22} {seconds:6.2f} s in {calls} calls" if calls else f"  {step:<22}      - (no calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
