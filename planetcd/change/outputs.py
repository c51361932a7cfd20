"""What ``detect`` returns: :class:`ChangeResult` and its writers (GeoTIFFs, candidate tables, quicklook, run.json).

Every raster is on pre's grid (same size, CRS and transform) and written in
row blocks, so memory stays bounded on large images; every file appears only
when complete (:func:`planetcd.raster.atomic_output`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from .. import __version__
from ..raster import atomic_output, check_writable, geotiff_profile, geotiff_writer, pixel_to_map
from ..jsonio import json_text
from ..vector import box_rings, rings_wkb, write_csv, write_gpkg

BLOCK_ROWS = 256

CHANGE_OUTPUTS = ("change_score.tif", "change_mask.tif", "candidates.csv", "candidates.gpkg", "run.json")


@dataclass
class ChangeResult:
    """What :func:`detect` found, on the pre image's pixel grid.

    Attributes
    ----------
    patches : ndarray, int64, shape (n, 4)
        ``row_off, col_off, height, width`` of each patch, pixels.
    change_score : ndarray, float64, shape (n,)
        ρ per patch (NaN where less than half the patch is valid in both images).
    tau : float
        Threshold τ; a patch is changed when ``change_score > tau``.
    changed : ndarray of bool, shape (n,)
    valid_fraction : ndarray, shape (n,)
        Fraction of each patch valid in both images.
    displacement : (dy, dx)
        Estimated displacement of post relative to pre, pixels (undone before scoring).
    """

    patches: np.ndarray
    change_score: np.ndarray
    tau: float
    changed: np.ndarray
    valid_fraction: np.ndarray
    displacement: tuple[float, float]
    registration_error: float
    shape: tuple[int, int]
    crs: object = None
    transform: object = None
    pseudo_scores: np.ndarray | None = None
    pixelwise: dict[int, np.ndarray] | None = None
    pixelwise_threshold: float | None = None
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    overview_pre: np.ndarray | None = None
    overview_post: np.ndarray | None = None
    #: τ of each label-free policy: ``policy``, ``pseudo`` (pseudo pairs), ``empirical`` (the pair's own null),
    #: ``used`` (the τ applied), the rule of ``both``; values None where not computed
    thresholds: dict = field(default_factory=dict)
    #: the misregistration found from the pair (``max_shift="auto"``): global and residual shifts, px
    misregistration: dict = field(default_factory=dict)
    #: ``nn``'s relighting of pre to post's look (:func:`planetcd.change.detect.relight_record`): ``relit``,
    #: the pair's transfer ``anisotropy``, whether the pseudo pairs were relit (``pseudo_relit``), the transfer;
    #: ``{"relit": False}`` for ``nn-unlit`` and ``paper``
    relight: dict = field(default_factory=dict)

    @property
    def ratio(self) -> np.ndarray:
        """``change_score / tau`` per patch."""
        return self.change_score / self.tau if self.tau > 0 else np.full_like(self.change_score, np.inf)

    @property
    def profile(self) -> dict:
        return {"width": self.shape[1], "height": self.shape[0], "crs": self.crs, "transform": self.transform}

    def candidates(self) -> dict[str, np.ndarray]:
        """The patch table ranked by ρ (best first), scored patches only.

        Columns ``rank, row_off, col_off, height, width, x, y, score, ratio,
        changed``; ``x, y`` are the map coordinates of the patch centre in the
        source CRS (pixel coordinates when the image has no georeferencing).
        """
        scored = np.flatnonzero(np.isfinite(self.change_score))
        order = scored[np.argsort(-self.change_score[scored], kind="stable")]
        p = self.patches[order]
        rows = p[:, 0] + p[:, 2] / 2.0
        cols = p[:, 1] + p[:, 3] / 2.0
        if self.transform is not None:
            x, y = pixel_to_map(self.transform, rows, cols)
        else:
            x, y = cols, rows
        return {
            "rank": np.arange(1, len(order) + 1),
            "row_off": p[:, 0],
            "col_off": p[:, 1],
            "height": p[:, 2],
            "width": p[:, 3],
            "x": x,
            "y": y,
            "score": self.change_score[order],
            "ratio": self.ratio[order],
            "changed": self.changed[order],
            "patch_index": order,
        }

    def write(self, outdir: str | os.PathLike, overwrite: bool = False, quicklook: bool = True) -> list[Path]:
        """Write every output into ``outdir`` (:func:`write_outputs`)."""
        return write_outputs(self, outdir, overwrite=overwrite, quicklook=quicklook)


def output_names(pixelwise: bool, quicklook: bool = True) -> list[str]:
    """File names :func:`write_outputs` writes for these options."""
    names = list(CHANGE_OUTPUTS)
    if quicklook:
        names.append("quicklook.png")
    if pixelwise:
        names += ["change_pixelwise.tif", "change_pixelwise_mask.tif"]
    return names


def _covering(patches: np.ndarray, row0: int, row1: int) -> np.ndarray:
    return np.flatnonzero((patches[:, 0] < row1) & (patches[:, 0] + patches[:, 2] > row0))


def score_block(result, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray]:
    """ρ and the change mask for image rows ``row0..row1`` (all columns).

    A pixel takes the largest ρ of the scored patches covering it; the mask is
    1 where any covering patch changed, 0 where covered only by unchanged
    patches, 255 where no scored patch covers it.
    """
    width = result.shape[1]
    score = np.full((row1 - row0, width), np.nan, np.float32)
    mask = np.full((row1 - row0, width), 255, np.uint8)
    for i in _covering(result.patches, row0, row1):
        if not np.isfinite(result.change_score[i]):
            continue
        r, c, h, w = result.patches[i]
        rows = slice(max(r, row0) - row0, min(r + h, row1) - row0)
        cols = slice(c, c + w)
        score[rows, cols] = np.fmax(score[rows, cols], result.change_score[i])
        part = mask[rows, cols]
        mask[rows, cols] = np.where(part == 255, 0, part) | np.uint8(result.changed[i])
    return score, mask


def pixelwise_block(result, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray]:
    """Deep-CVA magnitude (NaN outside changed patches) and its Otsu mask for rows ``row0..row1``."""
    width = result.shape[1]
    magnitude = np.full((row1 - row0, width), np.nan, np.float32)
    for i, patch_map in (result.pixelwise or {}).items():
        r, c, h, w = result.patches[i]
        if r >= row1 or r + h <= row0:
            continue
        rows = slice(max(r, row0) - row0, min(r + h, row1) - row0)
        src = patch_map[max(r, row0) - r : min(r + h, row1) - r]
        magnitude[rows, c : c + w] = np.fmax(magnitude[rows, c : c + w], src)
    mask = np.where(np.isnan(magnitude), 255, magnitude > (result.pixelwise_threshold or 0)).astype(np.uint8)
    return magnitude, mask


def _write_block_rasters(result, outdir: Path, names: tuple[str, str], block_fn) -> None:
    profile_score = geotiff_profile(result.profile, dtype="float32", nodata=float("nan"))
    profile_mask = geotiff_profile(result.profile, dtype="uint8", nodata=255)
    with geotiff_writer(outdir / names[0], profile_score) as dst_score, \
            geotiff_writer(outdir / names[1], profile_mask) as dst_mask:
        for row0 in range(0, result.shape[0], BLOCK_ROWS):
            row1 = min(result.shape[0], row0 + BLOCK_ROWS)
            values, mask = block_fn(result, row0, row1)
            window = Window(0, row0, result.shape[1], row1 - row0)
            dst_score.write(values, 1, window=window)
            dst_mask.write(mask, 1, window=window)


def write_candidates(result, outdir: Path) -> None:
    """``candidates.csv`` and ``candidates.gpkg`` (patch footprints, source CRS), ranked by ρ."""
    table = result.candidates()
    table.pop("patch_index")
    write_csv(outdir / "candidates.csv", table)
    write_gpkg(outdir / "candidates.gpkg", table, rings_wkb(patch_rings(result.transform, table)), "Polygon",
               crs=result.crs, layer="candidates")


def patch_rings(transform, table: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Closed rings ``(5, 2)`` of the patches' footprints in map coordinates (pixel ``x = col, y = row`` without
    a transform).

    Each of the four pixel corners goes through the full affine transform, so a rotated or sheared
    geotransform (non-zero ``b``, ``d``) gives the rotated quadrilateral, not the box of two corners; for a
    north-up grid the rings are those of :func:`planetcd.vector.box_rings`.

    Parameters
    ----------
    transform : affine.Affine or None
    table : dict
        Columns ``row_off, col_off, height, width`` (pixels), as :meth:`ChangeResult.candidates`.
    """
    rows0, cols0 = np.asarray(table["row_off"], float), np.asarray(table["col_off"], float)
    rows1, cols1 = rows0 + np.asarray(table["height"]), cols0 + np.asarray(table["width"])
    if transform is None:
        return box_rings(cols0, rows0, cols1, rows1)
    corners = [(rows0, cols0), (rows0, cols1), (rows1, cols1), (rows1, cols0), (rows0, cols0)]
    xy = np.stack([np.stack(pixel_to_map(transform, r, c), axis=-1) for r, c in corners], axis=1)  # (n, 5, 2)
    return list(xy)


def write_quicklook(result, path: Path, top: int = 10) -> None:
    """PNG: pre, registered post, and ρ with changed patches outlined and the best ranks labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    pre = result.overview_pre
    post = result.overview_post
    scale_r = pre.shape[1] / result.shape[0]
    scale_c = pre.shape[2] / result.shape[1]
    score = np.full(pre.shape[1:], np.nan, np.float32)
    for i in np.flatnonzero(np.isfinite(result.change_score)):
        r, c, h, w = result.patches[i]
        rs = slice(int(r * scale_r), max(int(r * scale_r) + 1, int((r + h) * scale_r)))
        cs = slice(int(c * scale_c), max(int(c * scale_c) + 1, int((c + w) * scale_c)))
        score[rs, cs] = np.fmax(score[rs, cs], result.change_score[i])

    aspect = pre.shape[1] / pre.shape[2]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5 * aspect + 0.8), constrained_layout=True)
    gray = dict(cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0].imshow(pre.mean(axis=0), **gray)
    axes[0].set_title("pre")
    axes[1].imshow(post.mean(axis=0), **gray)
    dy, dx = result.displacement
    axes[1].set_title(f"post, registered (shift dy={dy:+.2f}, dx={dx:+.2f} px)")
    axes[2].imshow(pre.mean(axis=0), **gray)
    im = axes[2].imshow(score, cmap="magma", alpha=0.6, interpolation="nearest")
    fig.colorbar(im, ax=axes[2], shrink=0.8, label="change score ρ")
    table = result.candidates()
    n_changed = int(result.changed.sum())
    axes[2].set_title(f"ρ; {n_changed} changed patches (τ = {result.tau:.3g})")
    for ax in axes[1:]:
        for k, i in enumerate(table["patch_index"]):
            if not result.changed[i] and k >= top:
                continue
            r, c, h, w = result.patches[i]
            color = "red" if result.changed[i] else "yellow"
            ax.add_patch(Rectangle((c * scale_c - 0.5, r * scale_r - 0.5), w * scale_c, h * scale_r,
                                   fill=False, edgecolor=color, linewidth=1.2))
            if k < top:
                ax.text(c * scale_c + 2, r * scale_r + 2, str(k + 1), color=color, fontsize=8, va="top",
                        fontweight="bold")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_record(result, outputs: list[str]) -> dict:
    """Everything needed to reproduce and audit a run (written as run.json)."""
    from ..runtime import library_versions

    table = result.candidates()
    top = min(10, len(table["rank"]))
    return {
        "planetcd_version": __version__,
        "versions": library_versions(),
        "parameters": result.params,
        "tau": result.tau,
        "thresholds": result.thresholds,
        "misregistration": result.misregistration,
        "relight": result.relight,
        "displacement_px": {"dy": result.displacement[0], "dx": result.displacement[1]},
        "registration_error": None if not np.isfinite(result.registration_error) else result.registration_error,
        "image_shape": list(result.shape),
        "crs": result.crs.to_wkt() if result.crs is not None else None,
        "transform": list(result.transform)[:6] if result.transform is not None else None,
        "n_patches": int(len(result.patches)),
        "n_scored": int(np.isfinite(result.change_score).sum()),
        "n_changed": int(result.changed.sum()),
        "pseudo_scores": None if result.pseudo_scores is None else {
            "n": int(len(result.pseudo_scores)),
            "median": float(np.median(result.pseudo_scores)),
            "max": float(np.max(result.pseudo_scores)),
        },
        "pixelwise_threshold": result.pixelwise_threshold,
        "top_candidates": [
            {k: (v[j].item() if hasattr(v[j], "item") else v[j]) for k, v in table.items()} for j in range(top)
        ],
        "timings_s": {k.removesuffix("_s"): round(v, 3) for k, v in result.timings.items()},
        "outputs": outputs,
    }


def write_outputs(result, outdir: str | os.PathLike, overwrite: bool = False, quicklook: bool = True) -> list[Path]:
    """Write all outputs of a change detection run into ``outdir``; returns their paths.

    Raises :class:`~planetcd.errors.OutputExistsError` before writing anything
    when an output exists and ``overwrite`` is false.
    """
    outdir = Path(outdir)
    names = output_names(result.pixelwise is not None, quicklook)
    check_writable([outdir / n for n in names], overwrite)
    outdir.mkdir(parents=True, exist_ok=True)
    _write_block_rasters(result, outdir, ("change_score.tif", "change_mask.tif"), score_block)
    if result.pixelwise is not None:
        _write_block_rasters(result, outdir, ("change_pixelwise.tif", "change_pixelwise_mask.tif"), pixelwise_block)
    write_candidates(result, outdir)
    if quicklook:
        write_quicklook(result, outdir / "quicklook.png")
    with atomic_output(outdir / "run.json") as tmp:
        tmp.write_text(json_text(run_record(result, names)), encoding="utf-8")
    return [outdir / n for n in names]
