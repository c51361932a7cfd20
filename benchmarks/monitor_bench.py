"""monitor_bench: recall of ``planetcd monitor`` on real CTX/HRSC scenes with real craters implanted between dates.

Each scene is a window of a real image (pre) and the same ground again (post) with 1–3 *real* craters cut
from the labelled positions of *another* image (radius 4–25 px), turned about its centre so that it is lit as
the scene is (both images' suns estimated; since 2026-12-03), pasted in with a soft mask (weight 1 inside
1.1 r, 0 beyond 1.7 r; brightness matched on the 1.2–1.8 r ring), then displaced (sub-pixel, up to 3 px per
axis), blurred (Gaussian σ 0–1 px), given a gain (0.85–1.2), an offset (±0.03) and noise (σ 0.005–0.015).

Scenes (seeded, reproducible): the tiles the segmenter did not train on — MC11E-H split into its roughest
("H-knobby") and smoothest ("H-smooth") windows by high-pass roughness, MC11E-I, the HRSC holdout tile — and
one window of each training tile MC11E-A..G ("train A-G").

For every scene: an implanted crater is *found* when a candidate's centre lies within max(r, 5) px of its
centre; recall in the top 5 (found among the first five candidates), recall overall, and false candidates
(found at no implanted crater) per km² (pixels taken as 6 m, the CTX tiles' size). ``--no-segmenter``
replaces the crater model by one that finds nothing: the change candidates alone. ``--nuisance real`` also
gives post the real nuisances of a second date (:mod:`planetcd.change.nuisance`: relighting, dust-devil
tracks, haze, resolution; the mild draw ``PSEUDO_NUISANCE`` of the change detector's pseudo pairs, which
draws no seam), after the craters are implanted and before the shift, blur, gain and noise.

    python benchmarks/monitor_bench.py [--size 512] [--no-segmenter] [--nuisance real] [--seed N] [--out table.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from planetcd.change.nuisance import PSEUDO_NUISANCE, real_nuisance
from planetcd.craters.sun import angle_difference
from planetcd.datasets.benchmark import load_sources, paste_crater
from planetcd.datasets.synthetic import write_synthetic_geotiff

PIXEL_M = 6.0
RADIUS = (4.0, 25.0)


class FindsNothing(torch.nn.Module):
    """A segmenter that finds no crater (probability 0 everywhere)."""

    metadata = {"name": "finds-nothing", "threshold": 0.5}

    def forward(self, x):
        return x * 0.0


def roughness(image: np.ndarray) -> float:
    """Standard deviation of the high-pass image (σ = 3 px): knobby terrain is rough, plains are smooth."""
    return float((image - ndimage.gaussian_filter(image, 3.0)).std())


def windows(image: np.ndarray, size: int, rng: np.random.Generator, n: int = 40) -> list[tuple[int, int, float]]:
    """``n`` random windows ``(y0, x0, roughness)`` of an image (with a margin for the shift)."""
    m = 8
    out = []
    for _ in range(n):
        y0 = int(rng.integers(m, image.shape[0] - size - m))
        x0 = int(rng.integers(m, image.shape[1] - size - m))
        win = image[y0 : y0 + size, x0 : x0 + size]
        if (win <= 0).mean() > 0.01:
            continue
        out.append((y0, x0, roughness(win)))
    return out


def scenes(sources: dict, size: int, seed: int = 0) -> list[dict]:
    """The scene list: tile, window and terrain group."""
    rng = np.random.default_rng(seed)
    out = []
    h = sorted(windows(sources["MC11E-H"].image, size, rng), key=lambda w: w[2])
    out += [dict(tile="MC11E-H", y0=y, x0=x, group="H-knobby") for y, x, _ in h[-4:]]
    out += [dict(tile="MC11E-H", y0=y, x0=x, group="H-smooth") for y, x, _ in h[:3]]
    for name, group, n in (("MC11E-I", "I", 4), ("hrsc-holdout", "HRSC", 4)):
        out += [dict(tile=name, y0=y, x0=x, group=group) for y, x, _ in windows(sources[name].image, size, rng, n)]
    for c in "ABCDEFG":
        name = f"MC11E-{c}"
        y, x, _ = windows(sources[name].image, size, rng, 1)[0]
        out.append(dict(tile=name, y0=y, x0=x, group="train A-G"))
    return out


def make_scene(scene: dict, sources: dict, size: int, index: int, folder: Path, nuisance: str = "none", seed: int = 0
               ) -> tuple[str, str, np.ndarray]:
    """Write the pair of one scene; returns the paths and the implanted craters ``(n, 3)`` (row, col, r) in pre pixels.

    ``nuisance="real"``: post (craters implanted) first gets the real nuisances of a second date
    (:func:`planetcd.change.nuisance.real_nuisance` with the mild draw
    :data:`~planetcd.change.nuisance.PSEUDO_NUISANCE` of the change detector's pseudo pairs, from its own
    seeded generator, so the craters, shift, blur, gain and noise are those of the plain scene).
    """
    rng = np.random.default_rng([7, index] if seed == 0 else [7, seed, index])
    src = sources[scene["tile"]]
    m = 8
    y0, x0 = scene["y0"] - m, scene["x0"] - m
    ground = src.image[y0 : y0 + size + 2 * m, x0 : x0 + size + 2 * m].astype(np.float64)
    donors_from = [n for n in sources if n != scene["tile"] and len(sources[n].craters)]
    truth, post_ground = [], ground
    for _ in range(int(rng.integers(1, 4))):
        donor_src = sources[donors_from[int(rng.integers(len(donors_from)))]]
        d = donor_src.craters
        ok = (d[:, 2] >= RADIUS[0]) & (d[:, 2] <= RADIUS[1])
        half = np.ceil(1.8 * d[:, 2]) + 3
        ok &= (d[:, 0] > half) & (d[:, 1] > half) & (d[:, 0] < donor_src.image.shape[1] - half) & \
              (d[:, 1] < donor_src.image.shape[0] - half)
        donor = d[rng.choice(np.flatnonzero(ok))]
        for _try in range(50):
            gy, gx = rng.uniform(40, size - 40, 2)
            if all(np.hypot(gy - ty, gx - tx) > 2.5 * (tr + donor[2]) for ty, tx, tr in truth):
                break
        # the donor lit as the scene is (both images' suns estimated): a crater lit from elsewhere than its
        # ground is no new crater a real second date shows (before 2026-12-03 the donors were pasted unturned)
        turn = 0.0
        if src.sun_azimuth is not None and donor_src.sun_azimuth is not None:
            turn = float(angle_difference(src.sun_azimuth, donor_src.sun_azimuth))
        post_ground = paste_crater(post_ground, donor_src.image, donor[1], donor[0], donor[2], gy + m, gx + m, turn)
        truth.append((gy, gx, float(donor[2])))
    if nuisance == "real":
        nuisance_rng = np.random.default_rng([11, index] if seed == 0 else [11, seed, index])
        post_ground = real_nuisance(np.clip(post_ground, 0.0, 1.0), nuisance_rng, PSEUDO_NUISANCE).astype(np.float64)
    elif nuisance != "none":
        raise ValueError(f"nuisance must be 'none' or 'real', got {nuisance!r}")
    shift = rng.uniform(-3, 3, 2)
    post = ndimage.shift(post_ground, shift, order=3, mode="nearest")
    post = ndimage.gaussian_filter(post, rng.uniform(0.0, 1.0))
    post = post * rng.uniform(0.85, 1.2) + rng.uniform(-0.03, 0.03) + rng.normal(0, rng.uniform(0.005, 0.015), post.shape)
    pre = ground[m:-m, m:-m]
    post = np.clip(post[m:-m, m:-m], 1e-3, None)  # no zero pixel (zero reads as missing)
    pre = np.clip(pre, 1e-3, None)
    a = write_synthetic_geotiff(folder / f"s{index:02d}_pre.tif", pre.astype(np.float32), pixel_size=PIXEL_M)
    b = write_synthetic_geotiff(folder / f"s{index:02d}_post.tif", post.astype(np.float32), pixel_size=PIXEL_M)
    return a, b, np.array(truth)


def score_scene(result, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(implanted, found in top 5, found, false candidates)."""
    table = result.table()
    x, y = np.asarray(table["x_px"], float), np.asarray(table["y_px"], float)
    true = np.zeros(len(x), bool)
    top5 = found = 0
    for gy, gx, r in truth:
        hit = np.flatnonzero(np.hypot(x - gx, y - gy) <= max(r, 5.0))
        true[hit] = True
        found += bool(len(hit))
        top5 += bool(len(hit)) and hit[0] < 5
    return len(truth), int(top5), int(found), int((~true).sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-segmenter", action="store_true")
    parser.add_argument("--tta", action="store_true", help="the segmenter's flip averaging (slower)")
    parser.add_argument("--n-pseudo", type=int, default=40)
    parser.add_argument("--nuisance", choices=("none", "real"), default="none",
                        help="real: post also gets the real nuisances of a second date (mild draw, PSEUDO_NUISANCE)")
    parser.add_argument("--catalogues", choices=("near-change", "all"), default="near-change",
                        help="what monitor segments (its --catalogues; default: monitor's, near-change)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    parser.add_argument("--seed", type=int, default=0,
                        help="scene draw: 0 is the development set (the constants of planetcd.monitor were set on it); "
                             "any other seed draws other windows and craters")
    args = parser.parse_args(argv)
    from planetcd import models
    from planetcd.features import VGGFeatures
    from planetcd.monitor import monitor

    names = [f"MC11E-{c}" for c in "ABCDEFGHI"] + ["hrsc-holdout"]
    sources = {s.name: s for s in load_sources(names, allow_training_images=True)}
    model = FindsNothing() if args.no_segmenter else models.load("ctx-craters")
    trunk = VGGFeatures(layer=6)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, scene in enumerate(scenes(sources, args.size, args.seed)):
            pre, post, truth = make_scene(scene, sources, args.size, k, Path(tmp), args.nuisance, args.seed)
            t0 = time.perf_counter()
            result = monitor(pre, post, model=model, tta=args.tta, trunk=trunk, n_pseudo=args.n_pseudo, seed=0,
                             catalogues=args.catalogues)
            n, top5, found, false = score_scene(result, truth)
            types = result.table()["type"]
            rows.append(dict(scene, n=n, top5=top5, found=found, false=false, n_cand=len(result),
                             n_new=int(np.sum(types == "new_crater")), seconds=time.perf_counter() - t0))
            print(f"{k:2d} {scene['group']:10s} {scene['tile']:13s} implanted {n} top5 {top5} found {found} "
                  f"false {false} candidates {len(result)} ({rows[-1]['n_new']} new_crater) "
                  f"{rows[-1]['seconds']:.1f}s", flush=True)
    km2 = (args.size * PIXEL_M / 1000) ** 2
    lines = ["| group | scenes | craters | recall top 5 | recall | false / km² |", "| --- | --- | --- | --- | --- | --- |"]
    groups = list(dict.fromkeys(r["group"] for r in rows)) + ["all"]
    for g in groups:
        sel = [r for r in rows if g == "all" or r["group"] == g]
        n = sum(r["n"] for r in sel)
        lines.append(f"| {g} | {len(sel)} | {n} | {sum(r['top5'] for r in sel) / n:.2f} | "
                     f"{sum(r['found'] for r in sel) / n:.2f} | {sum(r['false'] for r in sel) / (len(sel) * km2):.2f} |")
    mode = "segmenter replaced by one that finds nothing" if args.no_segmenter else "ctx-craters" + (" (tta)" if args.tta else "")
    if args.nuisance == "real":
        mode += ", real nuisances on post (PSEUDO_NUISANCE)"
    text = f"{len(rows)} scenes of {args.size}² px, {mode}\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
