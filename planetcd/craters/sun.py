"""Sun direction: the azimuth convention, an estimator from the image, and the canonical (light-from-the-left) frame.

Convention
----------
The *sun azimuth* is the direction the light comes FROM, in degrees clockwise
from the top of the image: 0 = from the top, 90 = from the right, 180 = from
the bottom, 270 = from the left. It is a property of the image grid as given
(rows down, columns right), not of north. ISIS ``campt`` reports
``SubSolarAzimuth`` clockwise from the 3 o'clock direction of the image, so
ours is ``(SubSolarAzimuth + 90) % 360`` (:func:`from_isis_subsolar_azimuth`).

Canonical frame
---------------
Crater detection runs on the image turned so that the light comes from the
left (:data:`CANONICAL_AZIMUTH_DEG` = 270°), the most common case in CTX tiles
of the MC11-East set. :func:`canonical_rotation` decides between an exact
``k * 90°`` turn (``np.rot90``, when the needed turn is within
``tolerance_deg`` of a multiple of 90°) and bilinear resampling onto a grid
that holds the whole turned image; :func:`to_canonical` does it and returns a
:class:`CanonicalFrame` that maps probability rasters and crater lists back to
the input grid. Pixel convention of :mod:`planetcd.craters.catalog`: pixel
``i``'s centre is at coordinate ``i`` (``x_px`` column, ``y_px`` row).

Estimator
---------
:func:`estimate_sun_azimuth` reads the direction from the shading statistics
of the image (docs/sun.md). Shading of rough ground follows the slope along
the light, so the direction along which brightness changes carries the light
axis; the sign comes from an asymmetry that linear shading does not have:
relief has sharp convex crests (crater rims, knob tops, scarp edges, with cast
shadows behind them) and broad concave hollows, so moving TOWARDS the sun the
brightness rises in few steep steps (shadow to lit crest) and falls in many
gentle ones. The estimate is the direction opposite to the mean of the
*clipped* brightness gradient (gradients longer than their block's median are
cut to that length: the steep steps lose their excess, which the telescoping
sum of the unclipped gradient balances exactly). It is summed over blocks of
the decimated, high-passed image so that a few big scarps or albedo edges do
not decide it, and its confidence is the block-bootstrap probability that it
lies within 30° of the estimate. When ``confident`` is False callers use
:data:`FALLBACK_AZIMUTH_DEG` (270°: no rotation; the image is treated as
already lit from the left) and log one line saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError

__all__ = [
    "CANONICAL_AZIMUTH_DEG",
    "FALLBACK_AZIMUTH_DEG",
    "CONFIDENCE_LEVEL",
    "ROTATION_TOLERANCE_DEG",
    "from_isis_subsolar_azimuth",
    "from_clockwise_from_north",
    "from_map_azimuth",
    "bearing_to_subsolar_point",
    "angle_difference",
    "SunEstimate",
    "estimate_sun_azimuth",
    "CanonicalFrame",
    "canonical_rotation",
    "canonical_frame",
    "to_canonical",
    "affine_resample",
    "azimuth_from_craters",
]

CANONICAL_AZIMUTH_DEG = 270.0
"""The canonical frame: light from the left of the image."""

FALLBACK_AZIMUTH_DEG = 270.0
"""What callers use when the estimate is not confident: light from the left, i.e. no rotation."""

CONFIDENCE_LEVEL = 0.9
"""``SunEstimate.confident`` is ``confidence >= CONFIDENCE_LEVEL``."""

ROTATION_TOLERANCE_DEG = 5.0
"""Turns within this many degrees of a multiple of 90° are done exactly with ``np.rot90``."""


def from_isis_subsolar_azimuth(deg: float) -> float:
    """Our sun azimuth from ISIS ``campt``'s ``SubSolarAzimuth`` (degrees clockwise from 3 o'clock).

    ``SubSolarAzimuth`` is the direction from the image point towards the
    sub-solar point, i.e. the direction the light comes from, measured
    clockwise from the positive sample (3 o'clock) direction. Ours counts
    clockwise from 12 o'clock: ``(deg + 90) % 360``.
    """
    return float((float(deg) + 90.0) % 360.0)


def from_clockwise_from_north(deg: float, north_azimuth_deg: float = 0.0) -> float:
    """Our sun azimuth from a solar azimuth measured clockwise from north.

    Parameters
    ----------
    deg : float
        Direction towards the sun (where the light comes from), degrees clockwise
        from north (e.g. a solar azimuth of a map-projected scene).
    north_azimuth_deg : float
        Where north points in the image, degrees clockwise from the top
        (0 for north-up map-projected products; ISIS ``campt`` ``NorthAzimuth``
        + 90 for raw images).
    """
    return float((float(deg) + float(north_azimuth_deg)) % 360.0)


def from_map_azimuth(deg: float, transform) -> float:
    """Our sun azimuth on a map-projected raster from a solar azimuth clockwise from map north.

    Through the raster's affine transform, so that any grid works: north-up, south-up (a positive
    y pixel size: the ground mirrored, not turned, so the azimuth is ``180 - deg``), rotated
    (non-zero rotation terms), non-square pixels. Map north is the map's +y axis (the north of
    an equirectangular or any north-oriented projection near the image).

    Parameters
    ----------
    deg : float
        Direction towards the sun, degrees clockwise from north on the map.
    transform : affine.Affine
        The raster's pixel-to-map transform (``rasterio`` ``ds.transform``).

    Returns
    -------
    float
        Degrees clockwise from the image top, in ``[0, 360)``.
    """
    a, b, d, e = float(transform.a), float(transform.b), float(transform.d), float(transform.e)
    det = a * e - b * d
    if not det:
        raise InputError("from_map_azimuth: the transform is singular")
    east, north = math.sin(math.radians(deg)), math.cos(math.radians(deg))
    col = (e * east - b * north) / det  # the map direction in pixels: columns right, rows down
    row = (a * north - d * east) / det
    azimuth = math.degrees(math.atan2(col, -row)) % 360.0
    return float(azimuth) if azimuth < 360.0 else 0.0  # -1e-15 % 360 is 360.0


def bearing_to_subsolar_point(lon_deg: float, lat_deg: float, subsolar_lon_deg: float, subsolar_lat_deg: float) -> float:
    """Direction from a ground point to the sub-solar point, degrees clockwise from north (sphere).

    Longitudes east-positive (planetocentric), degrees. On a north-up
    map-projected image this is our sun azimuth (``from_clockwise_from_north``
    with ``north_azimuth_deg=0``); ISIS ``campt`` reports it as
    ``SubSolarGroundAzimuth``.
    """
    phi1, phi2 = math.radians(lat_deg), math.radians(subsolar_lat_deg)
    dlon = math.radians(subsolar_lon_deg - lon_deg)
    y = math.sin(dlon) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlon)
    return float(math.degrees(math.atan2(y, x)) % 360.0)


def angle_difference(a: float | np.ndarray, b: float | np.ndarray) -> float | np.ndarray:
    """Signed difference ``a - b`` of two azimuths, in degrees within ``[-180, 180)``."""
    return (np.asarray(a, float) - np.asarray(b, float) + 180.0) % 360.0 - 180.0


def _azimuth_of(dx: float, dy: float) -> float:
    """Azimuth (clockwise from the top) of the image vector ``(dx, dy)``, x right and y down."""
    return float(math.degrees(math.atan2(dx, -dy)) % 360.0)


@dataclass(frozen=True)
class SunEstimate:
    """A sun azimuth estimated from an image.

    Attributes
    ----------
    azimuth_deg : float
        Best guess of the direction the light comes from, degrees clockwise from
        the top of the image (always given, also when not confident).
    confidence : float
        0..1: the fraction of block-bootstrap resamples whose estimate lies
        within 30° of ``azimuth_deg``. Blocks are spatially correlated and a
        whole-image bias (e.g. large scarps facing one way) is not resampled,
        so read it as an upper bound.
    confident : bool
        ``confidence >= CONFIDENCE_LEVEL``. When False, callers use
        :data:`FALLBACK_AZIMUTH_DEG` and say so in one log line.
    method : str
        How it was obtained (``"clipped-gradient"``, or ``"none"`` when the
        image had too little usable texture).
    axis_deg : float
        Diagnostic: the dominant gradient orientation (structure tensor of the
        same band-passed image), degrees within ``[0, 180)``; light along it is
        from ``axis_deg`` or ``axis_deg + 180``.
    anisotropy : float
        Diagnostic: 0 (isotropic gradients) .. 1 (all along ``axis_deg``).
    n_blocks : int
        Blocks that entered the estimate.
    """

    azimuth_deg: float
    confidence: float
    confident: bool
    method: str
    axis_deg: float
    anisotropy: float
    n_blocks: int

    @property
    def azimuth_or_fallback(self) -> float:
        """``azimuth_deg`` when confident, else :data:`FALLBACK_AZIMUTH_DEG`."""
        return self.azimuth_deg if self.confident else FALLBACK_AZIMUTH_DEG


def _decimate(image: np.ndarray, usable: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block means of the usable pixels over ``factor``² blocks (centred crop); usable where all are."""
    rows, cols = image.shape
    r, c = (rows // factor) * factor, (cols // factor) * factor
    r0, c0 = (rows - r) // 2, (cols - c) // 2
    img = image[r0 : r0 + r, c0 : c0 + c]
    ok = usable[r0 : r0 + r, c0 : c0 + c]
    shape = (r // factor, factor, c // factor, factor)
    total = np.where(ok, img, 0.0).reshape(shape).sum((1, 3))
    count = ok.reshape(shape).sum((1, 3))
    return total / np.maximum(count, 1), count == factor * factor


def estimate_sun_azimuth(
    image: np.ndarray,
    missing: np.ndarray | None = None,
    decimate: int = 2,
    block: int = 128,
    highpass_sigma: float = 16.0,
    smooth_sigma: float = 0.7,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> SunEstimate:
    """Estimate where the light comes from, from the shading of the image itself.

    Parameters
    ----------
    image : ndarray, shape (rows, cols) or (bands, rows, cols)
        Gray image in any units (the first band of a stack is used).
    missing : ndarray of bool, shape (rows, cols), optional
        Pixels holding no ground (e.g. :func:`planetcd.raster.missing_pixels`);
        they and their neighbours take no part. Non-finite pixels are always missing.
    decimate : int
        Block-mean factor before filtering (2 on CTX at 6 m/px: 12 m working pixels).
    block : int
        Side of the estimate's blocks, in working (decimated) pixels; smaller
        (down to 16) on images less than two blocks across.
    highpass_sigma, smooth_sigma : float
        Gaussian high-pass and pre-smoothing of the working image, working pixels.
    n_bootstrap : int
        Block-bootstrap resamples for ``confidence``.
    seed : int
        Seed of the bootstrap (same inputs, same result).

    Returns
    -------
    SunEstimate
        Rotation-equivariant: the estimate of ``np.rot90(image, -1)`` (a
        clockwise quarter turn) is that of ``image`` plus 90°, up to rounding,
        when the image's sides are multiples of ``decimate``.
    """
    data = np.asarray(image)
    if data.ndim == 3:
        data = data[0]
    if data.ndim != 2:
        raise InputError(f"estimate_sun_azimuth: image must be 2-D (rows, cols) or 3-D (bands, rows, cols), got shape {np.shape(image)}")
    data = data.astype(np.float64)
    usable = np.isfinite(data)
    if missing is not None:
        missing = np.asarray(missing, bool)
        if missing.shape != data.shape:
            raise InputError(f"estimate_sun_azimuth: missing has shape {missing.shape}, image {data.shape}")
        usable &= ~missing
    if decimate < 1 or block < 4:
        raise InputError("estimate_sun_azimuth: decimate must be >= 1 and block >= 4")
    work, ok = _decimate(np.where(usable, data, 0.0), usable, int(decimate))
    none = SunEstimate(FALLBACK_AZIMUTH_DEG, 0.0, False, "none", 0.0, 0.0, 0)
    if min(work.shape) < 8 or ok.mean() < 0.05:
        return none
    # Fill missing working pixels with the local mean of the usable ones so that filters see no steps.
    if not ok.all():
        weight = ndimage.gaussian_filter(ok.astype(np.float64), highpass_sigma)
        local = ndimage.gaussian_filter(np.where(ok, work, 0.0), highpass_sigma) / np.maximum(weight, 1e-6)
        fill = float(np.mean(work[ok]))
        work = np.where(ok, work, np.where(weight > 1e-3, local, fill))
    work = work - ndimage.gaussian_filter(work, highpass_sigma)
    if smooth_sigma > 0:
        work = ndimage.gaussian_filter(work, smooth_sigma)
    gy, gx = np.gradient(work)
    grad = gx + 1j * gy
    good = ndimage.binary_erosion(ok, iterations=3, border_value=1) if not ok.all() else ok

    # Diagnostic axis: structure tensor of the whole working image.
    g2 = grad[good] ** 2
    power = float(np.mean(np.abs(grad[good]) ** 2)) if good.any() else 0.0
    tensor = complex(np.mean(g2)) if good.any() else 0j
    axis = float(np.degrees(np.angle(tensor) / 2.0))
    axis_deg = _azimuth_of(math.cos(math.radians(axis)), math.sin(math.radians(axis))) % 180.0
    anisotropy = abs(tensor) / power if power > 0 else 0.0

    # Blocks on a grid centred on the working image (so a quarter turn of the image turns the grid).
    rows, cols = work.shape
    # At least 2 x 2 blocks (of at least 16 px) so that the bootstrap has something to resample.
    side = max(16, min(int(block), min(rows, cols) // 2))
    b_r, b_c = min(side, rows), min(side, cols)
    n_r, n_c = rows // b_r, cols // b_c
    r0, c0 = (rows - n_r * b_r) // 2, (cols - n_c * b_c) // 2
    vectors = []
    for i in range(n_r):
        for j in range(n_c):
            sl = (slice(r0 + i * b_r, r0 + (i + 1) * b_r), slice(c0 + j * b_c, c0 + (j + 1) * b_c))
            keep = good[sl]
            if keep.mean() < 0.5:
                continue
            g = grad[sl][keep]
            mag = np.abs(g)
            scale = float(mag.mean())
            if scale <= 0:
                continue
            clip = float(np.median(mag))
            clipped = g * np.minimum(1.0, clip / np.maximum(mag, 1e-300))
            # Mean clipped gradient points away from the light; make it dimensionless.
            vectors.append(-complex(clipped.mean()) / scale)
    if not vectors:
        return SunEstimate(FALLBACK_AZIMUTH_DEG, 0.0, False, "none", axis_deg, anisotropy, 0)
    vec = np.asarray(vectors)
    total = vec.sum()
    if abs(total) == 0:
        return SunEstimate(FALLBACK_AZIMUTH_DEG, 0.0, False, "none", axis_deg, anisotropy, len(vec))
    azimuth = _azimuth_of(total.real, total.imag)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(vec), size=(int(n_bootstrap), len(vec)))
    sums = vec[picks].sum(axis=1)
    boot = np.degrees(np.arctan2(sums.real, -sums.imag)) % 360.0
    confidence = float(np.mean(np.abs(angle_difference(boot, azimuth)) <= 30.0)) if n_bootstrap > 0 else 0.0
    return SunEstimate(
        azimuth_deg=azimuth,
        confidence=confidence,
        confident=confidence >= CONFIDENCE_LEVEL,
        method="clipped-gradient",
        axis_deg=axis_deg,
        anisotropy=float(anisotropy),
        n_blocks=len(vec),
    )


@dataclass(frozen=True)
class CanonicalFrame:
    """How an input grid was turned into the canonical (light-from-the-left) grid, and back.

    The turn is clockwise by ``angle_deg`` about the grid centres: input pixel
    centre ``p`` (``x`` column, ``y`` row; pixel ``i``'s centre at ``i``) goes to
    ``R (p - c_in) + c_out`` with ``R = [[cos, -sin], [sin, cos]]`` in ``(x, y)``
    (y down, so positive angles turn clockwise on screen), ``c_in`` the centre
    of the input grid and ``c_out`` that of the canonical grid.

    Attributes
    ----------
    input_shape, canonical_shape : tuple of int
        ``(rows, cols)`` of the input and the canonical grid.
    angle_deg : float
        Clockwise turn applied, degrees in ``[0, 360)``.
    quarter_turns : int or None
        ``k`` when the turn is an exact ``k * 90°`` clockwise (done with
        ``np.rot90(a, -k)``), None when resampled.
    sun_azimuth_deg : float
        The input's sun azimuth the frame was made for.
    """

    input_shape: tuple[int, int]
    canonical_shape: tuple[int, int]
    angle_deg: float
    quarter_turns: int | None
    sun_azimuth_deg: float

    @property
    def exact(self) -> bool:
        """True when the frame is an exact quarter-turn (no resampling)."""
        return self.quarter_turns is not None

    @property
    def identity(self) -> bool:
        """True when the canonical grid is the input grid."""
        return self.quarter_turns == 0

    def _rotation(self) -> tuple[float, float, np.ndarray, np.ndarray]:
        if self.quarter_turns is not None:
            cos, sin = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][self.quarter_turns]
        else:
            cos, sin = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        c_in = np.array([(self.input_shape[1] - 1) / 2.0, (self.input_shape[0] - 1) / 2.0])
        c_out = np.array([(self.canonical_shape[1] - 1) / 2.0, (self.canonical_shape[0] - 1) / 2.0])
        return cos, sin, c_in, c_out

    def xy_to_canonical(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input pixel coordinates ``(x, y)`` (arrays of any shape) to canonical ones."""
        cos, sin, c_in, c_out = self._rotation()
        dx, dy = np.asarray(x, float) - c_in[0], np.asarray(y, float) - c_in[1]
        return cos * dx - sin * dy + c_out[0], sin * dx + cos * dy + c_out[1]

    def xy_to_input(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical pixel coordinates ``(x, y)`` to input ones."""
        cos, sin, c_in, c_out = self._rotation()
        dx, dy = np.asarray(x, float) - c_out[0], np.asarray(y, float) - c_out[1]
        return cos * dx + sin * dy + c_in[0], -sin * dx + cos * dy + c_in[1]

    def _craters(self, craters: np.ndarray, forward: bool) -> np.ndarray:
        array = np.array(craters, dtype=np.float64, copy=True)
        if array.ndim != 2 or array.shape[1] < 3:
            raise InputError(f"craters must have shape (n, >=3) with columns x_px, y_px, radius_px; got {np.shape(craters)}")
        move = self.xy_to_canonical if forward else self.xy_to_input
        array[:, 0], array[:, 1] = move(array[:, 0], array[:, 1])
        return array

    def craters_to_input(self, craters: np.ndarray) -> np.ndarray:
        """Craters found on the canonical grid, on the input grid.

        Parameters
        ----------
        craters : ndarray, shape (n, >=3)
            ``x_px, y_px, radius_px[, ...]`` on the canonical grid.

        Returns
        -------
        ndarray, float64, shape (n, >=3)
            A copy with ``x_px, y_px`` mapped; radius and further columns unchanged.
        """
        return self._craters(craters, forward=False)

    def craters_to_canonical(self, craters: np.ndarray) -> np.ndarray:
        """Craters of the input grid (``(n, >=3)``: ``x_px, y_px, radius_px[, ...]``) on the canonical grid."""
        return self._craters(craters, forward=True)

    def _resample(self, array: np.ndarray, forward: bool, order: int, fill: float) -> np.ndarray:
        data = np.asarray(array)
        want = self.input_shape if forward else self.canonical_shape
        if data.shape[-2:] != tuple(want) or data.ndim not in (2, 3):
            raise InputError(f"array has shape {data.shape}; expected (rows, cols) or (bands, rows, cols) with rows, cols = {tuple(want)}")
        if self.quarter_turns is not None:
            k = -self.quarter_turns if forward else self.quarter_turns
            return np.ascontiguousarray(np.rot90(data, k, axes=(-2, -1)))
        out_shape = self.canonical_shape if forward else self.input_shape
        cos, sin, c_in, c_out = self._rotation()
        # scipy maps output (row, col) to source (row, col) = matrix @ out + offset.
        if forward:  # source = input: p_in = R^T (p_out - c_out) + c_in
            matrix = np.array([[cos, -sin], [sin, cos]])
            src_c, dst_c = c_in[::-1], c_out[::-1]
        else:  # source = canonical: p_out = R (p_in - c_in) + c_out
            matrix = np.array([[cos, sin], [-sin, cos]])
            src_c, dst_c = c_out[::-1], c_in[::-1]
        offset = src_c - matrix @ dst_c
        work = data.astype(np.float32 if data.dtype.kind in "biu" or data.dtype == np.float32 else np.float64,
                           copy=False)  # a float32 map is read as it is

        def one(band: np.ndarray) -> np.ndarray:
            return affine_resample(band, matrix, offset, out_shape, order, fill)

        return one(work) if work.ndim == 2 else np.stack([one(b) for b in work])

    def array_to_canonical(self, array: np.ndarray, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """An input-grid raster (``(rows, cols)`` or ``(bands, rows, cols)``) on the canonical grid.

        Exact quarter turns keep the values and dtype; resampled frames use
        spline ``order`` (1: bilinear; 0: nearest, for masks) and ``fill``
        outside the input's footprint.
        """
        return self._resample(array, True, order, fill)

    def array_to_input(self, array: np.ndarray, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """A canonical-grid raster (e.g. a crater probability map) back on the input grid.

        Parameters
        ----------
        array : ndarray, shape canonical_shape or (bands, *canonical_shape)
        order : int
            Spline order when resampling (1: bilinear; 0: nearest for masks).
        fill : float
            Value where an input pixel falls outside the canonical grid (only
            rounding at the corners: the canonical grid holds the whole input).

        Returns
        -------
        ndarray, shape input_shape or (bands, *input_shape)
        """
        return self._resample(array, False, order, fill)

    def footprint(self) -> np.ndarray:
        """Bool ``canonical_shape`` mask: canonical pixels whose centre falls on the input grid."""
        rows, cols = np.mgrid[0 : self.canonical_shape[0], 0 : self.canonical_shape[1]]
        x, y = self.xy_to_input(cols, rows)
        eps = 1e-6
        return (x >= -0.5 - eps) & (x <= self.input_shape[1] - 0.5 + eps) & (y >= -0.5 - eps) & (y <= self.input_shape[0] - 0.5 + eps)

    def boxes_meet_footprint(self, boxes: np.ndarray, margin: float = 2.0) -> np.ndarray:
        """Which canonical boxes come within ``margin`` px of the input's footprint (bool ``(n,)``).

        ``boxes`` ``(n, 4)``: ``row, col, height, width`` on the canonical grid (e.g. the tiles of
        :func:`planetcd.craters.segment.window_tiles`). A box is tested by its pixel centres against the
        input grid's rectangle grown by ``margin`` px (:meth:`footprint`'s rectangle is grown by 0.5 px):
        two convex rectangles meet unless one of their four axes separates them (no pixel grid is made,
        so it costs nothing on a large canvas). A box that does not meet it holds only ``fill`` pixels,
        and no input pixel's bilinear neighbourhood (:meth:`array_to_input`, order 1) reaches it when
        ``margin >= 1.5``.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        rows, cols = self.input_shape
        # the boxes' corners (pixel centres) on the input grid, (n, 4)
        r0, c0 = boxes[:, 0], boxes[:, 1]
        r1, c1 = r0 + boxes[:, 2] - 1, c0 + boxes[:, 3] - 1
        cx = np.stack([c0, c1, c1, c0], axis=1)
        cy = np.stack([r0, r0, r1, r1], axis=1)
        x, y = self.xy_to_input(cx, cy)
        lo_x, hi_x, lo_y, hi_y = -0.5 - margin, cols - 0.5 + margin, -0.5 - margin, rows - 0.5 + margin
        meets = (x.max(1) >= lo_x) & (x.min(1) <= hi_x) & (y.max(1) >= lo_y) & (y.min(1) <= hi_y)
        # the boxes' own axes: the input rectangle's corners projected on the canonical x and y axes
        ix = np.array([lo_x, hi_x, hi_x, lo_x])
        iy = np.array([lo_y, lo_y, hi_y, hi_y])
        kx, ky = self.xy_to_canonical(ix, iy)
        meets &= (kx.max() >= c0) & (kx.min() <= c1) & (ky.max() >= r0) & (ky.min() <= r1)
        return meets

    def to_dict(self) -> dict:
        """JSON-ready record (for ``run.json`` / catalogue metadata)."""
        return {
            "sun_azimuth_deg": float(self.sun_azimuth_deg),
            "canonical_azimuth_deg": CANONICAL_AZIMUTH_DEG,
            "rotation_deg_clockwise": float(self.angle_deg),
            "quarter_turns": self.quarter_turns,
            "input_shape": list(self.input_shape),
            "canonical_shape": list(self.canonical_shape),
        }


#: Output rows in one strip of :func:`affine_resample` (about 17 MB of float64 source coordinates on a
#: 4000 px wide canvas).
RESAMPLE_STRIP_ROWS = 256


def affine_resample(band: np.ndarray, matrix: np.ndarray, offset: np.ndarray, out_shape: tuple[int, int],
                    order: int = 1, fill: float = 0.0, threads: int | None = None,
                    strip_rows: int = RESAMPLE_STRIP_ROWS) -> np.ndarray:
    """``ndimage.affine_transform(band, matrix, offset, output_shape=out_shape, order=order, mode="constant",
    cval=fill)``, the same array, in strips of output rows on ``threads`` threads.

    ``affine_transform`` is one call on one core. :func:`scipy.ndimage.map_coordinates` interpolates the same
    way at the coordinates it is given and releases the GIL. scipy takes output pixel ``(r, c)``'s source
    coordinate along axis ``h`` as ``(offset[h] + r * matrix[h, 0]) + c * matrix[h, 1]`` in float64, in that
    order, which numpy's products and sums reproduce bit for bit; so each strip is the transform's own rows.
    Splines of ``order`` above 1 (whose prefilter would run on every strip) and single threads call
    ``affine_transform`` itself.

    Parameters
    ----------
    band : ndarray, shape (rows, cols)
        float32 or float64; the output has its dtype.
    matrix : ndarray, shape (2, 2)
        Output ``(row, col)`` to source ``(row, col)``, as ``affine_transform`` takes it.
    offset : ndarray, shape (2,)
    out_shape : tuple of int
    order : int
        Spline order (1: bilinear, 0: nearest).
    fill : float
        Value of output pixels whose source falls outside ``band``.
    threads : int, optional
        Default: PyTorch's intra-op threads (``torch.get_num_threads()``, which ``--threads`` sets).
    strip_rows : int
        Output rows per strip.

    Returns
    -------
    ndarray, shape out_shape
    """
    matrix = np.asarray(matrix, np.float64)
    offset = np.asarray(offset, np.float64)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    rows, cols = int(out_shape[0]), int(out_shape[1])
    if order > 1 or threads < 2 or rows <= strip_rows:
        return ndimage.affine_transform(band, matrix, offset, output_shape=out_shape, order=order, mode="constant",
                                        cval=fill)
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((rows, cols), band.dtype)
    along_row = [np.arange(cols, dtype=np.float64) * matrix[h, 1] for h in (0, 1)]

    def strip(r0: int) -> None:
        r1 = min(r0 + strip_rows, rows)
        at_row = np.arange(r0, r1, dtype=np.float64)[:, None]
        coordinates = np.empty((2, r1 - r0, cols))
        for h in (0, 1):
            np.add(offset[h] + at_row * matrix[h, 0], along_row[h], out=coordinates[h])
        ndimage.map_coordinates(band, coordinates, output=out[r0:r1], order=order, mode="constant", cval=fill)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(strip, range(0, rows, strip_rows)):
            pass
    return out


def canonical_rotation(azimuth_deg: float, tolerance_deg: float = ROTATION_TOLERANCE_DEG) -> tuple[float, int | None]:
    """The clockwise turn that brings light from ``azimuth_deg`` to the canonical 270° (from the left).

    Parameters
    ----------
    azimuth_deg : float
        Sun azimuth of the input (degrees clockwise from the top, light coming from).
    tolerance_deg : float
        Turns within this of a multiple of 90° are rounded to it (exact ``np.rot90``).

    Returns
    -------
    angle_deg : float
        Clockwise turn in ``[0, 360)``; a multiple of 90 when exact.
    quarter_turns : int or None
        ``k`` in 0..3 for an exact ``k * 90°`` clockwise turn, None when resampling is needed.
    """
    azimuth = float(azimuth_deg)
    if not math.isfinite(azimuth):
        raise InputError(f"sun_azimuth must be a finite number of degrees, got {azimuth_deg!r}")
    angle = (CANONICAL_AZIMUTH_DEG - azimuth) % 360.0
    k = int(round(angle / 90.0)) % 4
    if abs(angle_difference(angle, 90.0 * k)) <= tolerance_deg:
        return 90.0 * k, k
    return angle, None


def to_canonical(
    image: np.ndarray, azimuth_deg: float, tolerance_deg: float = ROTATION_TOLERANCE_DEG, order: int = 1, fill: float = 0.0
) -> tuple[np.ndarray, CanonicalFrame]:
    """Turn an image so that its light comes from the left (the canonical frame).

    Parameters
    ----------
    image : ndarray, shape (rows, cols) or (bands, rows, cols)
    azimuth_deg : float
        The image's sun azimuth (degrees clockwise from the top, light coming from).
    tolerance_deg : float
        Exact quarter turns within this many degrees (see :func:`canonical_rotation`).
    order : int
        Spline order of the resampling (1: bilinear) when the turn is not exact.
    fill : float
        Value of canonical pixels outside the input's footprint (0: missing under
        :func:`planetcd.raster.missing_pixels`).

    Returns
    -------
    rotated : ndarray, shape (bands,) + canonical_shape or canonical_shape
        Exact turns keep values and dtype; resampled ones are float32 for
        integer or float32 input (float64 stays float64). The resampled grid
        holds the whole turned image: ``ceil(|cos| cols + |sin| rows)`` columns
        and ``ceil(|sin| cols + |cos| rows)`` rows.
    frame : CanonicalFrame
        Maps arrays and crater lists back (:meth:`CanonicalFrame.array_to_input`,
        :meth:`CanonicalFrame.craters_to_input`).
    """
    data = np.asarray(image)
    if data.ndim not in (2, 3) or min(data.shape[-2:]) < 1:
        raise InputError(f"image must have shape (rows, cols) or (bands, rows, cols), got {data.shape}")
    frame = canonical_frame(data.shape[-2:], azimuth_deg, tolerance_deg)
    return frame.array_to_canonical(data, order=order, fill=fill), frame


def canonical_frame(shape: tuple[int, int], azimuth_deg: float,
                    tolerance_deg: float = ROTATION_TOLERANCE_DEG) -> CanonicalFrame:
    """The :class:`CanonicalFrame` :func:`to_canonical` uses for an input grid of ``shape`` ``(rows, cols)``.

    Nothing is resampled: for records (``frame.to_dict()``) and for mapping coordinates.
    """
    rows, cols = (int(v) for v in tuple(shape)[-2:])
    angle, k = canonical_rotation(azimuth_deg, tolerance_deg)
    if k is not None:
        out = (rows, cols) if k % 2 == 0 else (cols, rows)
    else:
        c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        out = (int(math.ceil(s * cols + c * rows - 1e-9)), int(math.ceil(c * cols + s * rows - 1e-9)))
    return CanonicalFrame((rows, cols), out, float(angle), k, float(azimuth_deg) % 360.0)


def azimuth_from_craters(
    image: np.ndarray, craters: np.ndarray, min_radius: float = 4.0, missing: np.ndarray | None = None, chip: int = 32
) -> tuple[float, int]:
    """The sun azimuth read from known (labelled) craters: the dark inner wall faces the sun.

    Every crater of radius ``>= min_radius`` lying wholly inside the image is
    resampled (bilinear) to a ``chip`` × ``chip`` window spanning three radii,
    standardised (zero mean inside the rim, unit standard deviation), and the
    chips are averaged (:func:`crater_sun_chips`). Inside the rim of the mean chip the brightness-weighted
    mean position points to the bright far wall; the light comes from the
    opposite side (:func:`azimuth_from_chips`). A label-based reference (for training images and for
    checking :func:`estimate_sun_azimuth`), not an estimator for new images.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
    craters : ndarray, shape (n, >=3)
        ``x_px, y_px, radius_px`` (pixel centres at integers).
    min_radius : float
        Smaller craters are skipped, pixels.
    missing : ndarray of bool, shape (rows, cols), optional
        Chips with more than 5 % missing pixels are skipped.
    chip : int
        Side of the resampled chips.

    Returns
    -------
    azimuth_deg : float
        Degrees clockwise from the top, light coming from (NaN when no crater was usable).
    n_used : int
        Craters that entered the mean chip.
    """
    chips = crater_sun_chips(image, craters, min_radius, missing, chip)
    return azimuth_from_chips(chips), len(chips)


def crater_sun_chips(image: np.ndarray, craters: np.ndarray, min_radius: float = 4.0,
                     missing: np.ndarray | None = None, chip: int = 32) -> np.ndarray:
    """The standardised chips :func:`azimuth_from_craters` averages, float64 ``(n_used, chip, chip)``.

    Each usable crater (radius ``>= min_radius``, wholly inside the image, at most 5 % of its chip missing,
    not flat) resampled (bilinear) to ``chip`` × ``chip`` pixels spanning three radii, minus its mean inside
    the rim, divided by its standard deviation.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"azimuth_from_craters: image must be 2-D, got shape {data.shape}")
    craters = np.asarray(craters, dtype=np.float64).reshape(-1, np.shape(craters)[-1] if np.size(craters) else 3)
    yy, xx, disk = _chip_grid(chip)
    chips = []
    for x, y, r in craters[:, :3]:
        if r < min_radius:
            continue
        rows, cols = y + yy * r, x + xx * r
        if rows.min() < 0 or cols.min() < 0 or rows.max() > data.shape[0] - 1 or cols.max() > data.shape[1] - 1:
            continue
        if missing is not None and ndimage.map_coordinates(np.asarray(missing, np.float64), [rows, cols], order=0).mean() > 0.05:
            continue
        values = ndimage.map_coordinates(data, [rows, cols], order=1)
        spread = values.std()
        if not np.isfinite(spread) or spread <= 0:
            continue
        chips.append((values - values[disk].mean()) / spread)
    return np.stack(chips) if chips else np.zeros((0, chip, chip))


def _chip_grid(chip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    grid = (np.arange(chip) - (chip - 1) / 2.0) / (chip / 3.0)  # in radii, spanning [-1.5, 1.5]
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    return yy, xx, xx**2 + yy**2 <= 1.0


def azimuth_from_chips(chips: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray:
    """Where the light of the mean of :func:`crater_sun_chips` comes from, degrees clockwise from the top.

    ``weights`` ``(n_chips,)`` or ``(resamples, n_chips)``: a weighted mean per row instead (a bootstrap's
    counts), one azimuth per row. NaN without chips.
    """
    chips = np.asarray(chips, np.float64)
    if not len(chips):
        return float("nan") if weights is None or np.ndim(weights) == 1 else np.full(len(weights), np.nan)
    yy, xx, disk = _chip_grid(chips.shape[-1])
    inside = chips[:, disk]  # (n, pixels in the rim)
    w = np.full(len(chips), 1.0 / len(chips)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum(axis=-1, keepdims=True)
    mean = w @ inside  # (pixels,) or (resamples, pixels)
    bright_x, bright_y = mean @ xx[disk], mean @ yy[disk]
    if np.ndim(bright_x) == 0:
        return _azimuth_of(-float(bright_x), -float(bright_y))
    return np.array([_azimuth_of(-x, -y) for x, y in zip(bright_x.tolist(), bright_y.tolist())])
