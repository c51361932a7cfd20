"""New-impact monitoring: ranked candidates of new craters between two dates.

``monitor(pre, post)`` chains the pieces planetcd already has:

1. :func:`planetcd.change.detect.detect` finds the changed patches and the
   displacement ``(dy, dx)`` of post relative to pre.
2. Both images are segmented block by block on **pre's pixel grid**: post is
   read through :class:`planetcd.change.register.AlignedReader` (its grid put
   on pre's with ``WarpedVRT`` when they differ, the displacement undone with
   sub-pixel interpolation), so pre and post craters share one coordinate
   system and no crater position is moved after the fact.
3. A post crater is *new* when no pre crater is the same crater under the rule
   of :mod:`planetcd.craters.match` (``deepmoon`` by default) and a changed
   patch lies inside or within ``near_px`` pixels of its rim.
4. Each candidate is scored from the change-score ratio ρ/τ of the best nearby
   patch and the crater confidence:
   ``score = confidence × (1 − pre_support) × (1 − 1 / change_ratio)``, where
   ``pre_support`` is the mean pre crater probability inside the post crater's
   disc (a crater the pre segmentation half saw is less likely new). Every
   factor is in ``0..1``, so the score is too.

Blocks are tiles of :func:`planetcd.tiling.halo_tiles` (a core and a halo of
context): a block is segmented, its craters extracted and its new craters
decided with nothing from other blocks, so memory is bounded by the block
size and :mod:`planetcd.distributed` runs the same function per block on a
Dask cluster with identical results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from .change.detect import ChangeResult, detect
from .change.register import AlignedReader, post_on_pre_grid
from .craters.catalog import Catalog
from .craters.extract import disc_mean, extract_craters, extraction_options
from .craters.match import candidate_pairs
from .craters.segment import ImageStats, _missing, _prepare, image_stats, segment_array
from .errors import InputError
from .raster import atomic_output, check_writable, is_georeferenced, open_raster, overview_shape, read_window
from .tiling import Tile, halo_tiles

log = logging.getLogger(__name__)

#: Files of a finished run (``monitor.json`` is written last: its presence marks a complete output).
OUTPUTS = ("new_craters.csv", "new_craters.gpkg", "pre_craters.csv", "post_craters.csv", "report.html", "monitor.json")
CHANGE_DIR = "change"
CHIP_DIR = "chips"
DONE_MARKER = "monitor.json"
#: Columns of ``new_craters.csv`` after the catalog's own (map, lon/lat, diameter) columns.
SCORE_COLUMNS = ("score", "change_ratio", "confidence", "pre_support", "patch_row_off", "patch_col_off")


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SegmentSetup:
    """Everything a worker needs to segment one block of a pair (small and picklable).

    Attributes
    ----------
    pre_path, post_path : str
        The two rasters; post is read on pre's grid with ``displacement`` undone.
    displacement : (dy, dx)
        Displacement of post relative to pre, pixels (from :func:`detect`).
    pre_stats, post_stats : ImageStats
        Whole-image normalisation of each image (as :func:`planetcd.craters.segment.image_stats`).
    threshold : float
        Probability threshold of the crater mask.
    extraction : dict
        Keyword arguments of :func:`planetcd.craters.extract.extract_craters`.
    tile, overlap, batch_size : int
        Network tiles inside a block (pixels) and tiles per pass.
    match_mode : str
        Rule of :mod:`planetcd.craters.match` deciding that a post crater existed before.
    """

    pre_path: str
    post_path: str
    displacement: tuple[float, float]
    pre_stats: ImageStats
    post_stats: ImageStats
    threshold: float
    extraction: dict
    tile: int = 512
    overlap: int = 64
    batch_size: int = 4
    match_mode: str = "deepmoon"


def load_segmenter(model: str | os.PathLike | torch.nn.Module, device: str = "cpu") -> torch.nn.Module:
    """A crater segmenter from the registry (:func:`planetcd.models.load`), a checkpoint path, or as given."""
    if isinstance(model, torch.nn.Module):
        if not hasattr(model, "metadata"):
            model.metadata = {"threshold": 0.5, "name": type(model).__name__}
        return model.eval()
    from . import models

    return models.load(model, device=device)


@contextlib.contextmanager
def open_pair(setup: SegmentSetup):
    """Yield ``(pre dataset, post reader on pre's grid)`` for a setup."""
    with open_raster(setup.pre_path) as pre_ds, open_raster(setup.post_path) as post_ds:
        with post_on_pre_grid(pre_ds, post_ds) as post_grid:
            yield pre_ds, AlignedReader(post_grid, setup.displacement)


# ----------------------------------------------------------------------------- one block


@dataclass
class BlockCraters:
    """Craters of one block, on pre's pixel grid (whole-image pixel coordinates).

    Attributes
    ----------
    pre : ndarray, float64, shape (n, 4)
        Pre craters centred in the block's core: ``x_px, y_px, radius_px, confidence``.
    post : ndarray, float64, shape (m, 4)
        Post craters centred in the core, same columns.
    post_new : ndarray of bool, shape (m,)
        Whether no pre crater of the whole block (halo included) is the same crater.
    pre_support : ndarray, float64, shape (m,)
        Mean pre crater probability inside each post crater's disc.
    """

    pre: np.ndarray
    post: np.ndarray
    post_new: np.ndarray
    pre_support: np.ndarray


def _prepared_window(data: np.ndarray, valid: np.ndarray, nodata, stats: ImageStats) -> tuple[np.ndarray, np.ndarray]:
    """First band of a raw window ``(bands, h, w)`` → segmenter input ``(h, w)`` in -1..1 and its missing mask."""
    missing = _missing(data[0], valid, nodata)
    return _prepare(data[0], missing, stats), missing


def _probability(model: torch.nn.Module, prepared: np.ndarray, missing: np.ndarray, setup: SegmentSetup) -> np.ndarray:
    """Crater probability ``(h, w)`` of a prepared window; 0 where pixels are missing."""
    tile = min(setup.tile, *prepared.shape)
    overlap = min(setup.overlap, max(0, tile // 2))
    prob = segment_array(model, prepared, tile=tile, overlap=overlap, device=next(model.parameters()).device,
                         batch_size=setup.batch_size, prepared=True)
    prob[missing] = 0.0
    return prob


def _in_core(craters: np.ndarray, tile: Tile) -> np.ndarray:
    """Boolean mask of craters (whole-image pixels) whose centre lies in the tile's core."""
    r, c, h, w = tile.core
    x, y = craters[:, 0], craters[:, 1]
    return (y >= r - 0.5) & (y < r + h - 0.5) & (x >= c - 0.5) & (x < c + w - 0.5)


def new_crater_flags(post: np.ndarray, pre: np.ndarray, mode: str = "deepmoon") -> np.ndarray:
    """Post craters that no pre crater matches under the rule of :mod:`planetcd.craters.match`.

    Parameters
    ----------
    post, pre : ndarray, shape (n, >=3) and (m, >=3)
        ``x_px, y_px, radius_px`` on one pixel grid.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    new = np.ones(len(post), bool)
    i, _, _ = candidate_pairs(post[:, :3], pre[:, :3], mode)
    new[i] = False
    return new


def segment_block(model: torch.nn.Module, pre_ds, post_reader: AlignedReader, tile: Tile, setup: SegmentSetup) -> BlockCraters:
    """Segment one block of pre and of post (on pre's grid) and decide which post craters are new.

    Parameters
    ----------
    model : torch.nn.Module
        The crater segmenter (eval mode).
    pre_ds : rasterio dataset
        The pre image.
    post_reader : AlignedReader
        The post image on pre's grid.
    tile : Tile
        The block: its core (craters kept) and its read window (core + halo).
    setup : SegmentSetup

    Returns
    -------
    BlockCraters
        In whole-image pixel coordinates of pre's grid.
    """
    r, c, h, w = tile.read
    window = Window(c, r, w, h)
    pre_data, pre_valid = read_window(pre_ds, window)
    post_data, post_valid = post_reader.read(window)
    pre_in, pre_missing = _prepared_window(pre_data, pre_valid, pre_ds.nodata, setup.pre_stats)
    post_in, post_missing = _prepared_window(post_data, post_valid, post_reader.dataset.nodata, setup.post_stats)
    pre_prob = _probability(model, pre_in, pre_missing | post_missing, setup)
    post_prob = _probability(model, post_in, pre_missing | post_missing, setup)
    pre_local = extract_craters(pre_prob, **setup.extraction)
    post_local = extract_craters(post_prob, **setup.extraction)
    offset = np.array([c, r, 0.0, 0.0])
    pre_all = pre_local + offset
    post_all = post_local + offset
    keep = _in_core(post_all, tile)
    post_new = new_crater_flags(post_all[keep], pre_all, setup.match_mode)
    support = np.nan_to_num(disc_mean(pre_prob, post_local[keep]), nan=0.0)
    return BlockCraters(pre_all[_in_core(pre_all, tile)], post_all[keep], post_new, support)


def block_grid(height: int, width: int, block_size: int, halo: int) -> list[Tile]:
    """The blocks of a monitor run: :func:`planetcd.tiling.halo_tiles` of ``block_size`` with ``halo`` pixels."""
    return halo_tiles(height, width, block_size, halo)


def run_block(setup: SegmentSetup, tile: Tile, model: torch.nn.Module) -> BlockCraters:
    """Open the pair, segment one block, close: the unit of work of a worker."""
    with open_pair(setup) as (pre_ds, post_reader):
        return segment_block(model, pre_ds, post_reader, tile, setup)


def merge_blocks(blocks: list[BlockCraters]) -> BlockCraters:
    """Concatenate block results (each crater belongs to exactly one block core)."""
    if not blocks:
        empty = np.zeros((0, 4))
        return BlockCraters(empty, empty.copy(), np.zeros(0, bool), np.zeros(0))
    return BlockCraters(
        np.concatenate([b.pre for b in blocks]).reshape(-1, 4),
        np.concatenate([b.post for b in blocks]).reshape(-1, 4),
        np.concatenate([b.post_new for b in blocks]),
        np.concatenate([b.pre_support for b in blocks]),
    )


# ----------------------------------------------------------------------------- change association and scores


def nearby_change(craters: np.ndarray, change: ChangeResult, near_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Best change ratio ρ/τ of the scored patches inside or within ``near_px`` of each crater's disc.

    Parameters
    ----------
    craters : ndarray, shape (n, >=3)
        ``x_px, y_px, radius_px`` on pre's grid.
    change : ChangeResult
    near_px : float
        Distance (pixels) from the rim within which a patch counts as next to the crater.

    Returns
    -------
    ratio : ndarray, float64, shape (n,)
        Largest ρ/τ (0 when no scored patch is near).
    patch : ndarray, int64, shape (n,)
        Index of that patch in ``change.patches`` (-1 when none).
    """
    ratio = np.zeros(len(craters))
    best = np.full(len(craters), -1, np.int64)
    if len(craters) == 0:
        return ratio, best
    p = change.patches.astype(np.float64)
    patch_ratio = np.where(np.isfinite(change.change_score), change.ratio, -np.inf)
    for k, (x, y, radius) in enumerate(craters[:, :3]):
        reach = radius + near_px
        # distance from the crater centre to each patch rectangle (pixel centres at integer + 0.5 edges)
        dy = np.maximum(0.0, np.maximum(p[:, 0] - 0.5 - y, y - (p[:, 0] + p[:, 2] - 0.5)))
        dx = np.maximum(0.0, np.maximum(p[:, 1] - 0.5 - x, x - (p[:, 1] + p[:, 3] - 0.5)))
        near = np.flatnonzero(np.hypot(dy, dx) <= reach)
        if len(near) == 0:
            continue
        j = near[np.argmax(patch_ratio[near])]
        if np.isfinite(patch_ratio[j]):
            ratio[k], best[k] = patch_ratio[j], j
    return ratio, best


def candidate_scores(confidence: np.ndarray, pre_support: np.ndarray, change_ratio: np.ndarray) -> np.ndarray:
    """``confidence × (1 − pre_support) × (1 − 1 / change_ratio)``, clipped to ``0..1``; 0 where ratio ≤ 1."""
    change_term = np.where(change_ratio > 1.0, 1.0 - 1.0 / np.maximum(change_ratio, 1.0), 0.0)
    return np.clip(confidence * (1.0 - np.clip(pre_support, 0.0, 1.0)) * change_term, 0.0, 1.0)


# ----------------------------------------------------------------------------- chips and overview


def _gray8(data: np.ndarray, stats: ImageStats) -> np.ndarray:
    scaled = (data - stats.low) / (stats.high - stats.low)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def chip_panels(pre_ds, post_reader: AlignedReader, crater: np.ndarray, pre_stats: ImageStats,
                post_stats: ImageStats, min_size: int = 64) -> np.ndarray:
    """Pre, registered post and their difference around one crater.

    Parameters
    ----------
    crater : ndarray, shape (>=3,)
        ``x_px, y_px, radius_px`` on pre's grid.
    min_size : int
        Smallest chip side, pixels (the chip spans at least 6 radii).

    Returns
    -------
    ndarray, uint8, shape (3, size, size)
        Pre and post stretched to 0..255 with their own robust range; the
        difference post − pre mapped so that 128 is no change (±0.5 of the range at 0 and 255).
    """
    x, y, radius = (float(v) for v in crater[:3])
    size = int(max(min_size, np.ceil(6 * radius)))
    window = Window(int(round(x)) - size // 2, int(round(y)) - size // 2, size, size)
    pre, pre_valid = read_window(pre_ds, window, boundless=True)
    post, post_valid = post_reader.read(window)
    pre8 = _gray8(pre[0], pre_stats)
    post8 = _gray8(post[0], post_stats)
    diff = post8.astype(np.float32) - pre8.astype(np.float32)
    diff8 = np.clip(np.round(128.0 + diff * 0.5), 0, 255).astype(np.uint8)
    both = pre_valid & post_valid
    for panel in (pre8, post8, diff8):
        panel[~both] = 0
    return np.stack([pre8, post8, diff8])


def chip_image(panels: np.ndarray, crater: np.ndarray, scale: int | None = None):
    """A PIL image ``pre | post | difference`` with the crater outlined (red) on pre and post."""
    from PIL import Image, ImageDraw

    _, size, _ = panels.shape
    scale = scale or max(1, int(np.ceil(160 / size)))
    gap = 4
    side = size * scale
    canvas = Image.new("RGB", (3 * side + 2 * gap, side), (255, 255, 255))
    x, y, radius = (float(v) for v in crater[:3])
    # position of the crater centre inside the chip (the chip starts at round(x) - size // 2)
    cx = (x - (round(x) - size // 2) + 0.5) * scale
    cy = (y - (round(y) - size // 2) + 0.5) * scale
    rr = (radius + 1.5) * scale
    for k, panel in enumerate(panels):
        image = Image.fromarray(panel).resize((side, side), Image.NEAREST).convert("RGB")
        if k < 2:
            ImageDraw.Draw(image).ellipse((cx - rr, cy - rr, cx + rr, cy + rr), outline=(230, 40, 40), width=2)
        canvas.paste(image, (k * (side + gap), 0))
    return canvas


def overview_png(pre_ds, stats: ImageStats, max_pixels: int = 640_000) -> tuple[bytes, tuple[int, int]]:
    """A decimated gray PNG of pre (bytes) and its ``(rows, cols)``."""
    import io

    from PIL import Image

    shape = overview_shape(pre_ds.height, pre_ds.width, max_pixels)
    data, valid = read_window(pre_ds, bands=[1], out_shape=shape)
    gray = _gray8(data[0], stats)
    gray[~valid] = 0
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), shape


# ----------------------------------------------------------------------------- the result


@dataclass
class MonitorResult:
    """New-crater candidates of one pair, ranked best first, on pre's pixel grid.

    Attributes
    ----------
    candidates : Catalog
        The candidates (``x_px, y_px, radius_px, confidence`` plus map and
        planetocentric coordinates and diameters when the pair is georeferenced
        or ``pixel_size_m`` is given), in rank order.
    scores : dict of ndarray (n,)
        ``score, change_ratio, confidence, pre_support, patch_row_off, patch_col_off`` per candidate.
    change : ChangeResult
        What :func:`detect` found (written to ``OUTDIR/change``).
    pre_craters, post_craters : Catalog
        Every crater segmented in pre and in post (post on pre's grid).
    chips : list of ndarray, uint8, shape (3, s, s)
        Pre | post | difference around each candidate.
    overview : bytes
        PNG of pre, decimated; ``overview_shape`` gives its ``(rows, cols)``.
    """

    candidates: Catalog
    scores: dict[str, np.ndarray]
    change: ChangeResult
    pre_craters: Catalog
    post_craters: Catalog
    chips: list[np.ndarray]
    overview: bytes
    overview_shape: tuple[int, int]
    shape: tuple[int, int]
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.candidates)

    def table(self) -> dict[str, np.ndarray]:
        """The ranked candidate table: ``rank``, the catalog's columns, then the scores."""
        cat = self.candidates
        table = {"rank": np.arange(1, len(self) + 1), "x_px": cat.x_px, "y_px": cat.y_px, "radius_px": cat.radius_px}
        table.update(cat.table())  # confidence, map and planetocentric coordinates, diameter
        for name in SCORE_COLUMNS:
            table[name] = self.scores[name]
        return table

    def write(self, outdir: str | os.PathLike, overwrite: bool = False) -> list[Path]:
        """Write every output into ``outdir``; ``monitor.json`` last, so its presence marks a complete run.

        Raises :class:`~planetcd.errors.OutputExistsError` before writing
        anything when an output exists and ``overwrite`` is false.
        """
        from .change.outputs import output_names
        from .report import write_report

        outdir = Path(outdir)
        chip_dir = outdir / CHIP_DIR
        chip_names = [chip_dir / f"candidate_{k:04d}.png" for k in range(1, len(self) + 1)]
        existing_chips = sorted(chip_dir.glob("candidate_*.png")) if chip_dir.is_dir() else []
        check_writable([outdir / n for n in OUTPUTS] + [outdir / CHANGE_DIR / n for n in output_names(False)]
                       + existing_chips, overwrite)
        outdir.mkdir(parents=True, exist_ok=True)
        marker = outdir / DONE_MARKER
        if marker.exists():
            marker.unlink()  # overwrite: the run is incomplete until the marker is written again
        written = self.change.write(outdir / CHANGE_DIR, overwrite=overwrite)
        chip_dir.mkdir(exist_ok=True)
        for stale in existing_chips:
            if stale not in chip_names:
                stale.unlink()
        for path, panels, crater in zip(chip_names, self.chips, self.candidates.pixels):
            with atomic_output(path) as tmp:
                chip_image(panels, crater).save(tmp, format="PNG")
        written += chip_names
        self._write_tables(outdir)
        write_report(self, outdir / "report.html")
        with atomic_output(marker) as tmp:
            tmp.write_text(json.dumps(self.record(), indent=2, default=str))
        return written + [outdir / n for n in OUTPUTS]

    def _write_tables(self, outdir: Path) -> None:
        from .vector import circle_rings, points_wkb, rings_wkb, write_csv, write_gpkg

        table = self.table()
        write_csv(outdir / "new_craters.csv", table)
        cat = self.candidates
        if cat.transform is not None:
            wkb = rings_wkb(circle_rings(cat.x_map, cat.y_map, cat.radius_map, 64))
            crs = cat.crs if cat.crs is None or isinstance(cat.crs, str) or hasattr(cat.crs, "to_wkt") else str(cat.crs)
        else:
            wkb, crs = rings_wkb(circle_rings(cat.x_px, cat.y_px, cat.radius_px, 64)), None
        if len(cat) == 0:
            wkb = points_wkb(np.zeros(0), np.zeros(0))
        write_gpkg(outdir / "new_craters.gpkg", table, wkb, "Polygon", crs=crs, layer="new_craters")
        self.pre_craters.to_csv(outdir / "pre_craters.csv")
        self.post_craters.to_csv(outdir / "post_craters.csv")

    def record(self) -> dict:
        """Parameters, counts, timings and the top candidates (written as ``monitor.json``)."""
        from . import __version__

        table = self.table()
        top = min(10, len(self))
        return {
            "planetcd_version": __version__,
            "parameters": self.params,
            "image_shape": list(self.shape),
            "displacement_px": {"dy": self.change.displacement[0], "dx": self.change.displacement[1]},
            "tau": self.change.tau,
            "n_changed_patches": int(self.change.changed.sum()),
            "n_pre_craters": len(self.pre_craters),
            "n_post_craters": len(self.post_craters),
            "n_candidates": len(self),
            "top_candidates": [{k: (v[j].item() if hasattr(v[j], "item") else v[j]) for k, v in table.items()}
                               for j in range(top)],
            "timings_s": {k.removesuffix("_s"): round(v, 3) for k, v in self.timings.items()},
        }


# ----------------------------------------------------------------------------- the pipeline


def prepare_setup(pre, post, displacement: tuple[float, float], model: torch.nn.Module, *,
                  threshold: float | None, tile: int, overlap: int, batch_size: int, match_mode: str) -> SegmentSetup:
    """Whole-image statistics and options for segmenting a pair (reads decimated overviews only)."""
    meta = getattr(model, "metadata", {})
    threshold = float(meta.get("threshold", 0.5) if threshold is None else threshold)
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold {threshold}: must be between 0 and 1")
    with open_raster(pre) as pre_ds, open_raster(post) as post_ds:
        with post_on_pre_grid(pre_ds, post_ds) as post_grid:
            pre_stats = image_stats(pre_ds)
            post_stats = image_stats(post_grid)
    return SegmentSetup(str(pre), str(post), (float(displacement[0]), float(displacement[1])), pre_stats, post_stats,
                        threshold, extraction_options(meta, threshold), tile, overlap, batch_size, match_mode)


def _catalog(craters: np.ndarray, georef: dict, name: str) -> Catalog:
    return Catalog.from_pixels(craters.reshape(-1, 4), name=name, **georef)


def assemble(change: ChangeResult, craters: BlockCraters, setup: SegmentSetup, *, near_px: float,
             min_score: float, georef: dict, chips: bool = True) -> tuple[Catalog, dict, Catalog, Catalog, list]:
    """Candidates from the merged block craters and the change result, ranked best first."""
    ratio, patch = nearby_change(craters.post, change, near_px)
    near_changed = np.zeros(len(patch), bool)
    near_changed[patch >= 0] = change.changed[patch[patch >= 0]] | (ratio[patch >= 0] > 1.0)
    chosen = np.flatnonzero(craters.post_new & near_changed)
    score = candidate_scores(craters.post[chosen, 3], craters.pre_support[chosen], ratio[chosen])
    keep = score >= min_score
    chosen, score = chosen[keep], score[keep]
    order = np.lexsort((chosen, -score))  # best first; ties by position in the post list (deterministic)
    chosen, score = chosen[order], score[order]
    best_patch = change.patches[patch[chosen]] if len(chosen) else np.zeros((0, 4), np.int64)
    scores = {
        "score": score,
        "change_ratio": ratio[chosen],
        "confidence": craters.post[chosen, 3],
        "pre_support": craters.pre_support[chosen],
        "patch_row_off": best_patch[:, 0],
        "patch_col_off": best_patch[:, 1],
    }
    candidates = _catalog(craters.post[chosen], georef, "new_craters")
    panels = []
    if chips and len(chosen):
        with open_pair(setup) as (pre_ds, post_reader):
            panels = [chip_panels(pre_ds, post_reader, c, setup.pre_stats, setup.post_stats)
                      for c in craters.post[chosen]]
    return candidates, scores, _catalog(craters.pre, georef, "pre"), _catalog(craters.post, georef, "post"), panels


def _georeference(pre, pixel_size_m: float | None) -> dict:
    with open_raster(pre) as ds:
        if is_georeferenced(ds):
            return {"transform": ds.transform, "crs": ds.crs}
    return {"pixel_size_m": pixel_size_m}


def _check_inputs(pre, post) -> None:
    for name, path in (("pre", pre), ("post", post)):
        if isinstance(path, np.ndarray):
            raise InputError(f"{name}: monitor reads raster files (paths), not arrays")
    with open_raster(pre) as pre_ds, open_raster(post) as post_ds:
        with post_on_pre_grid(pre_ds, post_ds):
            pass


def monitor(
    pre: str | os.PathLike,
    post: str | os.PathLike,
    *,
    method: str = "nn",
    patch_size: int = 100,
    n_pseudo: int = 100,
    model: str | os.PathLike | torch.nn.Module = "ctx-craters",
    threshold: float | None = None,
    match_mode: str = "deepmoon",
    near_px: float = 32.0,
    min_score: float = 0.0,
    block_size: int = 2048,
    block_halo: int = 192,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    pixel_size_m: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    trunk=None,
    client=None,
) -> MonitorResult:
    """Find new-impact candidates between a pre and a post image.

    Parameters
    ----------
    pre, post : path
        Rasters GDAL reads; post is put on pre's grid (``WarpedVRT`` when both
        are georeferenced and the grids differ) and co-registered.
    method : {"nn", "paper"}
        Change detector of :func:`planetcd.change.detect.detect` (``nn``: shift-tolerant, sees small new craters).
    patch_size : int
        Change patch side, pixels.
    n_pseudo : int
        Pseudo-unchanged pairs calibrating τ.
    model : str, path or torch.nn.Module
        Crater segmenter: registry name (:func:`planetcd.models.load`), checkpoint path, or a loaded model.
    threshold : float, optional
        Crater probability threshold (default: the model's).
    match_mode : {"deepmoon", "strict", "iou"}
        Rule of :mod:`planetcd.craters.match` under which a post crater already existed in pre.
    near_px : float
        A changed patch within this many pixels of a crater's rim makes it a candidate.
    min_score : float
        Candidates scoring below this are dropped (0 keeps all).
    block_size, block_halo : int
        Segmentation blocks (pixels): memory is bounded by ``(block_size + 2 block_halo)²``;
        the halo must exceed the largest crater radius.
    tile, overlap, batch_size : int
        Network tiles inside a block.
    pixel_size_m : float, optional
        Pixel size for diameters when the images are not georeferenced.
    weights : path, optional
        VGG-16 weights of the change detector.
    device : {"auto", "cpu", "cuda"}
    seed : int
    progress : bool
        Progress bars on stderr.
    trunk : VGGFeatures, optional
        A loaded VGG trunk to reuse.
    client : distributed.Client, optional
        Run the blocks (and detect's tiles) on a Dask cluster (see :mod:`planetcd.distributed`).

    Returns
    -------
    MonitorResult
    """
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    if method not in ("nn", "paper"):
        raise InputError(f"method must be 'nn' or 'paper', got {method!r}")
    if block_halo < 0 or block_size < 64:
        raise InputError("block_size must be at least 64 px and block_halo at least 0")
    from .inputs import check_pair  # the one input check: missing, truncated, empty, too small, no overlap
    check_pair(pre, post, min_size=patch_size, size_of=f"one {patch_size} px patch")
    _check_inputs(pre, post)
    from .features import pick_device

    torch_device = pick_device(device)
    segmenter = load_segmenter(model, device=str(torch_device))

    t0 = time.perf_counter()
    detect_options = dict(method=method, patch_size=patch_size, n_pseudo=n_pseudo, weights=weights, device=device,
                          seed=seed, progress=progress, trunk=trunk)
    if client is not None:
        from .distributed import detect_distributed

        change = detect_distributed(client, pre, post, **detect_options)
    else:
        change = detect(pre, post, **detect_options)
    timings["detect_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    setup = prepare_setup(pre, post, change.displacement, segmenter, threshold=threshold, tile=tile, overlap=overlap,
                          batch_size=batch_size, match_mode=match_mode)
    blocks = block_grid(change.shape[0], change.shape[1], block_size, block_halo)
    if client is not None:
        from .distributed import segment_blocks_distributed

        model_ref = segmenter if isinstance(model, torch.nn.Module) else model
        results = segment_blocks_distributed(client, setup, blocks, model_ref, str(torch_device))
    else:
        results = _segment_blocks_local(segmenter, setup, blocks, progress)
    craters = merge_blocks(results)
    timings["segment_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    georef = _georeference(pre, pixel_size_m)
    candidates, scores, pre_cat, post_cat, panels = assemble(change, craters, setup, near_px=near_px,
                                                             min_score=min_score, georef=georef)
    with open_raster(pre) as pre_ds:
        overview, ov_shape = overview_png(pre_ds, setup.pre_stats)
    timings["candidates_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    log.info("%d pre and %d post craters; %d new-crater candidates", len(pre_cat), len(post_cat), len(candidates))
    params = {
        "pre": str(pre), "post": str(post), "method": method, "patch_size": patch_size, "n_pseudo": n_pseudo,
        "model": str(getattr(segmenter, "metadata", {}).get("name", model)),
        "tta": bool(getattr(segmenter, "metadata", {}).get("tta", False)), "threshold": setup.threshold,
        "extraction": setup.extraction, "match_mode": match_mode, "near_px": near_px, "min_score": min_score,
        "block_size": block_size, "block_halo": block_halo, "tile": tile, "overlap": overlap, "seed": seed,
        "device": str(torch_device), "pixel_size_m": pixel_size_m,
        "score": "confidence * (1 - pre_support) * (1 - 1 / change_ratio)",
    }
    return MonitorResult(candidates, scores, change, pre_cat, post_cat, panels, overview, ov_shape, change.shape,
                         params, timings)


def _segment_blocks_local(model: torch.nn.Module, setup: SegmentSetup, blocks: list[Tile], progress: bool) -> list[BlockCraters]:
    from tqdm.auto import tqdm

    results = []
    with open_pair(setup) as (pre_ds, post_reader), \
            tqdm(total=len(blocks), disable=not progress, desc="segment", unit="block", leave=False) as bar:
        for tile in blocks:
            results.append(segment_block(model, pre_ds, post_reader, tile, setup))
            bar.update(1)
    return results


# ----------------------------------------------------------------------------- batch mode


def read_pairs(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows ``pre, post, id`` of a pairs CSV (paths relative to the CSV's folder; ``id`` defaults to the row number).

    Raises
    ------
    InputError
        Missing file or columns, empty list, or duplicate ids.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "pre" not in header or "post" not in header:
            raise InputError(f"{path}: needs the columns pre,post[,id] (found: {', '.join(header) or 'none'})")
        rows = []
        for k, row in enumerate(reader, start=1):
            row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
            if not row.get("pre") or not row.get("post"):
                raise InputError(f"{path}: row {k} lacks a pre or post path")
            pair_id = row.get("id") or f"pair{k:04d}"
            if "/" in pair_id or pair_id in (".", ".."):
                raise InputError(f"{path}: row {k}: id {pair_id!r} cannot name a folder")
            rows.append({"id": pair_id, "pre": str(path.parent / row["pre"]), "post": str(path.parent / row["post"])})
    if not rows:
        raise InputError(f"{path}: no pairs")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: duplicate ids ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))})")
    return rows


def is_complete(outdir: str | os.PathLike) -> bool:
    """Whether a monitor output folder holds a finished run (its ``monitor.json`` marker)."""
    return (Path(outdir) / DONE_MARKER).is_file()


SUMMARY_COLUMNS = ("id", "status", "n_candidates", "best_score", "n_changed_patches", "dy", "dx", "seconds", "outdir", "message")


def summary_row(pair_id: str, outdir: Path, status: str, seconds: float = float("nan"), message: str = "") -> dict:
    """One row of the batch summary, read back from a finished output's ``monitor.json`` when there is one."""
    row = {"id": pair_id, "status": status, "n_candidates": -1, "best_score": float("nan"), "n_changed_patches": -1,
           "dy": float("nan"), "dx": float("nan"), "seconds": seconds, "outdir": str(outdir), "message": message}
    if is_complete(outdir):
        record = json.loads((outdir / DONE_MARKER).read_text())
        top = record.get("top_candidates") or []
        row.update(n_candidates=record["n_candidates"], n_changed_patches=record["n_changed_patches"],
                   dy=record["displacement_px"]["dy"], dx=record["displacement_px"]["dx"],
                   best_score=top[0]["score"] if top else float("nan"))
        if not np.isfinite(seconds):
            row["seconds"] = record.get("timings_s", {}).get("total", float("nan"))
    return row


def monitor_batch(pairs_csv: str | os.PathLike, outdir: str | os.PathLike, *, overwrite: bool = False,
                  keep_going: bool = True, progress: bool = False, **options) -> dict[str, np.ndarray]:
    """Run :func:`monitor` on every pair of a CSV into ``outdir/<id>``; resumable.

    Pairs whose folder holds a complete output are skipped (unless
    ``overwrite``); a failing pair is recorded and the others go on when
    ``keep_going``. Writes ``outdir/summary.csv`` and returns its columns.
    """
    from .errors import PlanetcdError
    from .vector import write_csv

    rows = read_pairs(pairs_csv)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    options = dict(options)
    if not isinstance(options.get("model", "ctx-craters"), torch.nn.Module):
        from .features import pick_device

        options["model"] = load_segmenter(options.get("model", "ctx-craters"), str(pick_device(options.get("device", "auto"))))
    if options.get("trunk") is None:
        from .features import VGGFeatures

        options["trunk"] = VGGFeatures(layer=6, weights=options.pop("weights", None))
    summary = []
    for row in rows:
        pair_dir = outdir / row["id"]
        if is_complete(pair_dir) and not overwrite:
            log.info("%s: complete output in %s, skipped", row["id"], pair_dir)
            summary.append(summary_row(row["id"], pair_dir, "skipped"))
            continue
        t0 = time.perf_counter()
        try:
            result = monitor(row["pre"], row["post"], progress=progress, **options)
            result.write(pair_dir, overwrite=True)
        except PlanetcdError as exc:
            if not keep_going:
                raise
            log.warning("%s: failed: %s", row["id"], exc)
            summary.append(summary_row(row["id"], pair_dir, "failed", time.perf_counter() - t0, str(exc)))
            continue
        log.info("%s: %d candidates in %s", row["id"], len(result), pair_dir)
        summary.append(summary_row(row["id"], pair_dir, "done", time.perf_counter() - t0))
    table = {name: np.array([r[name] for r in summary], dtype=object if name in ("id", "status", "outdir", "message") else None)
             for name in SUMMARY_COLUMNS}
    write_csv(outdir / "summary.csv", table)
    return table
