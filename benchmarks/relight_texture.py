"""How much fine texture the generator's relighting adds (a lower sun, or sensor noise read as topography).

    python benchmarks/relight_texture.py [--windows 40] [--images MC11E-H,MC11E-I,hrsc-holdout] [--seed 0]
        [--same-elevation] [--noise-floor]

:func:`planetcd.change.nuisance.relight` recovers a height field from the image's shading (linear
photoclinometry) and shades it under another sun. Sensor noise and compression blocks are shading too, to
that model: integrated along the old sun they can become ridges, which the new sun shows as striations
that no real second date has. This measures how much texture is added, whatever its cause. For a flat plain with white noise only (σ 0.01 on 0.4, where a
real relit image would still be noise), and for ``--windows`` random 150 px windows of each source image
(the image's own sun, estimated as the benchmark generator does), each relit as a ``real-nuisance`` date
is (elevations drawn in :data:`~planetcd.change.nuisance.REAL_NUISANCE`'s range, the sun turned within
± 45°): the ratio of the high-pass standard deviation (image minus its Gaussian blur, σ 2 px) after
relighting to before. 1 means the fine texture is kept as it was; the relighting is meant to move shading,
not to make texture. Printed per image: the median ratio, its 90th percentile, and the share of windows
whose fine texture more than doubled; and the same for the smoothest third of the windows (lowest
high-pass deviation), where noise is most of the texture. A sun lower on the second date shows the same
ground with more contrast, physically; ``--same-elevation`` turns the sun only, where the fine texture of
real ground should stay about as it was. Each line also says how many of the windows that more than
doubled lie mostly in shadow (more than half their pixels in shadow by the relighting's own rule,
:func:`~planetcd.change.nuisance.in_shadow`: at most 0.2 x the window's mean): shadow under one sun is
ground another sun lights, and its texture then appears on a real second date too. ``--noise-floor``:
relight with :func:`~planetcd.change.nuisance.height_from_shading`'s ``noise_floor``. No network; a few
seconds.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from planetcd.change.nuisance import REAL_NUISANCE, in_shadow, relight

WINDOW = 150


def fine_texture(image: np.ndarray, sigma: float = 2.0) -> float:
    """Standard deviation of ``image - gaussian(image, sigma)`` (the texture finer than about ``sigma`` px)."""
    image = np.asarray(image, np.float64)
    return float((image - ndimage.gaussian_filter(image, sigma)).std())


def relit_ratio(window: np.ndarray, azimuth: float, rng: np.random.Generator, same_elevation: bool = False,
                noise_floor: bool = False) -> float:
    """Fine texture of ``window`` relit as one ``real-nuisance`` date, over that of ``window``
    (``same_elevation``: the sun only turned, its elevation kept; ``noise_floor``: of the relighting)."""
    e0, e1 = rng.uniform(*REAL_NUISANCE.sun_elevation, size=2)
    e1 = e0 if same_elevation else e1
    turn = rng.uniform(-REAL_NUISANCE.sun_azimuth_change, REAL_NUISANCE.sun_azimuth_change)
    out = relight(window, azimuth, e0, azimuth + turn, e1, noise_floor=noise_floor)
    return fine_texture(out) / max(fine_texture(window), 1e-9)




def summary(name: str, ratios: np.ndarray, shadowed: np.ndarray | None = None) -> str:
    doubled = ratios > 2
    line = (f"{name}: {len(ratios)} windows, median ratio {np.median(ratios):.2f}, 90th percentile "
            f"{np.percentile(ratios, 90):.2f}, more than doubled {np.mean(doubled):.0%}")
    if shadowed is not None and doubled.any():
        line += f" ({int(np.sum(doubled & shadowed))} of those {int(doubled.sum())} mostly in shadow)"
    return line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--images", default="MC11E-H,MC11E-I,hrsc-holdout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--same-elevation", action="store_true",
                    help="turn the sun only, keep its elevation (a lower sun shows more texture, physically)")
    ap.add_argument("--noise-floor", action="store_true", help="relight with height_from_shading's noise_floor")
    args = ap.parse_args(argv)
    from planetcd.datasets.benchmark import load_sources

    rng = np.random.default_rng(args.seed)
    flat = [relit_ratio(np.clip(0.4 + rng.normal(0, 0.01, (WINDOW, WINDOW)), 0, 1).astype(np.float32),
                        float(rng.uniform(0, 360)), rng, args.same_elevation, args.noise_floor)
            for _ in range(args.windows)]
    print(summary("flat plain, white noise only", np.asarray(flat)))
    for source in load_sources(args.images.split(",")):
        if source.sun_azimuth is None:
            print(f"{source.name}: no sun estimate, skipped")
            continue
        rows, cols = source.image.shape
        windows = []
        while len(windows) < args.windows:
            y0, x0 = int(rng.integers(0, rows - WINDOW)), int(rng.integers(0, cols - WINDOW))
            window = source.image[y0:y0 + WINDOW, x0:x0 + WINDOW].astype(np.float32)
            if np.isfinite(window).all() and window.std() > 0:
                windows.append(window)
        ratios = np.asarray([relit_ratio(w, source.sun_azimuth, rng, args.same_elevation, args.noise_floor)
                             for w in windows])
        texture = np.asarray([fine_texture(w) for w in windows])
        shadowed = np.asarray([in_shadow(w).mean() > 0.5 for w in windows])
        smooth = texture <= np.percentile(texture, 100 / 3)
        print(summary(f"{source.name} (sun {source.sun_azimuth:.0f} deg)", ratios, shadowed))
        print(summary(f"{source.name}, smoothest third", ratios[smooth], shadowed[smooth]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
