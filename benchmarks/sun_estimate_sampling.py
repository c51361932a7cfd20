"""What reading less of a large image costs the sun estimate: the whole image against smaller samples.

``monitor`` and ``segment`` estimate each date's sun from the image (:func:`planetcd.craters.segment.image_sun_estimate`);
on a 4096² image that is most of ``monitor``'s segmentation stage once only the changed neighbourhoods are
segmented (docs/performance.md). This script estimates the sun of synthetic 4096² scenes lit from 300°
(:func:`planetcd.datasets.synthetic.make_change_pair`, seeds 1-3) from the whole image (the product, the
estimator's decimation 2), from the image area-averaged to 2048² (decimation 2 again, 24 px working pixels) and
from the central 2048² window and each 2048² quadrant at full resolution, and prints each estimate, its error
and its time::

    python benchmarks/sun_estimate_sampling.py [--seeds 1,2,3] [--size 4096]

Synthetic scenes, not real ground: a comparison between samplings, not an accuracy claim.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

TRUE_AZIMUTH = 300.0  # make_change_pair's hillshade


def main(argv=None) -> int:
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from planetcd.craters.segment import image_sun_estimate
    from planetcd.craters.sun import angle_difference, estimate_sun_azimuth
    from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
    from planetcd.raster import missing_pixels, open_raster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args(argv)
    size, half = args.size, args.size // 2
    print("| seed | sample | working px | estimate (°) | error (°) | confidence | s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for seed in (int(s) for s in args.seeds.split(",")):
            pair = make_change_pair((size, size), seed=seed, displacement=(4.2, -6.1),
                                    new_craters=[[size * 0.4, size * 0.6, 20.0]])
            path = write_synthetic_geotiff(Path(folder) / f"pre{seed}.tif", pair.pre)
            rows = []
            t0 = time.perf_counter()
            rows.append(("whole image (product)", (size // 2) ** 2, image_sun_estimate(path), time.perf_counter() - t0))
            with open_raster(path) as ds:
                samples = [("area average to half size", (half, half), None)]
                samples.append(("central window", (half, half), Window(size // 4, size // 4, half, half)))
                samples += [(f"quadrant {k}", (half, half), Window(c, r, half, half))
                            for k, (r, c) in enumerate(((0, 0), (0, half), (half, 0), (half, half)))]
                for name, shape, window in samples:
                    t0 = time.perf_counter()
                    data = ds.read(1, window=window, out_shape=shape, resampling=Resampling.average).astype("float32")
                    estimate = estimate_sun_azimuth(data, missing=missing_pixels(data), decimate=2)
                    rows.append((name, (shape[0] // 2) * (shape[1] // 2), estimate, time.perf_counter() - t0))
            for name, pixels, e, seconds in rows:
                error = angle_difference(e.azimuth_deg, TRUE_AZIMUTH)
                print(f"| {seed} | {name} | {pixels} | {e.azimuth_deg:.1f} | {error:+.1f} | {e.confidence:.2f} | "
                      f"{seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
