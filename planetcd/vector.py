"""Tables out: CSV and GeoPackage, written atomically, in the source CRS.

Mars and the Moon have no WGS 84, so vector outputs are GeoPackages in the
CRS of the raster they come from (never RFC 7946 GeoJSON). Geometry is built
as WKB here, so only pyogrio (which bundles GDAL) is needed.
"""

from __future__ import annotations

import csv
import struct
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .raster import PathLike, atomic_output

_WKB_POINT = 1
_WKB_POLYGON = 3


def points_wkb(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Little-endian WKB points; ``x``, ``y`` of shape (n,) -> object array of bytes (n,)."""
    return np.array([struct.pack("<BIdd", 1, _WKB_POINT, float(a), float(b)) for a, b in zip(x, y)], dtype=object)


def rings_wkb(rings: Sequence[np.ndarray]) -> np.ndarray:
    """Little-endian WKB polygons from closed exterior rings, each of shape (k, 2) -> (n,) bytes."""
    out = []
    for ring in rings:
        ring = np.asarray(ring, dtype="<f8")
        out.append(struct.pack("<BIII", 1, _WKB_POLYGON, 1, len(ring)) + ring.tobytes())
    return np.array(out, dtype=object)


def box_rings(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> list[np.ndarray]:
    """Closed rectangular rings (5 vertices) from corner coordinates, each of shape (5, 2)."""
    return [np.array([[a, b], [c, b], [c, d], [a, d], [a, b]], float) for a, b, c, d in zip(x0, y0, x1, y1)]


def circle_rings(x: np.ndarray, y: np.ndarray, radius: np.ndarray, n_vertices: int = 32) -> list[np.ndarray]:
    """Closed circular rings around centres (map units), each of shape (n_vertices + 1, 2)."""
    angle = np.linspace(0, 2 * np.pi, n_vertices + 1)
    angle[-1] = 0.0
    return [np.stack([cx + r * np.cos(angle), cy + r * np.sin(angle)], axis=1) for cx, cy, r in zip(x, y, radius)]


def _columns(table: Mapping[str, Sequence]) -> tuple[list[str], list[np.ndarray]]:
    names = list(table)
    arrays = [np.asarray(table[name]) for name in names]
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"columns differ in length: {sorted(lengths)}")
    return names, arrays


def write_csv(path: PathLike, table: Mapping[str, Sequence], float_format: str = "{:.10g}") -> None:
    """Write columns (a mapping of name to 1-D sequence) as CSV, atomically."""
    names, arrays = _columns(table)

    def fmt(value):
        if isinstance(value, (float, np.floating)):
            return "" if not np.isfinite(value) else float_format.format(value)
        if isinstance(value, (bool, np.bool_)):
            return str(int(value))
        return str(value)

    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            for row in zip(*arrays):
                writer.writerow([fmt(v) for v in row])


def write_gpkg(
    path: PathLike,
    table: Mapping[str, Sequence],
    geometry: np.ndarray,
    geometry_type: str,
    crs=None,
    layer: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a GeoPackage layer atomically.

    Parameters
    ----------
    path : path-like
    table : mapping of column name to 1-D sequence (n,)
    geometry : object ndarray (n,) of WKB bytes (see :func:`points_wkb`, :func:`rings_wkb`)
    geometry_type : {"Point", "Polygon"}
    crs : rasterio CRS, pyproj CRS, WKT string or None
        Kept as given (for Mars and Moon: the body's own CRS).
    layer : str, optional
        Layer name (default: the file's stem).
    metadata : mapping of str to str, optional
        The layer's metadata (GDAL key/value items; ``pyogrio.read_info(path)["layer_metadata"]`` reads them).
    """
    import pyogrio.raw

    names, arrays = _columns(table)
    field_data = []
    for array in arrays:
        if array.dtype == bool:
            array = array.astype(np.int32)
        elif array.dtype.kind in "US":
            array = array.astype(object)
        field_data.append(array)
    crs_wkt = None
    if crs is not None:
        crs_wkt = crs if isinstance(crs, str) else crs.to_wkt()
    layer = layer or str(path).rsplit("/", 1)[-1].rsplit(".", 1)[0]
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # pyogrio warns when no CRS is given: images without georeferencing have none.
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
        pyogrio.raw.write(
            str(tmp),
            geometry=geometry,
            field_data=field_data,
            fields=names,
            layer=layer,
            driver="GPKG",
            geometry_type=geometry_type,
            crs=crs_wkt,
            layer_metadata=dict(metadata) if metadata else None,
        )
