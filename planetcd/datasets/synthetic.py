"""Synthetic cratered terrain and bi-temporal pairs with planted changes.

Used by ``planetcd demo``, by the tests and by the benchmark generator. The
terrain is a fractal height field with bowl-shaped craters (power-law sizes),
shaded by a low sun; a "new impact" is a fresh crater with an albedo halo.
Everything is seeded: the same arguments give the same bytes.

Coordinates are pixels, ``(row, col)``; a displacement ``(dy, dx)`` means a
ground feature at pre pixel ``(y, x)`` appears at post pixel ``(y + dy, x + dx)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Equirectangular projection on the Mars 2000 sphere (IAU), metres.
MARS_EQC_WKT = (
    'PROJCS["Mars_Equirectangular",GEOGCS["GCS_Mars_2000_Sphere",'
    'DATUM["D_Mars_2000_Sphere",SPHEROID["Mars_2000_Sphere_IAU_IAG",3396190,0]],'
    'PRIMEM["Reference_Meridian",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Equirectangular"],PARAMETER["standard_parallel_1",0],'
    'PARAMETER["central_meridian",0],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1]]'
)

#: Equirectangular projection on the Moon 2000 sphere (IAU), metres.
MOON_EQC_WKT = (
    'PROJCS["Moon_Equirectangular",GEOGCS["GCS_Moon_2000",'
    'DATUM["D_Moon_2000",SPHEROID["Moon_2000_IAU_IAG",1737400,0]],'
    'PRIMEM["Reference_Meridian",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Equirectangular"],PARAMETER["standard_parallel_1",0],'
    'PARAMETER["central_meridian",0],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1]]'
)


def crater_height(shape: tuple[int, int], y: float, x: float, radius: float, depth_ratio: float = 0.2) -> np.ndarray:
    """Height field (pixels of height) of one simple bowl crater with a raised rim.

    Parameters
    ----------
    shape : (rows, cols)
    y, x : float
        Centre in pixels.
    radius : float
        Rim radius in pixels.
    depth_ratio : float
        Depth / diameter (about 0.2 for fresh simple craters).

    Returns
    -------
    ndarray, float32, shape ``shape``
    """
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    r = np.hypot(rows - y, cols - x) / max(radius, 1e-6)
    depth = depth_ratio * 2 * radius
    inside = depth * (r**2 - 1.0) + 0.04 * depth
    outside = 0.04 * depth * np.exp(-((r - 1.0) / 0.35) ** 2 * 3) * (r >= 1)
    return np.where(r < 1, inside, outside).astype(np.float32)


def hillshade(height: np.ndarray, azimuth_deg: float = 300.0, elevation_deg: float = 35.0) -> np.ndarray:
    """Lambertian shading of a height field (same units horizontally and vertically), in ``0..1``."""
    gy, gx = np.gradient(height.astype(np.float32))
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    light = np.array([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az), np.sin(el)], np.float32)
    norm = np.sqrt(gx**2 + gy**2 + 1.0)
    shade = (-gx * light[0] - gy * light[1] + light[2]) / norm
    return np.clip(shade, 0.0, 1.0).astype(np.float32)


def fractal_noise(shape: tuple[int, int], rng: np.random.Generator, octaves: int = 5, scale: float = 64.0) -> np.ndarray:
    """Smooth multi-scale noise of zero mean and unit standard deviation."""
    out = np.zeros(shape, np.float32)
    for octave in range(octaves):
        sigma = scale / 2**octave
        layer = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
        layer /= layer.std() + 1e-12
        out += layer / 2**octave
    return (out - out.mean()) / (out.std() + 1e-12)


def random_craters(
    shape: tuple[int, int], n: int, rng: np.random.Generator, r_min: float = 3.0, r_max: float = 40.0, slope: float = 2.0
) -> np.ndarray:
    """``n`` craters ``(y, x, radius)`` with a power-law radius distribution N(>r) ∝ r^-slope."""
    u = rng.random(n)
    a, b = r_min**-slope, r_max**-slope
    radius = (a - u * (a - b)) ** (-1.0 / slope)
    y = rng.uniform(0, shape[0], n)
    x = rng.uniform(0, shape[1], n)
    return np.stack([y, x, radius], axis=1).astype(np.float64)


def terrain_height(shape: tuple[int, int], craters: np.ndarray, rng: np.random.Generator, relief: float = 6.0) -> np.ndarray:
    """Fractal plains plus every crater of ``craters`` (rows ``y, x, radius``), larger first."""
    height = relief * fractal_noise(shape, rng)
    for y, x, radius in sorted(craters, key=lambda c: -c[2]):
        r0, r1 = int(max(0, y - 2 * radius - 2)), int(min(shape[0], y + 2 * radius + 3))
        c0, c1 = int(max(0, x - 2 * radius - 2)), int(min(shape[1], x + 2 * radius + 3))
        if r1 <= r0 or c1 <= c0:
            continue
        # Superpose in a window: a new crater replaces what was inside its bowl.
        window = height[r0:r1, c0:c1]
        bowl = crater_height((r1 - r0, c1 - c0), y - r0, x - c0, radius)
        rows, cols = np.ogrid[r0:r1, c0:c1]
        inside = np.hypot(rows - y, cols - x) < radius
        level = window[inside].mean() if np.any(inside) else 0.0
        window[:] = np.where(inside, level + bowl, window + bowl)
    return height


def synthetic_terrain(
    shape: tuple[int, int], seed: int = 0, n_craters: int | None = None, r_min: float = 3.0, r_max: float = 40.0
) -> tuple[np.ndarray, np.ndarray]:
    """A shaded cratered landscape.

    Returns
    -------
    image : ndarray, float32, shape ``shape``, values in about ``0..1``
    craters : ndarray, float64, shape (n, 3)
        ``y, x, radius`` in pixels.
    """
    rng = np.random.default_rng(seed)
    if n_craters is None:
        n_craters = int(shape[0] * shape[1] / 2500)
    craters = random_craters(shape, n_craters, rng, r_min, r_max)
    height = terrain_height(shape, craters, rng)
    albedo = 0.85 + 0.1 * fractal_noise(shape, rng, octaves=3, scale=128.0)
    return (hillshade(height) * albedo).astype(np.float32), craters


def add_fresh_crater(
    image: np.ndarray, y: float, x: float, radius: float, halo: str = "dark", halo_strength: float = 0.5,
    sun_azimuth_deg: float = 300.0, sun_elevation_deg: float = 35.0,
) -> np.ndarray:
    """Render a fresh impact into an image: a shaded bowl and an albedo blast zone.

    Parameters
    ----------
    image : ndarray, float32, shape (rows, cols), values about ``0..1``
    y, x, radius : float
        Centre and rim radius in pixels.
    halo : {"dark", "bright", "none"}
        Blast zone albedo: darker (most new Mars impacts in dusty terrain) or brighter.
    halo_strength : float
        Fractional albedo change at the rim (fades out by about 3 radii).
    sun_azimuth_deg, sun_elevation_deg : float
        The light the bowl is shaded by: where it comes from, degrees clockwise from the image top, and its
        elevation, degrees. A new crater in a real image must be lit as the image is (the benchmark generator
        passes the date's sun); the default suits :func:`synthetic_terrain`, shaded from 300°.

    Returns
    -------
    ndarray, float32 : a modified copy.
    """
    out = image.astype(np.float32, copy=True)
    height = crater_height(image.shape, y, x, radius)
    shade = hillshade(height, sun_azimuth_deg, sun_elevation_deg)
    rows, cols = np.ogrid[: image.shape[0], : image.shape[1]]
    r = np.hypot(rows - y, cols - x) / radius
    footprint = np.clip(1.5 - r, 0.0, 1.0)  # the bowl and rim, feathered over half a radius
    flat = hillshade(np.zeros((3, 3), np.float32), sun_azimuth_deg, sun_elevation_deg)[1, 1]
    local = out * (1 - footprint) + out * footprint * (shade / flat)
    if halo != "none":
        sign = -1.0 if halo == "dark" else 1.0
        fade = np.exp(-np.clip(r - 1.0, 0.0, None) / 0.8) * (r < 4)
        local = local * (1.0 + sign * halo_strength * fade)
    return local.astype(np.float32)


@dataclass
class SyntheticPair:
    """A planted-change pair: ``pre`` and ``post`` images and what differs."""

    pre: np.ndarray
    post: np.ndarray
    new_craters: np.ndarray  #: (n, 3) y, x, radius in pre pixels
    displacement: tuple[float, float]  #: (dy, dx) of post relative to pre, pixels


def make_change_pair(
    shape: tuple[int, int] = (512, 512),
    seed: int = 0,
    displacement: tuple[float, float] = (3.4, -2.7),
    new_craters: np.ndarray | None = None,
    gain: float = 1.1,
    offset: float = 0.02,
    noise_std: float = 0.01,
    crater_density: float = 4e-4,
    halo: str = "dark",
    halo_strength: float = 0.5,
) -> SyntheticPair:
    """Make a pre/post pair of the same synthetic ground with planted new craters.

    The post image is the same landscape displaced by ``displacement`` pixels
    (sub-pixel, interpolated from real surrounding terrain, not wrapped), with
    ``gain``, ``offset`` and Gaussian noise, plus fresh craters at
    ``new_craters`` (``y, x, radius`` in pre pixel coordinates) with a ``halo``
    blast zone (see :func:`add_fresh_crater`). ``crater_density`` is the number
    of older craters per pixel. Both images are float32 in about ``0..1``.
    """
    margin = int(np.ceil(max(abs(displacement[0]), abs(displacement[1])))) + 4
    big_shape = (shape[0] + 2 * margin, shape[1] + 2 * margin)
    ground, _ = synthetic_terrain(big_shape, seed=seed, n_craters=int(crater_density * big_shape[0] * big_shape[1]))
    rng = np.random.default_rng(seed + 1)
    if new_craters is None:
        new_craters = np.array([[shape[0] * 0.3, shape[1] * 0.6, 12.0]])
    new_craters = np.atleast_2d(np.asarray(new_craters, dtype=np.float64))
    changed = ground
    for y, x, radius in new_craters:
        changed = add_fresh_crater(changed, y + margin, x + margin, radius, halo=halo, halo_strength=halo_strength)
    pre = ground[margin:-margin, margin:-margin]
    moved = ndimage.shift(changed, displacement, order=3, mode="nearest")
    post = moved[margin:-margin, margin:-margin] * gain + offset
    post = post + rng.normal(0.0, noise_std, post.shape)
    return SyntheticPair(pre.astype(np.float32), post.astype(np.float32), new_craters, tuple(map(float, displacement)))


def write_synthetic_geotiff(
    path: str | Path,
    image: np.ndarray,
    crs: str | None = MARS_EQC_WKT,
    pixel_size: float = 6.0,
    origin: tuple[float, float] = (1_000_000.0, 500_000.0),
    dtype: str | None = "uint16",
    nodata: float | None = None,
) -> Path:
    """Write a test/demo GeoTIFF on a made-up map grid; float ``0..1`` images are scaled to the integer ``dtype``.

    ``origin`` is the map (x, y) of the upper-left corner; pixels are square.
    ``dtype=None`` writes the array's own type, unscaled. The file is written by
    :func:`planetcd.raster.write_geotiff` (atomically, tiled and compressed like every planetcd output).
    """
    from rasterio.transform import from_origin

    from ..raster import write_geotiff

    image = np.asarray(image)
    if dtype is None:
        dtype = image.dtype.name
    if image.ndim == 2:
        image = image[None]
    if np.dtype(dtype).kind in "ui" and image.dtype.kind == "f":
        top = 4000 if dtype == "uint16" else np.iinfo(dtype).max
        image = np.clip(np.round(image * top / 1.3), 0, np.iinfo(dtype).max)
    grid = {"width": image.shape[2], "height": image.shape[1], "crs": crs,
            "transform": from_origin(origin[0], origin[1], pixel_size, pixel_size)}
    path = Path(path)
    write_geotiff(path, image.astype(dtype), grid, nodata=nodata)
    return path
