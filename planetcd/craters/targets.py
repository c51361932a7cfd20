"""Segmentation targets drawn from crater lists, and the synthetic dots set of DeLatte et al.

Crater lists are ``(n, 3)`` arrays of ``x_px, y_px, radius_px`` in pixel
coordinates: ``x`` is the column, ``y`` the row, and integer values are pixel
centres (a crater at ``(3, 5)`` is centred on ``image[5, 3]``).  Targets are
``uint8`` masks of shape ``(height, width)`` holding 0 and 1.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TARGET_KINDS",
    "filled_circles",
    "outlines",
    "rings",
    "make_target",
    "disk_values",
    "confidence_weights",
    "synthetic_dots",
]

#: Fraction of the radius kept clear inside an outline target.
INNER_FRACTION = 0.7
TARGET_KINDS = ("filled", "outline", "rings")


def _as_craters(craters) -> np.ndarray:
    arr = np.asarray(craters, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 3))
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"crater list must have shape (n, 3): x_px, y_px, radius_px; got {arr.shape}")
    arr = arr[:, :3]
    if np.any(~np.isfinite(arr)) or np.any(arr[:, 2] < 0):
        raise ValueError("crater list holds non-finite values or negative radii")
    return arr


def _window(x: float, y: float, reach: float, shape: tuple[int, int]):
    """Row/col slices of the pixels within ``reach`` of ``(x, y)``, and their squared distances."""
    h, w = shape
    r0, r1 = max(0, int(np.floor(y - reach))), min(h, int(np.ceil(y + reach)) + 1)
    c0, c1 = max(0, int(np.floor(x - reach))), min(w, int(np.ceil(x + reach)) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    yy = np.arange(r0, r1, dtype=np.float64)[:, None] - y
    xx = np.arange(c0, c1, dtype=np.float64)[None, :] - x
    return (slice(r0, r1), slice(c0, c1)), yy**2 + xx**2


def filled_circles(craters, shape: tuple[int, int]) -> np.ndarray:
    """Union of the crater disks (pixels whose centre lies within the radius)."""
    out = np.zeros(shape, np.uint8)
    for x, y, r in _as_craters(craters):
        win = _window(x, y, r, shape)
        if win is not None:
            sl, d2 = win
            out[sl][d2 <= r * r] = 1
    return out


def outlines(craters, shape: tuple[int, int], inner: float = INNER_FRACTION) -> np.ndarray:
    """Crater outlines: each disk minus an inscribed disk of ``inner`` × its radius.

    Craters are drawn from the largest to the smallest and each clears its own
    inner disk, so a crater inside a crater (or on its rim) stays visible as
    its own ring.
    """
    craters = _as_craters(craters)
    out = np.zeros(shape, np.uint8)
    for x, y, r in craters[np.argsort(-craters[:, 2], kind="stable")]:
        win = _window(x, y, r, shape)
        if win is None:
            continue
        sl, d2 = win
        view = out[sl]
        view[d2 <= r * r] = 1
        view[d2 < (inner * r) ** 2] = 0
    return out


def rings(craters, shape: tuple[int, int], thickness: float = 1.0) -> np.ndarray:
    """DeepMoon-style rings: pixels within ``thickness / 2`` of each crater's rim circle.

    A ring is always at least the pixels nearest the circle, so small craters
    never vanish.
    """
    out = np.zeros(shape, np.uint8)
    half = max(0.5, thickness / 2.0)
    for x, y, r in _as_craters(craters):
        win = _window(x, y, r + half, shape)
        if win is not None:
            sl, d2 = win
            d = np.sqrt(d2)
            out[sl][np.abs(d - r) <= half] = 1
    return out


def make_target(craters, shape: tuple[int, int], kind: str = "filled", **kwargs) -> np.ndarray:
    """Dispatch to :func:`filled_circles`, :func:`outlines` or :func:`rings` by ``kind``."""
    if kind == "filled":
        return filled_circles(craters, shape)
    if kind == "outline":
        return outlines(craters, shape, **kwargs)
    if kind == "rings":
        return rings(craters, shape, **kwargs)
    raise ValueError(f"unknown target kind {kind!r}; expected one of {TARGET_KINDS}")


def disk_values(craters, values, shape: tuple[int, int], margin: float = 0.0, fill: float = 0.0) -> np.ndarray:
    """Per-pixel maximum of ``values[i]`` over the disks (radius ``r_i + margin``) that cover the pixel.

    Parameters
    ----------
    craters : array, shape (n, >=3)
        ``x_px, y_px, radius_px``.
    values : array, shape (n,)
    shape : (rows, cols)
    margin : float
        Pixels added to every radius (1 covers the outline and ring targets too).
    fill : float
        Value of pixels no disk covers.

    Returns
    -------
    ndarray, float32, shape ``shape``
    """
    craters = _as_craters(craters)
    values = np.asarray(values, np.float64).reshape(-1)
    if len(values) != len(craters):
        raise ValueError(f"{len(values)} values for {len(craters)} craters")
    out = np.full(shape, -np.inf, np.float64)
    for (x, y, r), v in zip(craters, values):
        reach = r + margin
        win = _window(x, y, reach, shape)
        if win is not None:
            sl, d2 = win
            view = out[sl]
            inside = d2 <= reach * reach
            view[inside] = np.maximum(view[inside], v)
    out[~np.isfinite(out)] = fill
    return out.astype(np.float32)


#: Annotators (of six) at which a clustered label counts fully in :func:`confidence_weights`.
FULL_CONFIDENCE = 3.0


def confidence_weights(craters, confidence, target: np.ndarray, full: float = FULL_CONFIDENCE) -> np.ndarray:
    """Per-pixel loss weights from the labels' confidence (annotators who marked each crater).

    Target pixels of a crater marked by ``c`` annotators weigh ``min(1, c / full)``
    (the most confident crater covering a pixel wins; a crater without a
    confidence, NaN, weighs 1); every other pixel weighs 1. Uncertain craters
    pull the network less towards "crater" without teaching it "not a crater"
    (a soft target of 1/3 would do the latter at a 0.5 threshold, while the
    benchmarks count every clustered label as a crater).

    Parameters
    ----------
    craters : array (n, >=3)
    confidence : array (n,)
    target : ndarray (rows, cols)
        The segmentation target drawn from ``craters`` (any kind).
    full : float
        Confidence at and above which a crater weighs 1.

    Returns
    -------
    ndarray, float32, shape of ``target``
    """
    conf = np.asarray(confidence, np.float64).reshape(-1)
    w = np.where(np.isfinite(conf), np.minimum(1.0, conf / float(full)), 1.0)
    inside = disk_values(craters, w, np.shape(target), margin=1.0, fill=1.0)
    return np.where(np.asarray(target) > 0, inside, 1.0).astype(np.float32)


def synthetic_dots(
    n_images: int,
    size: int = 128,
    *,
    n_dots: tuple[int, int] = (3, 12),
    radius: tuple[float, float] = (3.0, 12.0),
    shade: tuple[float, float] = (0.3, 1.0),
    noise: float = 0.02,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """DeLatte et al.'s sanity data set: gray dots of various shades on black, filled-circle targets.

    Parameters
    ----------
    n_images, size : int
        Number of square images and their side in pixels.
    n_dots, radius, shade : (low, high)
        Ranges of dots per image, dot radius (px) and dot brightness (0..1).
    noise : float
        Standard deviation of Gaussian noise added to the image.
    seed : int
        Random seed; the same seed gives the same set.

    Returns
    -------
    images : ndarray, float32, shape (n_images, size, size), values about 0..1
    targets : ndarray, uint8, shape (n_images, size, size)
    craters : list of (k, 3) arrays, one per image
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n_images, size, size), np.float32)
    targets = np.zeros((n_images, size, size), np.uint8)
    craters = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n_images):
        k = int(rng.integers(n_dots[0], n_dots[1] + 1))
        cr = np.column_stack(
            [rng.uniform(0, size - 1, k), rng.uniform(0, size - 1, k), rng.uniform(radius[0], radius[1], k)]
        )
        for (x, y, r), s in zip(cr, rng.uniform(shade[0], shade[1], k)):
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
            images[i][disk] = s
        if noise > 0:
            images[i] += rng.normal(0, noise, (size, size)).astype(np.float32)
        targets[i] = filled_circles(cr, (size, size))
        craters.append(cr)
    return images, targets, craters
