"""Real nuisances of a second date: relighting (photoclinometry), albedo streaks, mosaic seams, haze, resolution.

A second orbital image of the same ground differs from the first in more than
noise, gain and a shift. This module renders the differences that are not
change, on single-band images ``(rows, cols)`` in ``0..1``; the benchmark
generator (:mod:`planetcd.datasets.benchmark`, preset ``real-nuisance``) and
the pseudo-unchanged pairs (:func:`planetcd.change.threshold.apply_nuisance`)
draw them from here.

Sun convention (as :mod:`planetcd.craters.sun`): ``azimuth`` is the direction
the light comes FROM, degrees clockwise from the image top; ``elevation`` is
the sun's angle above the horizon, degrees.

Relighting model (:func:`relight`): the ground is Lambertian with a varying
albedo. Linearised, ``I / mean(I) ≈ 1 − cot(e) · (∇h · d)`` where ``d``
is the horizontal unit vector toward the sun, so the slope along ``d`` is
``(1 − I / mean(I)) · tan(e)``; integrating it along ``d`` (in Fourier space,
regularised where the frequency is perpendicular to ``d``) gives a height field
``h`` (:func:`height_from_shading`). The image's power at frequencies perpendicular
to ``d``, where shading has none, is taken band by band as its floor of albedo and
noise (:func:`shading_share`) and regularises the integration (a Wiener filter), so
sensor noise is not integrated into ridges along the sun. The image is re-rendered under the new sun
with the full Lambertian law, and what the model does not explain (the ratio of
the image to its own rendering under the old sun: albedo, noise) is kept where
the old sun lit the ground (shadows hold no albedo and are lit anew).
Geometry does not move: a crater's bowl stays where it is, only its bright and
dark halves turn with the sun.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage


def _toward_sun(azimuth: float) -> tuple[float, float]:
    """Horizontal unit vector ``(drow, dcol)`` pointing to the sun (light FROM ``azimuth``, clockwise from top)."""
    a = np.deg2rad(azimuth)
    return -float(np.cos(a)), float(np.sin(a))


def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]


def shading_share(slope: np.ndarray, azimuth: float, n_bands: int = 12, cone: float = 0.3
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Share of the power along the sun that is shading, per band of spatial frequency.

    Shading (the slope toward the sun) has no power at frequencies perpendicular to the sun's direction
    ``d``; albedo and noise have about as much there as along ``d``. So in each band of radial frequency,
    ``1 − S_perp / S_along`` (clipped to ``0..1``) is the share of the power along ``d`` that is shading,
    where ``S_along`` and ``S_perp`` are the mean power (periodogram of the Hann-tapered window: a mirror
    padding would mix the directions) in the cones ``|cos φ| > √(1 − cone²)`` around ``d`` and
    ``|cos φ| < cone`` around its perpendicular (``φ``: the frequency's angle to ``d``; 0.3: ± 17.5°).

    Parameters
    ----------
    slope : ndarray, shape (rows, cols)
        The image as slope toward the sun (any affine function of the image gives the same shares).
    azimuth : float
        Where the light comes from, degrees clockwise from the top.
    n_bands : int
        Log-spaced bands from one cycle per window to √½ cycles per pixel.

    Returns
    -------
    centres : ndarray, shape (n_bands,)
        The bands' centre frequencies, cycles per pixel.
    share : ndarray, shape (n_bands,)
        In ``0..1``; a band with no frequency in a cone takes its neighbours' value.
    """
    slope = np.asarray(slope, np.float64)
    rows, cols = slope.shape
    taper = np.outer(np.hanning(rows), np.hanning(cols))
    power = np.abs(np.fft.fft2((slope - slope.mean()) * taper)) ** 2
    fy, fx = _frequencies(slope.shape)
    dy, dx = _toward_sun(azimuth)
    radius = np.hypot(fy, fx)
    cos_phi = np.abs(fy * dy + fx * dx) / np.maximum(radius, 1e-12)
    edges = np.geomspace(1.0 / max(rows, cols), np.sqrt(0.5) + 1e-9, n_bands + 1)
    band = np.digitize(radius, edges) - 1
    inside = (band >= 0) & (band < n_bands)
    means = []
    for cone_mask in (cos_phi > np.sqrt(1.0 - cone**2), cos_phi < cone):
        mask = inside & cone_mask
        count = np.bincount(band[mask], minlength=n_bands)
        total = np.bincount(band[mask], power[mask], n_bands)
        filled = np.flatnonzero(count > 0)
        mean = total[filled] / count[filled]
        means.append(np.interp(np.arange(n_bands), filled, mean) if len(filled) else np.zeros(n_bands))
    along, perp = means
    share = np.where(along > 0, 1.0 - perp / np.where(along > 0, along, 1.0), 0.0)
    return np.sqrt(edges[:-1] * edges[1:]), np.clip(share, 0.0, 1.0)


def height_from_shading(image: np.ndarray, azimuth: float, elevation: float, eps: float = 0.02,
                        noise_floor: bool = True) -> np.ndarray:
    """A height field ``(rows, cols)`` (pixels of height per pixel of ground) whose shading under the sun is ``image``.

    Linear photoclinometry: the slope toward the sun is ``(1 − I/Ī) · tan(elevation)``, integrated along
    the sun direction by Fourier division, regularised by ``eps`` (cycles/px) across it (the component
    shading cannot see). Mirror-padded, so the image borders do not wrap.

    ``noise_floor`` (default): the division is regularised by the floor of albedo and noise of each band of
    frequency (:func:`shading_share`: the power perpendicular to the sun): ``conj(k) / (share |k|² +
    (1 − share) (2π r)² + (2π eps)²)``, a Wiener filter without its shrinkage along the sun (where ``|k| = 2πr`` the
    shading is integrated in full, so a crater is relit as before), whose gain falls across the sun as
    the floor grows.
    Without it (the model up to 2026-12-04) all of the image's contrast is slope: sensor noise at
    frequencies nearly perpendicular to the sun is divided by a derivative near zero and integrates into
    ridges along the sun, which a turned sun shows as striations no real second date has
    (docs/benchmarks.md, "A noise floor for the relighting").
    """
    image = np.asarray(image, np.float64)
    mean = image.mean() or 1.0
    slope = (1.0 - image / mean) * np.tan(np.deg2rad(elevation))
    rows, cols = image.shape
    padded = np.pad(slope - slope.mean(), ((0, rows), (0, cols)), mode="symmetric")
    fy, fx = _frequencies(padded.shape)
    dy, dx = _toward_sun(azimuth)
    k = 2j * np.pi * (fy * dy + fx * dx)  # the derivative along d in Fourier space
    if not noise_floor:
        gain = np.conj(k) / (np.abs(k) ** 2 + (2 * np.pi * eps) ** 2)
    else:
        # Per frequency f (radius r, angle φ to d): slope power S = |k|² P_h + N, with P_h the height's power
        # (isotropic: along d, |k| = 2πr and the shading power is share · S_along) and N = (1 − share) · S_along
        # the floor. The Wiener gain conj(k) P_h / (|k|² P_h + N) is divided by ``share`` so that along d it
        # stays 1/k (the shading is not shrunk: a crater is relit in full) while across d, where |k| → 0,
        # it falls to 0 as the floor grows; share = 1 gives the plain division.
        centres, share_by_band = shading_share(slope, azimuth)
        radius = np.hypot(fy, fx)
        share = np.interp(np.log(np.maximum(radius, centres[0])), np.log(centres), share_by_band)
        gain = np.conj(k) / (share * np.abs(k) ** 2 + (1.0 - share) * (2 * np.pi * radius) ** 2 + (2 * np.pi * eps) ** 2)
    height = np.real(np.fft.ifft2(np.fft.fft2(padded) * gain))
    return height[:rows, :cols]


def shade(height: np.ndarray, azimuth: float, elevation: float) -> np.ndarray:
    """Lambertian shading ``cos(incidence)`` (clipped at 0) of a height field under the sun, ``(rows, cols)``."""
    gy, gx = np.gradient(np.asarray(height, np.float64))
    dy, dx = _toward_sun(azimuth)
    e = np.deg2rad(elevation)
    light = np.array([np.cos(e) * dy, np.cos(e) * dx, np.sin(e)])
    # normal ∝ (−∂h/∂row, −∂h/∂col, 1)
    dot = -gy * light[0] - gx * light[1] + light[2]
    return np.clip(dot / np.sqrt(1.0 + gy**2 + gx**2), 0.0, None)


#: A pixel at most this share of its image's mean is in shadow: it holds no albedo (:func:`in_shadow`).
SHADOW_FRACTION = 0.2


def in_shadow(image: np.ndarray) -> np.ndarray:
    """The pixels of ``image`` ``(rows, cols)`` :func:`relight` takes for shadow (at most
    :data:`SHADOW_FRACTION` × the image's mean), bool of the same shape."""
    image = np.asarray(image, np.float64)
    return ~(image > SHADOW_FRACTION * image.mean())


def relight(image: np.ndarray, azimuth: float, elevation: float, new_azimuth: float, new_elevation: float,
            noise_floor: bool = True) -> np.ndarray:
    """The image ``(rows, cols)`` (``0..1``) seen under another sun (module docstring: the model).

    Returns float32 in ``0..1``; the same sun gives the image back (to the regularisation).
    ``noise_floor``: of :func:`height_from_shading` (default; False: every contrast is slope, the model up to
    2026-12-04).
    """
    image = np.asarray(image, np.float64)
    height = height_from_shading(image, azimuth, elevation, noise_floor=noise_floor)
    old = shade(height, azimuth, elevation)
    new = shade(height, new_azimuth, new_elevation)
    old, new = old / (old.mean() or 1.0), new / (new.mean() or 1.0)
    # Lit ground: the image times the change of shading (its albedo and what the linear model missed are
    # kept). Shadow holds no albedo: it gets the mean brightness times the gain in shading.
    lit = ~in_shadow(image)
    ratio = np.clip(new / np.maximum(old, 1e-3), 0.0, 3.0)
    out = np.where(lit, image * ratio, image + image.mean() * np.maximum(new - old, 0.0))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def albedo_streaks(image: np.ndarray, rng: np.random.Generator, n: int = 3, strength: tuple[float, float] = (0.05, 0.15),
                   width: tuple[float, float] = (1.5, 4.0)) -> np.ndarray:
    """Dark, curving tracks like dust-devil tracks: ``n`` random walks crossing the image, each darkening the
    ground by a fraction in ``strength`` over a Gaussian profile of σ in ``width`` px."""
    rows, cols = image.shape
    darkening = np.zeros((rows, cols))
    for _ in range(n):
        track = np.zeros((rows, cols))
        heading = rng.uniform(0, 2 * np.pi)
        y, x = rng.uniform(0, rows), rng.uniform(0, cols)
        # start outside the image half the time so tracks cross it
        for _ in range(4 * (rows + cols)):
            heading += rng.normal(0, 0.05)
            y, x = y + np.sin(heading), x + np.cos(heading)
            if 0 <= y < rows and 0 <= x < cols:
                track[int(y), int(x)] = 1.0
        sigma = rng.uniform(*width)
        track = ndimage.gaussian_filter(track, sigma) * sigma * np.sqrt(2 * np.pi)
        darkening = np.maximum(darkening, np.clip(track, 0, 1) * rng.uniform(*strength))
    return (image * (1.0 - darkening)).astype(np.float32)


def mosaic_seam(image: np.ndarray, rng: np.random.Generator, gain: tuple[float, float] = (0.9, 1.1),
                offset: float = 0.03) -> np.ndarray:
    """A straight seam across the image between two acquisitions: one side gets another gain and offset."""
    rows, cols = image.shape
    angle = rng.uniform(0, np.pi)
    rr, cc = np.mgrid[:rows, :cols]
    side = (rr - rng.uniform(0.25, 0.75) * rows) * np.cos(angle) - (cc - rng.uniform(0.25, 0.75) * cols) * np.sin(angle)
    other = image * rng.uniform(*gain) + rng.uniform(-offset, offset)
    return np.where(side > 0, other, image).clip(0, 1).astype(np.float32)


def haze(image: np.ndarray, amount: float) -> np.ndarray:
    """Contrast loss by an atmospheric veil: ``I (1 − amount) + amount · mean(I)``."""
    return (image * (1.0 - amount) + amount * float(image.mean())).astype(np.float32)


def resolution(image: np.ndarray, factor: float) -> np.ndarray:
    """The image seen at ``factor`` × coarser pixels (area-averaged down, cubic back up to the same grid)."""
    if factor <= 1.0:
        return np.asarray(image, np.float32)
    small = ndimage.zoom(ndimage.gaussian_filter(image, 0.5 * factor), 1.0 / factor, order=1, mode="nearest")
    back = ndimage.zoom(small, (image.shape[0] / small.shape[0], image.shape[1] / small.shape[1]), order=3,
                        mode="nearest")
    return back[: image.shape[0], : image.shape[1]].astype(np.float32)


@dataclass(frozen=True)
class RealNuisance:
    """Ranges of the real nuisances drawn by :func:`real_nuisance` (probabilities per image)."""

    sun_azimuth_change: float = 45.0  #: the new sun azimuth is within ± this many degrees
    sun_elevation: tuple[float, float] = (25.0, 65.0)  #: both elevations are drawn here, degrees
    p_relight: float = 1.0
    p_streaks: float = 0.5
    p_seam: float = 0.3
    haze: tuple[float, float] = (0.0, 0.35)
    p_haze: float = 0.5
    resolution: tuple[float, float] = (1.0, 2.0)
    p_resolution: float = 0.5
    #: relight with :func:`height_from_shading`'s noise floor (False: all contrast is slope, as up to 2026-12-04)
    noise_floor: bool = True


#: The benchmark's ``real-nuisance`` preset.
REAL_NUISANCE = RealNuisance()
#: The milder draw of the ``nn`` pseudo-unchanged pairs (no seam, rarely streaks) of ``detect`` on a pair under one
#: sun, exactly as before 2026-12-04: relit without the noise floor from a random sun, so the relighting turns
#: noise into striations. Kept because ``detect``'s τ on such pairs (and the tests and monitor runs measured with
#: it) rests on them; replacing them is open (docs/benchmarks.md, "A noise floor for the relighting").
PSEUDO_NUISANCE = RealNuisance(sun_azimuth_change=30.0, p_relight=0.5, p_streaks=0.2, p_seam=0.0, haze=(0.0, 0.25),
                               p_haze=0.3, resolution=(1.0, 1.5), p_resolution=0.3, noise_floor=False)
#: The draw of the ``nn`` pseudo-unchanged pairs of a pair whose two dates are under different suns (its own
#: statistics say so: :data:`planetcd.change.nn.RELIT_ANISOTROPY`): two acquisitions, so every nuisance of a real
#: second date as often as :data:`REAL_NUISANCE` draws it; the sun always turned, within ± 30° (``evaluate``
#: matches the range to the pairs' own change of sun, :func:`planetcd.change.patch_pairs.matched_sun_turn`).
#: Since 2026-12-04 (with the relighting's noise floor and the pseudo pairs lit from their own shading axis):
#: before, such pairs drew :data:`PSEUDO_NUISANCE`, whose relighting along a random direction made up the rest.
RELIT_PSEUDO_NUISANCE = replace(REAL_NUISANCE, sun_azimuth_change=30.0, p_relight=1.0)


@dataclass(frozen=True)
class DateNuisances:
    """What :func:`real_nuisance` drew for one date before rendering it (:func:`draw_date_nuisances`)."""

    azimuth: float  #: the sun the image was lit by, degrees clockwise from the top (light FROM)
    elevation: float  #: its elevation, degrees
    new_azimuth: float  #: the sun the date is relit to (``azimuth`` + a turn within ``± sun_azimuth_change``)
    new_elevation: float
    relight: bool
    streaks: bool
    seam: bool
    haze: bool
    resolution: bool

    @property
    def lit_from(self) -> float:
        """The azimuth (degrees) the rendered date is lit from: ``new_azimuth`` if relit, else ``azimuth``."""
        return self.new_azimuth if self.relight else self.azimuth


def draw_date_nuisances(rng: np.random.Generator, ranges: RealNuisance = REAL_NUISANCE,
                        sun: tuple[float, float] | None = None) -> DateNuisances:
    """The first draws of :func:`real_nuisance` from ``rng``: the suns and which nuisances apply.

    :func:`real_nuisance` makes exactly these draws first, so a generator seeded as it was tells afterwards
    what a generated date got (``benchmarks/change_breakdown.py --sun-turns`` reads the sun turns of a set).
    The amounts of streaks, seam, haze and resolution are drawn later, while rendering.
    """
    azimuth = rng.uniform(0, 360)
    e0, e1 = rng.uniform(*ranges.sun_elevation, size=2)
    if sun is not None:  # the draws above are made all the same, so the rest of the sequence does not move
        azimuth = float(sun[0])
        e0 = e0 if sun[1] is None else float(sun[1])
    turn = rng.uniform(-ranges.sun_azimuth_change, ranges.sun_azimuth_change)
    draws = rng.uniform(size=5)
    return DateNuisances(float(azimuth), float(e0), float(azimuth + turn), float(e1), bool(draws[0] < ranges.p_relight),
                         bool(draws[1] < ranges.p_streaks), bool(draws[2] < ranges.p_seam),
                         bool(draws[3] < ranges.p_haze), bool(draws[4] < ranges.p_resolution))


def real_nuisance(image: np.ndarray, rng: np.random.Generator, ranges: RealNuisance = REAL_NUISANCE,
                  sun: tuple[float, float] | None = None) -> np.ndarray:
    """One date's real nuisances on ``(rows, cols)`` (``0..1``): relighting, streaks, seam, haze, resolution.

    ``sun``: ``(azimuth, elevation)`` in degrees of the sun that lights ``image`` already (the source
    image's own, e.g. :func:`planetcd.craters.sun.estimate_sun_azimuth`; an elevation of None is drawn from
    ``ranges.sun_elevation``, as without ``sun``). The relit date is lit from within
    ``± ranges.sun_azimuth_change`` of it, so two dates made from one image with the same ``sun`` differ by
    at most twice that. Without it, the old sun is drawn anywhere (0–360°) and its elevation from
    ``ranges.sun_elevation``: the height field is then integrated along a direction the image was not
    lit from, which no real second date shows (the benchmark generator did this up to 2026-12-01).

    Every draw comes from ``rng`` in a fixed order (the same ``rng`` state gives the same image); the first
    ones are :func:`draw_date_nuisances`.
    """
    out = np.asarray(image, np.float32)
    date = draw_date_nuisances(rng, ranges, sun)
    if date.relight:
        out = relight(out, date.azimuth, date.elevation, date.new_azimuth, date.new_elevation,
                      noise_floor=ranges.noise_floor)
    if date.streaks:
        out = albedo_streaks(out, rng, n=int(rng.integers(1, 4)))
    if date.seam:
        out = mosaic_seam(out, rng)
    if date.haze:
        out = haze(out, rng.uniform(*ranges.haze))
    if date.resolution:
        out = resolution(out, rng.uniform(*ranges.resolution))
    return np.clip(out, 0.0, 1.0).astype(np.float32)
