"""Crater F1 of ``planetcd segment`` on CTX tiles cut to a rotated footprint in a nodata collar, by fill of the collar.

    python benchmarks/collar_segment.py [--tiles H,I] [--fills flat,mirror] [--threads 1] [--out DIR]

A map-projected strip seldom fills its raster: the rest is a nodata collar. Each tile of the Mars Crater
Catalogue (2000 x 2000 px, 6 m/px) is cut to two rotated rectangles (0.4 and -0.25 rad, 76 % x 86 % of the
side: about a third of the pixels in the collar, declared nodata 0) and segmented with the default pipeline
(every scale, the chip verifier, its decoys, the estimated sun). Before the network sees them, the collar's
pixels are filled either with the image mean (``flat``, planetcd before the mirror fill) or as the library
does (``mirror``, :func:`planetcd.craters.segment.mirror_fill`). The labelled craters whose centres lie in
the footprint are the truth (DeepMoon rule, craters >= 8 px); the line also counts the detections within
20 px of the footprint's edge and how many of them match a label. One line per tile, cut and fill, then the
mean F1 per fill.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("PLANETCD_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))


def footprint(shape: tuple[int, int], angle: float) -> np.ndarray:
    """True inside a rectangle of 76 % x 86 % of the sides turned by ``angle`` (radians) about the centre."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    u = (xx - cols / 2) * np.cos(angle) + (yy - rows / 2) * np.sin(angle)
    v = -(xx - cols / 2) * np.sin(angle) + (yy - rows / 2) * np.cos(angle)
    return (np.abs(u) < 0.38 * cols) & (np.abs(v) < 0.43 * rows)


def depth_at(depth: np.ndarray, craters: np.ndarray) -> np.ndarray:
    """``depth`` (pixels into the footprint) at the centres ``x, y`` of ``craters`` ``(n, >=2)``."""
    rows = np.clip(np.round(craters[:, 1]).astype(int), 0, depth.shape[0] - 1)
    cols = np.clip(np.round(craters[:, 0]).astype(int), 0, depth.shape[1] - 1)
    return depth[rows, cols]


def flat_fill(data, missing, mean, sigma=None):
    """The image mean in every missing pixel (planetcd's fill before :func:`~planetcd.craters.segment.mirror_fill`)."""
    return np.where(missing, np.float32(mean), np.asarray(data, np.float32)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="H,I")
    parser.add_argument("--fills", default="flat,mirror")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="folder for the collared GeoTIFFs (default: a temporary one)")
    args = parser.parse_args()

    import tempfile

    import rasterio
    import torch
    from PIL import Image
    from scipy import ndimage

    import planetcd.craters.segment as engine
    from planetcd.craters.match import match_craters
    from planetcd.datasets.crater_labels import read_voc_boxes

    torch.set_num_threads(args.threads)
    library_fill = engine.mirror_fill
    out = Path(args.out or tempfile.mkdtemp(prefix="collar_segment_"))
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[float]] = {}
    for tile in args.tiles.split(","):
        image = np.asarray(Image.open(SHARED / "data" / "ctx-mc11e" / "images" / f"MC11E-{tile}.png").convert("L"))
        truth_all = np.asarray(read_voc_boxes(SHARED / "data" / "ctx-mc11e" / "annotations" / "clustered"
                                              / f"MC11E-{tile}.xml"))[:, :3]
        for k, angle in enumerate((0.4, -0.25)):
            inside = footprint(image.shape, angle)
            depth = ndimage.distance_transform_edt(inside)
            path = out / f"MC11E-{tile}-cut{k}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=image.shape[1], height=image.shape[0], count=1,
                               dtype="uint8", nodata=0) as dst:
                dst.write(np.where(inside, np.maximum(image, 1), 0).astype(np.uint8)[None])

            truth = truth_all[depth_at(depth, truth_all) > 0]
            for fill in args.fills.split(","):
                engine.mirror_fill = flat_fill if fill == "flat" else library_fill
                t0 = time.perf_counter()
                try:
                    result = engine.segment(path, device="cpu", precision="fp32", pixel_size_m=6.0)
                finally:
                    engine.mirror_fill = library_fill
                det = result.catalog.pixels
                match = match_craters(det, truth, mode="deepmoon", min_diameter_px=8)
                hit = np.zeros(len(det), bool)
                hit[match.pairs[:, 0]] = True
                edge = (depth_at(depth, det) <= 20) & (2 * det[:, 2] >= 8)
                scores.setdefault(fill, []).append(match.f1)
                print(f"MC11E-{tile} cut {k} {fill:6s} P={match.precision:.3f} R={match.recall:.3f} F1={match.f1:.3f}"
                      f"  within 20 px of the edge: {int(edge.sum())} detections, {int((edge & hit).sum())} matched"
                      f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    for fill, values in scores.items():
        print(f"{fill}: mean F1 {np.mean(values):.3f} over {len(values)} cuts")


if __name__ == "__main__":
    main()
