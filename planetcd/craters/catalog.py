"""Crater catalogs: pixels to map coordinates to planetocentric lon/lat and km; I/O; tile merging.

A :class:`Catalog` holds craters found in an image (pixel centre and radius,
confidence) together with what is needed to place them on the body: the
raster's affine transform and CRS (or only a pixel size). From these it derives
map coordinates, planetocentric longitude/latitude (degrees, east-positive) and
diameters in km through pyproj, on the ellipsoid of the CRS (Mars, Moon, or any
body; ``body_radius_m`` supplies the sphere when the CRS is a plain projection
string without one). Catalogs read from geographic lists (lunar catalogs,
craterstats files) carry lon/lat/diameter only.

Pixel convention: ``x_px`` is the column and ``y_px`` the row of the crater
centre, with integer values at pixel centres (array indices, as in
scikit-image); the map position is ``transform * (x_px + 0.5, y_px + 0.5)``.

Readers: Pascal-VOC boxes, PyCDA CSV, Robbins-style CSV, the lunar catalogs of
``../shared/data/moon-catalogs``, craterstats ``.scc`` / ``.diam`` (crater counts
with fractions), and planetcd's own CSV / GeoPackage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datasets import crater_labels
from ..errors import InputError
from .dating import CraterCounts
from .match import DEFAULT_IOU, suppress_duplicates

__all__ = [
    "Catalog",
    "BODY_RADII_M",
    "merge_catalogs",
    "read_catalog",
    "read_catalog_csv",
    "read_catalog_gpkg",
    "read_counts",
    "read_craterstats",
    "read_diam",
    "read_moon_catalog",
    "read_pycda",
    "read_robbins",
    "read_scc",
    "read_voc",
    "write_diam",
]

log = logging.getLogger("planetcd")

#: Mean radii (IAU) of the bodies planetcd knows by name, metres.
BODY_RADII_M = {"mars": 3_396_190.0, "moon": 1_737_400.0, "mercury": 2_439_400.0}
#: Geographic (planetocentric, sphere) CRSs of the IAU 2015 register.
_BODY_GEOGRAPHIC = {"mars": "IAU_2015:49900", "moon": "IAU_2015:30100", "mercury": "IAU_2015:19900"}


def _to_crs(crs: Any):
    if crs is None:  # an image without a map grid (a PNG, an array): pyproj is not needed
        return None
    from pyproj import CRS

    try:
        return CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError and others
        raise InputError(f"cannot understand the CRS {str(crs)[:60]!r}: {exc}") from None


def _to_affine(transform: Any):
    from affine import Affine

    if transform is None or isinstance(transform, Affine):
        return transform
    values = tuple(float(v) for v in transform)
    if len(values) not in (6, 9):
        raise InputError("a transform needs the six affine coefficients a, b, c, d, e, f")
    return Affine(*values[:6])


def _sphere_crs(crs, radius_m: float):
    """The same projection on a sphere of ``radius_m`` (for plain projection strings)."""
    from pyproj import CRS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = crs.to_dict() if crs is not None else {"proj": "longlat"}
    for key in ("ellps", "datum", "R", "a", "b", "rf", "f", "towgs84", "nadgrids", "type"):
        params.pop(key, None)
    params["R"] = float(radius_m)
    params.setdefault("no_defs", None)
    return CRS.from_dict(params)


def _body_geographic_crs(radius_m: float):
    """A geographic CRS for a body: the IAU 2015 sphere when the radius is a known body's."""
    from pyproj import CRS

    for body, body_radius in BODY_RADII_M.items():
        if abs(radius_m - body_radius) < 1.0:
            try:
                return CRS.from_user_input(_BODY_GEOGRAPHIC[body])
            except Exception:
                break
    return CRS.from_proj4(f"+proj=longlat +R={float(radius_m)} +no_defs +type=crs")


def _body_name(radius_m: float | None, crs=None) -> str:
    text = (crs.to_wkt() if crs is not None else "").lower()
    for body in BODY_RADII_M:
        if body in text:
            return body.title()
    if radius_m is not None:
        for body, body_radius in BODY_RADII_M.items():
            if abs(radius_m - body_radius) < 5_000:
                return body.title()
    return "unknown"


@dataclass
class Catalog:
    """Craters of one image (or one merged set), with their place on the body.

    Parameters
    ----------
    x_px, y_px, radius_px : ndarray (n,)
        Centre column/row and radius in pixels (``nan`` for craters known only
        by longitude/latitude).
    confidence : ndarray (n,)
        Detection score in ``0..1`` (1 for catalogued craters).
    transform : affine.Affine or 6-tuple, optional
        Pixel → map coordinates of the source raster (rasterio convention).
    crs : pyproj/rasterio CRS, WKT or proj string, optional
        CRS of the map coordinates; kept as given for output.
    body_radius_m : float, optional
        Sphere radius to use when the CRS names no body (plain projection
        strings, which pyproj would otherwise put on the WGS 84 Earth); else
        taken from the CRS's ellipsoid.
    pixel_size_m : float, optional
        Ground size of a pixel, for diameters when there is no transform/CRS.
    lon_deg, lat_deg, diameter_km : ndarray (n,), optional
        Planetocentric east longitude and latitude (degrees) and diameter (km);
        derived from the pixels when a transform and CRS are given.
    name : str
    metadata : dict, optional
        How the catalogue was made (e.g. ``planetcd segment``'s model and sun
        record: ``{"sun": {"sun_azimuth_deg": 90.0, "source": "given", ...}}``);
        JSON-ready values. Written as the GeoPackage layer's metadata (one
        item per key, the value JSON-encoded) and read back by
        :func:`read_catalog_gpkg`; not in the CSV (``run.json`` sits beside it).
    body_assumed : bool
        ``True`` when no file or caller named the body and ``body_radius_m`` is
        planetcd's guess (the Moon, for a lon/lat list that names no body);
        :func:`planetcd.craters.match.match_catalogs` then takes the other
        list's body, and :meth:`to_counts` leaves the body unknown.
    """

    x_px: np.ndarray
    y_px: np.ndarray
    radius_px: np.ndarray
    confidence: np.ndarray | None = None
    transform: Any = None
    crs: Any = None
    body_radius_m: float | None = None
    pixel_size_m: float | None = None
    lon_deg: np.ndarray | None = None
    lat_deg: np.ndarray | None = None
    diameter_km: np.ndarray | None = None
    name: str = ""
    metadata: dict = field(default_factory=dict, compare=False)
    body_assumed: bool = False
    _pyproj_crs: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.x_px = np.asarray(self.x_px, dtype=np.float64).reshape(-1)
        self.y_px = np.asarray(self.y_px, dtype=np.float64).reshape(-1)
        self.radius_px = np.asarray(self.radius_px, dtype=np.float64).reshape(-1)
        n = len(self.x_px)
        if self.confidence is None:
            self.confidence = np.ones(n)
        self.confidence = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
        if not (len(self.y_px) == len(self.radius_px) == len(self.confidence) == n):
            raise InputError("catalog columns differ in length")
        self.transform = _to_affine(self.transform)
        self._pyproj_crs = _to_crs(self.crs)
        if self._pyproj_crs is not None and self.body_radius_m is None:
            ellipsoid = self._pyproj_crs.ellipsoid
            if ellipsoid is not None:
                self.body_radius_m = float(ellipsoid.semi_major_metre)
                if "wgs 84" in (ellipsoid.name or "").lower():
                    log.warning("the CRS is on the WGS 84 Earth ellipsoid; pass body_radius_m for a planetary body")
        for name in ("lon_deg", "lat_deg", "diameter_km"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64).reshape(-1)
                if len(value) != n:
                    raise InputError(f"catalog column {name} differs in length")
                setattr(self, name, value)
        if self.lat_deg is not None and np.any(np.abs(self.lat_deg) > 90.0):
            worst = float(self.lat_deg[np.nanargmax(np.abs(self.lat_deg))])
            raise InputError(f"latitudes beyond ±90° (up to {worst:g}°): are the longitude and latitude columns swapped?")
        if self.lon_deg is None and self.transform is not None and self._pyproj_crs is not None:
            self.lon_deg, self.lat_deg, self.diameter_km = self._geographic()
        elif self.diameter_km is None and self.pixel_size_m is not None:
            self.diameter_km = 2 * self.radius_px * float(self.pixel_size_m) / 1000.0

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pixels(
        cls,
        craters: np.ndarray,
        transform: Any = None,
        crs: Any = None,
        pixel_size_m: float | None = None,
        body_radius_m: float | None = None,
        name: str = "",
    ) -> Catalog:
        """A catalog from an array of shape (n, 3) or (n, 4): ``x_px, y_px, radius_px[, confidence]``."""
        craters = np.asarray(craters, dtype=np.float64)
        if craters.size == 0:
            craters = craters.reshape(0, 4)
        if craters.ndim != 2 or craters.shape[1] not in (3, 4):
            raise InputError(f"craters must have shape (n, 3) or (n, 4); got {craters.shape}")
        confidence = craters[:, 3] if craters.shape[1] == 4 else None
        return cls(
            craters[:, 0], craters[:, 1], craters[:, 2], confidence, transform=transform, crs=crs,
            pixel_size_m=pixel_size_m, body_radius_m=body_radius_m, name=name,
        )

    @classmethod
    def from_lonlat(
        cls,
        lon_deg: np.ndarray,
        lat_deg: np.ndarray,
        diameter_km: np.ndarray,
        body_radius_m: float,
        confidence: np.ndarray | None = None,
        crs: Any = None,
        name: str = "",
        body_assumed: bool = False,
    ) -> Catalog:
        """A catalog known only by planetocentric lon/lat (degrees) and diameter (km).

        ``body_assumed``: ``body_radius_m`` is a guess, not named by the source (see :class:`Catalog`).
        """
        lon = np.asarray(lon_deg, dtype=np.float64).reshape(-1)
        nan = np.full(lon.shape, np.nan)
        return cls(
            nan, nan.copy(), nan.copy(), confidence, crs=crs if crs is not None else _body_geographic_crs(body_radius_m),
            body_radius_m=float(body_radius_m), lon_deg=lon, lat_deg=lat_deg, diameter_km=diameter_km, name=name,
            body_assumed=body_assumed,
        )

    def on_body(self, body_radius_m: float) -> Catalog:
        """The same craters on a body of radius ``body_radius_m`` (m), for a catalog whose body was assumed.

        Only lon/lat catalogs (no transform) can move: their lon/lat and km diameters stay, the
        geographic CRS becomes the body's.
        """
        if self.transform is not None:
            raise InputError("a georeferenced catalog keeps the body of its CRS")
        return replace(self, body_radius_m=float(body_radius_m), crs=_body_geographic_crs(body_radius_m), body_assumed=False)

    # ------------------------------------------------------------------ derived values

    def __len__(self) -> int:
        return len(self.x_px)

    def __array__(self, dtype=None, copy=None):
        array = np.stack([self.x_px, self.y_px, self.radius_px, self.confidence], axis=1)
        return array.astype(dtype) if dtype is not None else array

    @property
    def pixels(self) -> np.ndarray:
        """``(n, 4)`` array ``x_px, y_px, radius_px, confidence``."""
        return np.asarray(self)

    @property
    def radius_km(self) -> np.ndarray | None:
        return None if self.diameter_km is None else self.diameter_km / 2.0

    @property
    def body(self) -> str:
        """``"Mars"``, ``"Moon"``, … from the CRS or the body radius."""
        return _body_name(self.body_radius_m, self._pyproj_crs)

    @property
    def map_pixel_size(self) -> float | None:
        """Mean side of a pixel in map units (square root of the transform's determinant)."""
        if self.transform is None:
            return None
        return float(np.sqrt(abs(self.transform.determinant)))

    @property
    def x_map(self) -> np.ndarray | None:
        return None if self.transform is None else self._map()[0]

    @property
    def y_map(self) -> np.ndarray | None:
        return None if self.transform is None else self._map()[1]

    @property
    def radius_map(self) -> np.ndarray | None:
        return None if self.transform is None else self.radius_px * self.map_pixel_size

    def _map(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.transform
        col, row = self.x_px + 0.5, self.y_px + 0.5
        return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f

    def _math_crs(self):
        """The CRS used for geodesy: the source CRS, or its sphere twin with ``body_radius_m``."""
        crs = self._pyproj_crs
        ellipsoid = crs.ellipsoid if crs is not None else None
        if ellipsoid is not None and self.body_radius_m is not None and abs(ellipsoid.semi_major_metre - self.body_radius_m) > 1e-3:
            return _sphere_crs(crs, self.body_radius_m)
        return crs

    def _geographic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Planetocentric lon/lat (deg) and diameter (km) from pixels, through the CRS."""
        from pyproj import Geod, Transformer

        crs = self._math_crs()
        to_geo = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        x, y = self._map()
        r = self.radius_map
        lon, lat = to_geo.transform(x, y)
        ellipsoid = crs.ellipsoid
        a, b = ellipsoid.semi_major_metre, ellipsoid.semi_minor_metre
        geod = Geod(a=a, b=b)
        # Diameter: mean of the geodesic east-west and north-south extents of the circle.
        lon_e, lat_e = to_geo.transform(x + r, y)
        lon_w, lat_w = to_geo.transform(x - r, y)
        lon_n, lat_n = to_geo.transform(x, y + r)
        lon_s, lat_s = to_geo.transform(x, y - r)
        _, _, ew = geod.inv(lon_w, lat_w, lon_e, lat_e)
        _, _, ns = geod.inv(lon_s, lat_s, lon_n, lat_n)
        diameter_km = (np.asarray(ew) + np.asarray(ns)) / 2.0 / 1000.0
        lat = np.asarray(lat, dtype=np.float64)
        if b != a:  # geodetic -> planetocentric latitude
            lat = np.rad2deg(np.arctan((b / a) ** 2 * np.tan(np.deg2rad(lat))))
        lon = (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0
        return lon, lat, diameter_km

    def subset(self, index: np.ndarray) -> Catalog:
        """The craters at ``index`` (integer or boolean array)."""
        picks = {
            name: (None if getattr(self, name) is None else getattr(self, name)[index])
            for name in ("x_px", "y_px", "radius_px", "confidence", "lon_deg", "lat_deg", "diameter_km")
        }
        return replace(self, **picks)

    def to_counts(self, area_km2: float, name: str | None = None) -> CraterCounts:
        """Crater counts (diameters in km) on a counting area, for :mod:`planetcd.craters.dating`."""
        if self.diameter_km is None:
            raise InputError("the catalog has no diameters in km: give a pixel size (--pixel-size, metres), or a transform and CRS")
        body_radius_km = None if self.body_assumed or self.body_radius_m is None else self.body_radius_m / 1000.0
        return CraterCounts(self.diameter_km, area_km2, name=self.name if name is None else name, body_radius_km=body_radius_km)

    # ------------------------------------------------------------------ output

    def table(self) -> dict[str, np.ndarray]:
        """Columns for CSV/GeoPackage output (only those the catalog has)."""
        table = {}
        if not np.all(np.isnan(self.x_px)):
            table.update(x_px=self.x_px, y_px=self.y_px, radius_px=self.radius_px)
        table["confidence"] = self.confidence
        if self.transform is not None:
            table.update(x_map=self.x_map, y_map=self.y_map, radius_map=self.radius_map)
        if self.lon_deg is not None:
            table.update(lon_deg=self.lon_deg, lat_deg=self.lat_deg)
        if self.diameter_km is not None:
            table["diameter_km"] = self.diameter_km
        if self.body_radius_m is not None and not self.body_assumed:  # an assumed body stays unnamed on re-reading
            table["body_radius_m"] = np.full(len(self), float(self.body_radius_m))
        return table

    def to_csv(self, path: str | PathLike) -> None:
        """Write the catalog as CSV (atomically)."""
        from ..vector import write_csv

        write_csv(path, self.table(), float_format="{:.10g}")

    def to_gpkg(self, path: str | PathLike, geometry: str = "circle", n_vertices: int = 64, layer: str | None = None) -> None:
        """Write the catalog as a GeoPackage layer, in the source CRS (never reprojected).

        Parameters
        ----------
        geometry : {"circle", "point"}
            Crater rims as polygons or centres as points. With a transform: map
            coordinates of the source CRS. Without one but with lon/lat: geodesic
            circles in the body's geographic CRS. Pixel-only catalogs: pixel
            coordinates and no CRS.
        """
        from ..vector import circle_rings, points_wkb, rings_wkb, write_gpkg

        if geometry not in ("circle", "point"):
            raise InputError(f"geometry must be 'circle' or 'point', not {geometry!r}")
        crs = self.crs
        if self.transform is not None:
            x, y, r = self.x_map, self.y_map, self.radius_map
        elif self.lon_deg is not None:
            x, y, r = self.lon_deg, self.lat_deg, None
            crs = self._pyproj_crs if self._pyproj_crs is not None and self._pyproj_crs.is_geographic else _body_geographic_crs(self.body_radius_m)
        else:
            x, y, r, crs = self.x_px, self.y_px, self.radius_px, None
        if geometry == "point":
            wkb, kind = points_wkb(x, y), "Point"
        elif r is not None:
            wkb, kind = rings_wkb(circle_rings(x, y, r, n_vertices)), "Polygon"
        else:
            wkb, kind = rings_wkb(self._geodesic_rings(n_vertices)), "Polygon"
        if crs is not None and not isinstance(crs, str) and not hasattr(crs, "to_wkt"):
            crs = str(crs)
        metadata = {str(key): json.dumps(value, default=str) for key, value in (self.metadata or {}).items()}
        metadata.update(_grid_metadata(self.transform, self.pixel_size_m))
        if self.body_assumed:  # the layer needs a CRS, but the body stays a guess on re-reading
            metadata[BODY_ASSUMED_KEY] = "true"
        write_gpkg(path, self.table(), wkb, kind, crs=crs, layer=layer, metadata=metadata)

    def _geodesic_rings(self, n_vertices: int) -> list[np.ndarray]:
        """Geodesic circles of the craters as closed lon/lat rings (degrees), each of shape (k, 2).

        Longitudes run continuously around each centre (a crater on the antimeridian reaches past
        ±180° instead of wrapping across the map); a circle around a pole is closed along the pole.
        """
        azimuth = np.deg2rad(np.linspace(0.0, 360.0, n_vertices + 1))[None, :]
        rings = []
        chunk = 20_000  # craters per block of (chunk, n_vertices + 1) vertices
        for first in range(0, len(self), chunk):
            lon = self.lon_deg[first : first + chunk, None]
            lat = self.lat_deg[first : first + chunk, None]
            angle = self.diameter_km[first : first + chunk, None] * 500.0 / self.body_radius_m  # radius, radians
            ring_lon, ring_lat = _sphere_destination(lon, lat, azimuth, angle)
            ring_lon = lon + (ring_lon - lon + 180.0) % 360.0 - 180.0
            ring_lon[:, -1], ring_lat[:, -1] = ring_lon[:, 0], ring_lat[:, 0]
            polar = np.abs(lat[:, 0]) + np.rad2deg(angle[:, 0]) >= 90.0
            for k in range(len(lon)):
                if polar[k]:
                    rings.append(_polar_ring(lon[k, 0], ring_lon[k, :-1], ring_lat[k, :-1], np.sign(lat[k, 0]) or 1.0))
                else:
                    rings.append(np.stack([ring_lon[k], ring_lat[k]], axis=1))
        return rings


def _sphere_destination(lon: np.ndarray, lat: np.ndarray, azimuth: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points at angular distance ``angle`` (radians) and ``azimuth`` (radians, clockwise from north) from
    ``lon``, ``lat`` (degrees) on a sphere: the great-circle destination formula, broadcast over the inputs.

    Returns
    -------
    lon, lat : ndarray (broadcast shape), degrees; longitudes in -180..180.
    """
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    sin_phi2 = np.sin(phi) * np.cos(angle) + np.cos(phi) * np.sin(angle) * np.cos(azimuth)
    phi2 = np.arcsin(np.clip(sin_phi2, -1.0, 1.0))
    lam2 = lam + np.arctan2(np.sin(azimuth) * np.sin(angle) * np.cos(phi), np.cos(angle) - np.sin(phi) * sin_phi2)
    return (np.rad2deg(lam2) + 180.0) % 360.0 - 180.0, np.rad2deg(phi2)


def _polar_ring(lon: float, ring_lon: np.ndarray, ring_lat: np.ndarray, pole: float) -> np.ndarray:
    """A closed lon/lat ring (degrees) of a circle around a pole: the circle over ``lon ± 180°``, then along
    the pole (``pole`` +1 north, -1 south), as a cap is drawn on a longitude-latitude map."""
    order = np.argsort(ring_lon)
    ring_lon, ring_lat = ring_lon[order], ring_lat[order]
    west, east = lon - 180.0, lon + 180.0
    edge_lat = 0.5 * float(ring_lat[0] + ring_lat[-1])  # the two vertices either side of the seam lon ± 180°
    lons = np.concatenate([[west], ring_lon, [east, east, west, west]])
    lats = np.concatenate([[edge_lat], ring_lat, [edge_lat, 90.0 * pole, 90.0 * pole, edge_lat]])
    return np.stack([lons, lats], axis=1)


# ----------------------------------------------------------------------------- merging


def merge_catalogs(
    catalogs: Sequence[Catalog],
    mode: str = "deepmoon",
    *,
    dist2_threshold: float | None = None,
    radius_threshold: float | None = None,
    iou_threshold: float = DEFAULT_IOU,
) -> Catalog:
    """Merge detections of overlapping tiles, removing duplicates geodesically.

    Craters of every tile are pooled; among craters that are the same by the
    :mod:`planetcd.craters.match` rule (centre distance on the body's sphere,
    radii in km), the most confident is kept.

    Returns
    -------
    Catalog
        When every tile has a transform and the same CRS, pixel positions are
        expressed in the first tile's pixel frame (with its transform); otherwise
        the merged catalog holds lon/lat/diameter only.
    """
    catalogs = [c for c in catalogs if c is not None]
    if not catalogs:
        raise InputError("no catalogs to merge")
    if any(c.lon_deg is None for c in catalogs):
        raise InputError("merging needs geographic positions: give every tile a transform and CRS")
    radii = {round(c.body_radius_m or 0.0) for c in catalogs}
    if len(radii) > 1:
        raise InputError(f"catalogs of different bodies (radii {sorted(radii)} m) cannot be merged")
    body_radius = catalogs[0].body_radius_m
    lon = np.concatenate([c.lon_deg for c in catalogs])
    lat = np.concatenate([c.lat_deg for c in catalogs])
    diameter = np.concatenate([c.diameter_km for c in catalogs])
    confidence = np.concatenate([c.confidence for c in catalogs])
    pooled = Catalog.from_lonlat(lon, lat, diameter, body_radius, confidence)
    keep = suppress_duplicates(
        pooled, confidence, mode, dist2_threshold=dist2_threshold, radius_threshold=radius_threshold, iou_threshold=iou_threshold
    )
    first = catalogs[0]
    same_frame = all(c.transform is not None for c in catalogs) and all(
        c._pyproj_crs is not None and c._pyproj_crs == first._pyproj_crs for c in catalogs
    )
    if not same_frame:
        return pooled.subset(keep)
    inverse = ~first.transform
    xs, ys, rs = [], [], []
    for c in catalogs:
        x, y = c._map()
        col = inverse.a * x + inverse.b * y + inverse.c - 0.5
        row = inverse.d * x + inverse.e * y + inverse.f - 0.5
        xs.append(col)
        ys.append(row)
        rs.append(c.radius_map / first.map_pixel_size)
    return Catalog(
        np.concatenate(xs)[keep], np.concatenate(ys)[keep], np.concatenate(rs)[keep], confidence[keep],
        transform=first.transform, crs=first.crs, body_radius_m=body_radius,
        lon_deg=lon[keep], lat_deg=lat[keep], diameter_km=diameter[keep], name=first.name,
    )


# ----------------------------------------------------------------------------- readers


def _existing(path: str | PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a crater list")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path


@contextlib.contextmanager
def _about(path: str | PathLike):
    """Name the file in an :class:`InputError` raised while reading it (one line)."""
    try:
        yield
    except InputError as exc:
        text = " ".join(str(exc).split())
        if text.startswith(str(path)):
            raise
        raise InputError(f"{path}: {text}") from None


def _check_columns(path: Path, columns) -> None:
    """Refuse half a crater description: pixel positions without radii, a longitude without a latitude."""
    has = [c for c in ("x_px", "y_px", "radius_px") if c in columns]
    geo = all(c in columns for c in ("lon_deg", "lat_deg", "diameter_km"))
    if has and len(has) < 3 and not geo:
        missing = [c for c in ("x_px", "y_px", "radius_px") if c not in columns]
        raise InputError(f"{path}: crater positions without {', '.join(missing)} column(s)")
    if ("lon_deg" in columns) != ("lat_deg" in columns):
        raise InputError(f"{path}: needs both lon_deg and lat_deg columns, or neither")


def read_voc(path: str | PathLike, **georef) -> Catalog:
    """Pascal-VOC boxes (see :func:`planetcd.datasets.crater_labels.read_voc_boxes`) as a catalog."""
    return Catalog.from_pixels(crater_labels.read_voc_boxes(path), name=Path(path).stem, **georef)


def read_pycda(path: str | PathLike, **georef) -> Catalog:
    """A PyCDA label CSV (pixel ``long``, ``lat``, ``diameter``) as a catalog."""
    return Catalog.from_pixels(crater_labels.read_pycda_csv(path), name=Path(path).stem, **georef)


def read_robbins(path: str | PathLike, body_radius_m: float = BODY_RADII_M["mars"]) -> Catalog:
    """A Robbins & Hynek (2012) tile CSV: pixel columns and planetocentric lon/lat/diameter (km)."""
    pixels = crater_labels.read_robbins_csv(path)
    lon, lat, diameter = crater_labels.read_csv_columns(
        Path(path), ("LONGITUDE_CIRCLE_IMAGE", "LATITUDE_CIRCLE_IMAGE", "DIAM_CIRCLE_IMAGE")
    )
    return Catalog(
        pixels[:, 0], pixels[:, 1], pixels[:, 2], body_radius_m=body_radius_m, crs=_body_geographic_crs(body_radius_m),
        lon_deg=(lon + 180.0) % 360.0 - 180.0, lat_deg=lat, diameter_km=diameter, name=Path(path).stem,
    )


# Robbins & Hynek (2012, Mars): *_CIRCLE_IMAGE; Robbins (2018, Moon): *_CIRC_IMG in the CSV, DIAM_C_IM in the shapefile.
_LON_NAMES = ("lon_deg", "lon", "long", "longitude", "longitude_circle_image", "lon_circ_img")
_LAT_NAMES = ("lat_deg", "lat", "latitude", "latitude_circle_image", "lat_circ_img")
_DIAM_NAMES = ("diameter_km", "diameter (km)", "diam_km", "diam_circle_image", "diam_circ_img", "diam_c_im", "diam", "diameter")
#: Diameter columns in metres (divided by 1000 on reading).
_DIAM_M_NAMES = ("diameter_m", "diameter (m)", "diam_m")


def _diameter_column(header: list[str]) -> tuple[str | None, float]:
    """The diameter column of a lon/lat list and the factor to km (1 for km columns, 1e-3 for metres)."""
    km = _pick(header, _DIAM_NAMES)
    if km is not None:
        return km, 1.0
    return _pick(header, _DIAM_M_NAMES), 1e-3


def _pick(header: list[str], names: Sequence[str]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    return next((lowered[n] for n in names if n in lowered), None)


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.read(4096)
    except (OSError, UnicodeDecodeError):
        raise InputError(f"{path}: not a text file (a crater list is CSV text)") from None
    if not first.strip():
        raise InputError(f"{path}: empty file")
    line = re.split(r"\r\n|\r|\n", first, maxsplit=1)[0]
    separator = next((sep for sep in (";", "\t") if "," not in line and sep in line), None)
    if separator is not None:
        name = "';'" if separator == ";" else "tabs"
        raise InputError(f"{path}: columns separated by {name}; planetcd reads comma-separated CSV (save it with ',')")
    return [h.strip() for h in line.split(",")]


def read_moon_catalog(path: str | PathLike, body_radius_m: float | None = None) -> Catalog:
    """A lon/lat crater list CSV, such as the lunar catalogs (``LROCCraters.csv``, ``HeadCraters.csv``).

    Columns: longitude and latitude (degrees; longitudes 0-360 or -180-180) and a
    diameter in km (``Diameter (km)``, ``Diam_km``, ``diameter``...) or in metres
    (``diameter_m``, ``Diameter (m)``: divided by 1000). Any line endings are
    accepted (``HeadCraters.csv`` has old Mac ``\\r`` endings).

    Parameters
    ----------
    body_radius_m : float, optional
        The body's radius (m). Default: the Moon, marked as assumed
        (``Catalog.body_assumed``), since the file names no body.
    """
    path = _existing(path)
    header = _csv_header(path)
    (d_col, to_km), lon_col, lat_col = _diameter_column(header), _pick(header, _LON_NAMES), _pick(header, _LAT_NAMES)
    if None in (lon_col, lat_col, d_col):
        raise InputError(f"{path}: needs longitude, latitude and diameter (km) columns; found {', '.join(header)}")
    lon, lat, diameter = crater_labels.read_csv_columns(path, (lon_col, lat_col, d_col))
    assumed = body_radius_m is None
    return Catalog.from_lonlat(
        (lon + 180.0) % 360.0 - 180.0, lat, diameter * to_km, BODY_RADII_M["moon"] if assumed else body_radius_m,
        name=path.stem, body_assumed=assumed,
    )


_CATALOG_COLUMNS = ("x_px", "y_px", "radius_px", "confidence", "lon_deg", "lat_deg", "diameter_km", "body_radius_m")


def _catalog_csv_sources(header: list[str]) -> tuple[dict[str, str], float]:
    """planetcd column name -> the CSV's column, and the factor of its diameter column to km.

    planetcd's own names first; longitude, latitude and diameter also under the names
    of other lists (``lon``, ``Latitude``, ``diam_m``...), as :func:`read_moon_catalog`.
    """
    lowered = [h.lower() for h in header]
    sources = {c: header[lowered.index(c)] for c in _CATALOG_COLUMNS if c in lowered}
    for name, aliases in (("lon_deg", _LON_NAMES), ("lat_deg", _LAT_NAMES)):
        if name not in sources and _pick(header, aliases) is not None:
            sources[name] = _pick(header, aliases)
    to_km = 1.0
    if "diameter_km" not in sources and "lon_deg" in sources:
        column, to_km = _diameter_column(header)
        if column is not None:
            sources["diameter_km"] = column
    return sources, to_km


def read_catalog_csv(path: str | PathLike, body_radius_m: float | None = None) -> Catalog:
    """planetcd's own catalog CSV (see :meth:`Catalog.to_csv`), or any CSV with lon/lat/diameter.

    The body: ``body_radius_m`` (m) when given, else the file's ``body_radius_m``
    column; a lon/lat list with neither is taken as the Moon, marked as assumed
    (``Catalog.body_assumed``).
    """
    path = _existing(path)
    header = _csv_header(path)
    sources, to_km = _catalog_csv_sources(header)
    if not sources:
        return read_moon_catalog(path, body_radius_m)
    wanted = list(sources)
    values = crater_labels.read_csv_columns(path, tuple(sources[c] for c in wanted))
    columns = dict(zip(wanted, values))
    if "diameter_km" in columns:
        columns["diameter_km"] = columns["diameter_km"] * to_km
    n = len(values[0])
    nan = np.full(n, np.nan)
    if body_radius_m is None and "body_radius_m" in columns and n:
        body_radius_m = float(columns["body_radius_m"][0])
    has_geo = "lon_deg" in columns and "lat_deg" in columns
    assumed = has_geo and body_radius_m is None
    if assumed:
        body_radius_m = BODY_RADII_M["moon"]
    if "x_px" not in columns and not has_geo and "diameter_km" not in columns:
        raise InputError(f"{path}: no crater columns (x_px/y_px/radius_px, lon_deg/lat_deg or diameter_km)")
    _check_columns(path, columns)
    lon = columns.get("lon_deg")
    return Catalog(
        columns.get("x_px", nan), columns.get("y_px", nan), columns.get("radius_px", nan), columns.get("confidence"),
        body_radius_m=body_radius_m, crs=_body_geographic_crs(body_radius_m) if has_geo else None,
        lon_deg=None if lon is None else (lon + 180.0) % 360.0 - 180.0, lat_deg=columns.get("lat_deg"),
        diameter_km=columns.get("diameter_km"), name=path.stem, body_assumed=assumed,
    )


def read_catalog_gpkg(path: str | PathLike, layer: str | None = None) -> Catalog:
    """A crater GeoPackage layer: one written by :meth:`Catalog.to_gpkg`, or one made in a GIS.

    planetcd's columns, CRS and layer metadata come back as written. A layer made elsewhere
    (QGIS) may name its diameter as the CSV readers accept (``Diameter_km``, ``diam_m``...) and
    hold its centres as point geometries of a geographic CRS; text fields are left out.
    """
    import pyogrio
    import pyogrio.raw

    path = _existing(path)
    try:
        meta, _, _, field_data = pyogrio.raw.read(str(path), layer=layer, read_geometry=False)
        layer_metadata = pyogrio.read_info(str(path), layer=layer).get("layer_metadata") or {}
    except Exception as exc:
        raise InputError(f"{path}: not a readable GeoPackage ({str(exc).splitlines()[0]})") from None
    columns = _numeric_fields(meta["fields"], field_data)
    sources, to_km = _catalog_csv_sources(list(columns))
    if "diameter_km" not in sources and _diameter_column(list(columns))[0] is not None:  # centres in the geometry
        sources["diameter_km"], to_km = _diameter_column(list(columns))
    columns = {name: columns[source] for name, source in sources.items()}
    if "diameter_km" in columns:
        columns["diameter_km"] = columns["diameter_km"] * to_km
    crs = meta.get("crs")
    if "lon_deg" not in columns and "x_px" not in columns and "diameter_km" in columns:
        geometry = pyogrio.raw.read(str(path), layer=layer, columns=[])[2]  # only when the centres are there
        columns.update(_geographic_points(path, geometry, crs))
    if not any(c in columns for c in ("x_px", "lon_deg", "diameter_km")):
        raise InputError(f"{path}: no crater columns (x_px/y_px/radius_px, lon_deg/lat_deg or diameter_km)")
    _check_columns(path, columns)
    n = len(next(iter(columns.values()))) if columns else 0
    nan = np.full(n, np.nan)
    body_radius = float(columns["body_radius_m"][0]) if "body_radius_m" in columns and n else None
    metadata = _decode_metadata(layer_metadata)
    transform = metadata.pop(GRID_TRANSFORM_KEY, None)
    pixel_size_m = metadata.pop(GRID_PIXEL_SIZE_KEY, None)
    body_assumed = metadata.pop(BODY_ASSUMED_KEY, False) is True
    if transform is not None and (not isinstance(transform, list) or len(transform) != 6):
        raise InputError(f"{path}: layer metadata {GRID_TRANSFORM_KEY} is not six affine coefficients")
    return Catalog(
        columns.get("x_px", nan), columns.get("y_px", nan), columns.get("radius_px", nan), columns.get("confidence"),
        transform=transform, crs=crs, pixel_size_m=pixel_size_m, body_radius_m=body_radius,
        lon_deg=columns.get("lon_deg"), lat_deg=columns.get("lat_deg"), diameter_km=columns.get("diameter_km"),
        name=path.stem, metadata=metadata, body_assumed=body_assumed,
    )


def _numeric_fields(names: Sequence[str], values: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The fields of a layer that hold numbers, as float64 arrays of shape (n,); text fields are left out."""
    columns = {}
    for name, column in zip(names, values):
        try:
            columns[str(name)] = np.asarray(column, dtype=np.float64)
        except (TypeError, ValueError):
            continue
    return columns


def _geographic_points(path: Path, geometry: np.ndarray | None, crs: Any) -> dict[str, np.ndarray]:
    """``lon_deg``/``lat_deg`` (degrees, shape (n,)) from WKB point geometries in a geographic CRS; ``{}`` otherwise."""
    import struct

    crs = _to_crs(crs)
    if geometry is None or len(geometry) == 0 or crs is None or not crs.is_geographic:
        return {}
    xy = []
    for wkb in geometry:
        if wkb is None or len(wkb) < 21:
            return {}
        order = "<" if wkb[0] == 1 else ">"
        kind = struct.unpack(order + "I", wkb[1:5])[0]
        if kind % 1000 != 1:  # Point, Point Z/M (ISO codes 1001, 2001, 3001)
            return {}
        xy.append(struct.unpack(order + "dd", wkb[5:21]))
    lon, lat = np.asarray(xy, dtype=np.float64).T
    return {"lon_deg": (lon + 180.0) % 360.0 - 180.0, "lat_deg": lat}


#: Layer-metadata keys of :meth:`Catalog.to_gpkg` that carry the source grid, so that :func:`read_catalog_gpkg`
#: gives back a catalogue with map coordinates (``x_map``, ``y_map``) and not only its columns.
GRID_TRANSFORM_KEY = "planetcd_transform"
GRID_PIXEL_SIZE_KEY = "planetcd_pixel_size_m"
#: Layer-metadata key marking a catalogue whose body planetcd assumed (:attr:`Catalog.body_assumed`): the layer's
#: CRS is then that guess, and a re-read catalogue is still "body assumed".
BODY_ASSUMED_KEY = "planetcd_body_assumed"


def _grid_metadata(transform, pixel_size_m: float | None) -> dict[str, str]:
    """The source grid as GeoPackage layer metadata items (JSON text): the affine ``a, b, c, d, e, f`` and the
    pixel size in metres, each only when known."""
    items = {}
    if transform is not None:
        items[GRID_TRANSFORM_KEY] = json.dumps([float(v) for v in tuple(transform)[:6]])
    if pixel_size_m is not None:
        items[GRID_PIXEL_SIZE_KEY] = json.dumps(float(pixel_size_m))
    return items


def _decode_metadata(items: dict) -> dict:
    """GeoPackage layer metadata items → values (JSON-decoded where they are JSON, else the text)."""
    out = {}
    for key, text in items.items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            out[key] = text
    return out


# craterstats files ------------------------------------------------------------


def _parse_textstructure(path: Path) -> tuple[dict[str, str], dict[str, dict[str, list[str]]]]:
    """craterstats' ``key = value`` / ``key = {col, col`` … ``}`` text format -> (values, tables)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    values: dict[str, str] = {}
    tables: dict[str, dict[str, list[str]]] = {}
    table_rows: list[list[str]] | None = None
    table_cols: list[str] = []
    table_name = ""
    for raw in re.split(r"\r\n|\r|\n", text):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if table_rows is not None:
            if line.startswith("}"):
                tables[table_name] = {c: [row[i] if i < len(row) else "" for row in table_rows] for i, c in enumerate(table_cols)}
                table_rows = None
                line = line[1:].strip()
                if not line:
                    continue
            else:
                table_rows.append(line.replace(",", " ").split())
                continue
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        key = re.sub(r"[\s\-]+", "_", key).lower()
        if value.startswith("{"):
            table_name = key
            table_cols = [c.strip().lower() for c in value[1:].split(",") if c.strip()]
            table_rows = []
        else:
            values[key] = value
    if table_rows is not None:
        raise InputError(f"{path}: table {table_name!r} is not closed with '}}'")
    return values, tables


def _number(text: str, path: Path, what: str) -> float:
    match = re.match(r"\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)", text or "")
    if not match:
        raise InputError(f"{path}: {what} is not a number ({text!r})")
    return float(match.group(1))


def _craters_table(path: Path, tables: dict, diameter_key: str) -> dict[str, np.ndarray]:
    if "crater" not in tables:
        raise InputError(f"{path}: no 'crater = {{…}}' table")
    table = tables["crater"]
    if diameter_key not in table:
        raise InputError(f"{path}: the crater table has no {diameter_key!r} column")
    try:
        return {name: np.array([float(v) for v in column], dtype=np.float64) for name, column in table.items()}
    except ValueError:
        raise InputError(f"{path}: non-numeric values in the crater table") from None


def read_scc(path: str | PathLike) -> CraterCounts:
    """A craterstats spatial crater count (``.scc``): diameters (km), fractions, total area.

    Returns
    -------
    CraterCounts
        ``fraction`` from the ``fraction`` column of buffered counts (else ones);
        ``perimeter_km`` from ``Total_perimeter`` when present; ``body_radius_km``
        from the ellipsoid's a-axis radius when present.
    """
    path = _existing(path)
    values, tables = _parse_textstructure(path)
    if "total_area" not in values:
        raise InputError(f"{path}: no 'Total_area' line; not a craterstats .scc file")
    table = _craters_table(path, tables, "diam")
    perimeter = _number(values["total_perimeter"], path, "Total_perimeter") if "total_perimeter" in values else None
    radius_m = _scc_radius_m(path, values)
    with _about(path):
        return CraterCounts(
            table["diam"], _number(values["total_area"], path, "Total_area"), table.get("fraction"), perimeter, name=path.stem,
            body_radius_km=None if radius_m is None else radius_m / 1000.0,
        )


def _scc_radius_m(path: Path, values: dict[str, str]) -> float | None:
    """The a-axis radius of a ``.scc`` file's ellipsoid in metres (``None`` when the file has none)."""
    radius_key = next((k for k in ("a_axis_radius", "a_axis") if k in values), None)
    return _number(values[radius_key], path, "a-axis radius") * 1000.0 if radius_key else None


def read_diam(path: str | PathLike) -> CraterCounts:
    """A craterstats diameter list (``.diam``): ``area = …`` and ``crater = {diameter[, fraction…]``.

    The buffered variant with a ``reference_area`` column gives fractions
    ``1 / reference_area`` on a nominal area of 1 km² (as craterstats).
    """
    path = _existing(path)
    values, tables = _parse_textstructure(path)
    table = _craters_table(path, tables, "diameter")
    with _about(path):
        if "reference_area" in table:
            return CraterCounts(table["diameter"], 1.0, 1.0 / table["reference_area"], name=path.stem)
        if "area" not in values:
            raise InputError(f"{path}: no 'area = …' line; not a craterstats .diam file")
        return CraterCounts(table["diameter"], _number(values["area"], path, "area"), table.get("fraction"), name=path.stem)


def write_diam(counts: CraterCounts, path: str | PathLike) -> None:
    """Write crater counts as a craterstats ``.diam`` file (atomically), for craterstats itself.

    Parameters
    ----------
    counts : CraterCounts
        Diameters (km), fractions and the counting area (km²).
    path : path-like
        The ``.diam`` file: ``area = …`` (km²) and a ``crater = {diameter, fraction`` table,
        the "new format" of craterstats' sample ``.diam`` (read back by :func:`read_diam`).
    """
    from ..raster import atomic_output

    lines = [
        f"# crater counts written by planetcd: {counts.name or 'count'}",
        "# area, km^2",
        f"area = {counts.area_km2:.10g}",
        "#",
        "#              km        -",
        "crater = {diameter, fraction",
        *(f"{d:.10g} {f:.10g}" for d, f in zip(counts.diameter_km, counts.fraction)),
        "}",
    ]
    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_craterstats(path: str | PathLike) -> CraterCounts:
    """A ``.scc`` or ``.diam`` file, by extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".scc":
        return read_scc(path)
    if suffix == ".diam":
        return read_diam(path)
    raise InputError(f"{path}: not a craterstats .scc or .diam file")


def _scc_catalog(path: Path) -> Catalog:
    values, tables = _parse_textstructure(path)
    table = _craters_table(path, tables, "diam")
    radius_m = _scc_radius_m(path, values)
    if radius_m is None or "lon" not in table:
        raise InputError(f"{path}: needs an a-axis radius and lon/lat columns to be read as a catalog")
    return Catalog.from_lonlat(table["lon"], table["lat"], table["diam"], radius_m, name=path.stem)


def read_catalog(path: str | PathLike, **options) -> Catalog:
    """Any crater list planetcd reads, as a :class:`Catalog` (format from the extension and header).

    ``.xml`` Pascal-VOC; ``.gpkg`` planetcd GeoPackage; ``.scc`` craterstats (with
    lon/lat); ``.csv``: planetcd, PyCDA, Robbins or a lunar catalog, recognised by
    their columns. ``options`` go to the reader (georeferencing of pixel lists:
    ``transform``, ``crs``, ``pixel_size_m``, ``body_radius_m``).
    """
    path = _existing(path)
    with _about(path):
        return _read_catalog(path, **options)


def _read_catalog(path: Path, **options) -> Catalog:
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return read_voc(path, **options)
    if suffix == ".gpkg":
        return read_catalog_gpkg(path)
    if suffix == ".scc":
        return _scc_catalog(path)
    if suffix == ".diam":
        raise InputError(f"{path}: a .diam file holds diameters only, no crater positions (date it with `planetcd age`)")
    if suffix in (".csv", ".txt"):
        header = {h.lower() for h in _csv_header(path)}
        if {"long_x_px", "lat_y_px", "rad_px"} <= header:
            return read_robbins(path, **{k: v for k, v in options.items() if k == "body_radius_m"})
        if _is_pycda(path):
            return read_pycda(path, **options)
        if "x_px" in header or "lon_deg" in header or "diameter_km" in header:
            return read_catalog_csv(path, options.get("body_radius_m"))
        return read_moon_catalog(path, options.get("body_radius_m"))
    raise InputError(f"{path}: unknown crater list format {suffix!r} (use .csv, .gpkg, .xml, .scc or .diam)")


def _is_pycda(path: Path) -> bool:
    """A PyCDA label CSV: columns ``long``, ``lat``, ``diameter`` as PyCDA writes them (lower case), in pixels.

    Negative positions are longitudes and latitudes in degrees, not pixels: such a list (and
    ``Long``, ``Lat``, ``Diameter``) is a lon/lat list (:func:`read_moon_catalog`).
    """
    if not {"long", "lat", "diameter"} <= set(_csv_header(path)):
        return False
    x, y = crater_labels.read_csv_columns(path, ("long", "lat"))
    return bool(np.all(x >= 0) and np.all(y >= 0))


def read_counts(path: str | PathLike, area_km2: float | None = None, **options) -> CraterCounts:
    """Crater counts for dating from any catalog format.

    ``.scc`` / ``.diam`` carry their area (``area_km2`` overrides it); every other
    format needs ``area_km2`` and diameters in km (georeferenced or with a pixel size).
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".scc", ".diam"):
        counts = read_craterstats(path)
        if area_km2 is not None:
            with _about(path):
                counts = replace(counts, area_km2=area_km2)
        return counts
    if area_km2 is None:
        raise InputError(f"{path}: a crater list without a counting area; give the area in km² (area_km2)")
    catalog = read_catalog(path, **options)
    with _about(path):
        return catalog.to_counts(area_km2)
