"""A training-free crater candidate generator from the sun's shading, tried and dropped (issue 13).

    python benchmarks/shading_candidates.py --tiles A,G,H

Physics first: lit from the left (the canonical frame), a crater is dark on its left inner wall and bright on
its right one, and its outer flanks the other way round. Each tile is turned to the canonical frame with its
*estimated* sun azimuth; at 22 radii (3–80 px, geometric) the normalised cross-correlation with an odd shading
kernel (``x / r`` inside the rim, made orthogonal to a constant and a plane over the disc of 1.5 radii, so an
albedo ramp scores 0) is computed by FFT; its local maxima above 0.2, merged over the radii (non-maximum
suppression, DeepMoon rule), are the candidates. The question was whether such candidates find more of a
tile's labelled craters (≥ 8 px) than the segmenter's, for the chip verifier to sort. The table gives the
recall (DeepMoon rule) among the K best candidates of a 2000² tile. Nothing here is trained or tuned on the
labels: the kernel and the radii were chosen a priori; the labels only score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crater_folds as cf

RADII = np.geomspace(3.0, 80.0, 22)
COUNTS = (1000, 2000, 5000, 10000, 20000)


def shading_kernel(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel, support)`` of side ``2 ceil(1.5 r) + 1``: ``x / r`` inside the rim, minus its least-squares plane
    over the support (the disc of 1.5 radii), so a constant or a linear ramp correlates to 0."""
    n = int(np.ceil(1.5 * radius))
    y, x = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float64)
    rho2 = x * x + y * y
    support = rho2 <= (1.5 * radius) ** 2
    kernel = np.where(rho2 <= radius * radius, x / radius, 0.0)
    plane = np.c_[np.ones(support.sum()), x[support], y[support]]
    coef, *_ = np.linalg.lstsq(plane, kernel[support], rcond=None)
    kernel[support] -= plane @ coef
    kernel[~support] = 0.0
    return kernel, support


def shading_correlation(image: np.ndarray, radii=RADII) -> list[np.ndarray]:
    """Normalised cross-correlation of a canonical-frame image ``(H, W)`` with :func:`shading_kernel` per radius."""
    rows, cols = image.shape
    pad = 2 * int(np.ceil(1.5 * max(radii))) + 1
    shape = (rows + pad, cols + pad)
    spectrum, spectrum2 = np.fft.rfft2(image, shape), np.fft.rfft2(image * image, shape)
    out = []
    for r in radii:
        kernel, support = shading_kernel(r)
        n = kernel.shape[0] // 2
        window = (slice(n, n + rows), slice(n, n + cols))
        k_f = np.fft.rfft2(kernel[::-1, ::-1], shape)
        s_f = np.fft.rfft2(support[::-1, ::-1].astype(np.float64), shape)
        corr = np.fft.irfft2(spectrum * k_f, shape)[window]
        s1 = np.fft.irfft2(spectrum * s_f, shape)[window]
        s2 = np.fft.irfft2(spectrum2 * s_f, shape)[window]
        variance = np.maximum(s2 - s1 * s1 / support.sum(), 1e-6)
        out.append(corr / (np.sqrt((kernel * kernel).sum()) * np.sqrt(variance)))
    return out


def shading_candidates(image: np.ndarray, radii=RADII, floor: float = 0.2) -> np.ndarray:
    """Candidates ``(n, 4)``: x, y, radius (px) and correlation, local maxima over position, merged over radii."""
    from planetcd.craters.match import suppress_duplicates

    rows = []
    for r, corr in zip(radii, shading_correlation(image, radii)):
        peak = (corr == ndimage.maximum_filter(corr, size=max(3, int(np.round(r))))) & (corr > floor)
        yy, xx = np.nonzero(peak)
        rows.append(np.c_[xx, yy, np.full(len(xx), r), corr[yy, xx]])
    found = np.concatenate(rows)
    return found[suppress_duplicates(found, found[:, 3])]


def main(argv=None) -> int:
    from planetcd.craters import sun

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", default="A,G,H")
    args = ap.parse_args(argv)
    print("tile  labels>=8px  " + "  ".join(f"recall@{k}" for k in COUNTS) + "  seconds")
    for tile in args.tiles.split(","):
        t0 = time.monotonic()
        image, truth = cf.raw_tile(tile)
        azimuth = cf.tile_azimuth(image)["azimuth_deg"]
        turned, frame = sun.to_canonical(image, azimuth, fill=float(image.mean()))
        standard = (turned.astype(np.float64) - turned.mean()) / turned.std()
        found = frame.craters_to_input(shading_candidates(standard))
        found = found[np.argsort(-found[:, 3])]
        recalls = [cf.score(found[:k], truth, tile).recall for k in COUNTS]
        labels = int((2 * truth[:, 2] >= cf.MIN_DIAMETER_PX).sum())
        print(f"{tile:4s}  {labels:11d}  " + "  ".join(f"{r:10.3f}" for r in recalls) + f"  {time.monotonic() - t0:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
