"""Training crater segmenters: preprocessing, joint augmentation, losses, metrics and the loop.

The loop follows DeLatte et al.: binary cross-entropy (Dice and focal as
options), Adam at 5e-4, early stopping on the validation loss and the best
checkpoint kept.  Images are split *by image*: whole images go to training or
to validation, never tiles of the same image to both.  Every epoch draws fresh
random crops of the training images and augments image and target together
(rotation ±20°, zoom up to 30 %, flips, brightness/contrast); validation runs
on a fixed grid of tiles of the validation images.  Each epoch appends a row
to ``log.csv`` (loss, pixel accuracy, balanced accuracy, IoU and Dice for
training and validation) and redraws ``curves.png``.

Sun-aware recipe (``TrainConfig(sun_aware=True, ...)``, or
:meth:`TrainConfig.sun_aware_recipe`; docs/training.md): a crater and a mound
differ only in where the shading falls relative to the sun, so every image is
first turned to the canonical frame of :mod:`planetcd.craters.sun` (light from
the left, 270°) with its own azimuth (given, else read from its labels, else
estimated; :func:`canonical_image`), augmentation keeps the light direction
(only the up-down mirror, which is the mirror along a horizontal light axis;
small rotations), labelled craters turned 180° are pasted into the crops as
mounds with target 0 (:class:`MoundBank`). Every labelled crater weighs alike: the clustered labels'
confidence can weigh each crater's pixels (``confidence_weights``,
:func:`planetcd.craters.targets.confidence_weights`), but the tile folds chose not to (docs/segment.md).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..precision import autocast, resolve_precision
from ..raster import IntensityStats, intensity_stats, missing_pixels
from ..tiling import patch_grid
from . import sun
from .targets import confidence_weights, make_target
from .unet import build_model, load_checkpoint, save_checkpoint

log = logging.getLogger("planetcd.craters.train")

__all__ = [
    "TrainConfig",
    "LabelledImage",
    "fill_missing",
    "normalize_image",
    "prepare_image",
    "tile_array",
    "augment_batch",
    "FLIP_MODES",
    "canonical_image",
    "MoundBank",
    "resolve_precision",
    "loss_fn",
    "PixelCounts",
    "score_segmenter",
    "train",
    "plot_curves",
]

#: Percentiles of the valid pixels mapped to -1 and 1 by :func:`normalize_image`.
NORM_PERCENTILES = (0.5, 99.5)


# --------------------------------------------------------------------------- preprocessing


def fill_missing(image: np.ndarray, valid: np.ndarray | None = None, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Replace missing pixels (:func:`planetcd.raster.missing_pixels`) by the mean of the others.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    valid : bool ndarray, shape (H, W), optional
    nodata : float, optional

    Returns
    -------
    filled : ndarray, float32
    valid : bool ndarray
        Where the pixel held data.
    """
    image = np.asarray(image, np.float32)
    ok = ~missing_pixels(image, valid, nodata)
    if ok.all():
        return image, ok
    out = image.copy()
    out[~ok] = float(image[ok].mean()) if ok.any() else 0.0
    return out, ok


def robust_limits(image: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """The :data:`NORM_PERCENTILES` of the valid pixels (:func:`planetcd.raster.intensity_stats`, a decimated
    sample of at most 4,000,000 for big images); ``(0, 1)`` when none is valid."""
    image = np.asarray(image, np.float32)
    present = np.ones(image.shape, bool) if valid is None else np.asarray(valid, bool)
    if not present.any():
        return 0.0, 1.0
    stats = intensity_stats(image, ~present, NORM_PERCENTILES, max_values=4_000_000)
    return float(stats.low[0]), float(stats.high[0])


def normalize_image(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low..high`` to ``-1..1`` (clipped), DeLatte et al.'s input range (:meth:`IntensityStats.signed`)."""
    stats = IntensityStats(np.array([low], np.float64), np.array([high], np.float64), np.zeros(1), np.zeros(1, np.float32))
    return stats.signed(image)


def prepare_image(image: np.ndarray, valid: np.ndarray | None = None, nodata: float | None = None) -> np.ndarray:
    """Missing pixels to the image mean, then a robust stretch to ``-1..1``; float32 (H, W)."""
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[0] != 1:
            raise ValueError("prepare_image expects one band")
        image = image[0]
    filled, ok = fill_missing(image, valid, nodata)
    low, high = robust_limits(filled, ok)
    return normalize_image(filled, low, high)


def tile_array(array: np.ndarray, tile: int = 512, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``(H, W)`` array into ``tile`` × ``tile`` sub-images (the last row/column flush with the edge).

    Returns the stack ``(n, tile, tile)`` and the windows ``(n, 4)`` (row, col, height, width).
    Images smaller than ``tile`` are reflect-padded to it.
    """
    h, w = array.shape[-2:]
    if h < tile or w < tile:
        pad = ((0, max(0, tile - h)), (0, max(0, tile - w)))
        array = np.pad(array, pad, mode="reflect" if min(h, w) > 1 else "edge")
        h, w = array.shape[-2:]
    windows = patch_grid(h, w, tile, stride)
    stack = np.stack([array[r : r + th, c : c + tw] for r, c, th, tw in windows])
    return stack, windows


@dataclass
class LabelledImage:
    """One training or validation image: normalized pixels, target mask and the crater list.

    Optional, for the sun-aware recipe: ``confidence`` (n,) of the craters
    (annotators who marked each; NaN unknown), ``weight`` (H, W) per-pixel loss
    weights (None: all 1), ``sun_azimuth`` the image's known sun azimuth
    (degrees clockwise from the top, light coming from; None: unknown), and
    ``frame`` the :class:`planetcd.craters.sun.CanonicalFrame` it was turned
    with (None: as read).
    """

    name: str
    image: np.ndarray  # float32 (H, W), -1..1
    target: np.ndarray  # uint8 (H, W)
    craters: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    confidence: np.ndarray | None = None
    weight: np.ndarray | None = None
    sun_azimuth: float | None = None
    frame: "sun.CanonicalFrame | None" = None

    @classmethod
    def from_arrays(cls, name: str, image: np.ndarray, craters: np.ndarray, kind: str = "filled", prepared: bool = False,
                    confidence: np.ndarray | None = None, sun_azimuth: float | None = None) -> "LabelledImage":
        img = np.asarray(image, np.float32) if prepared else prepare_image(image)
        craters = np.asarray(craters, np.float64).reshape(-1, 3)
        if confidence is not None:
            confidence = np.asarray(confidence, np.float64).reshape(-1)
            if len(confidence) != len(craters):
                raise ValueError(f"{name}: {len(confidence)} confidences for {len(craters)} craters")
        return cls(name, img, make_target(craters, img.shape, kind), craters, confidence=confidence,
                   sun_azimuth=None if sun_azimuth is None else float(sun_azimuth))


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """A crater list ``(n, 3)`` x, y, radius in pixels from a VOC ``.xml``, PyCDA or Robbins ``.csv``."""
    from ..datasets.crater_labels import read_pycda_csv, read_robbins_csv, read_voc_boxes
    from ..errors import InputError

    path = Path(path)
    if path.suffix.lower() == ".xml":
        return read_voc_boxes(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            header = fh.readline()
        if "LONG_X_PX" in header:
            return read_robbins_csv(path)
        return read_pycda_csv(path)
    raise InputError(f"{path}: unknown label format (expected a Pascal-VOC .xml or a pixel .csv)")


def read_label_confidence(path: str | os.PathLike) -> np.ndarray | None:
    """The per-crater ``<confidence>`` of a VOC ``.xml`` (NaN where absent), in :func:`read_labels`' order; None for CSV."""
    from ..datasets.crater_labels import read_voc_confidence

    path = Path(path)
    if path.suffix.lower() != ".xml":
        return None
    conf = read_voc_confidence(path)
    return None if np.isnan(conf).all() else conf


def read_image(path: str | os.PathLike) -> np.ndarray:
    """First band of a raster, prepared (missing pixels to the mean, stretched to -1..1)."""
    from ..raster import open_raster, read_window

    with open_raster(path) as ds:
        data, valid = read_window(ds, bands=[1])
        nodata = ds.nodata
    if not valid.any():
        from ..errors import InputError

        raise InputError(f"{path}: every pixel is nodata")
    return prepare_image(data[0], valid, nodata)


def load_labelled(image_path: str | os.PathLike, labels_path: str | os.PathLike, kind: str = "filled",
                  sun_azimuth: float | None = None) -> LabelledImage:
    """Read an image and its crater list (and the VOC labels' ``<confidence>``) into a :class:`LabelledImage`.

    ``sun_azimuth``: the image's sun azimuth when known (degrees clockwise from
    the top, light coming from), used by the sun-aware recipe.
    """
    image = read_image(image_path)
    return LabelledImage.from_arrays(Path(image_path).stem, image, read_labels(labels_path), kind, prepared=True,
                                     confidence=read_label_confidence(labels_path), sun_azimuth=sun_azimuth)


# --------------------------------------------------------------------------- the canonical (light-from-the-left) frame

#: Labelled craters (radius >= 4 px) needed to read an image's sun azimuth from its labels.
MIN_LABEL_CRATERS = 10


def image_sun_azimuth(im: LabelledImage, given: float | None = None) -> tuple[float, str, dict]:
    """The sun azimuth of a training image and where it came from.

    Returns ``(azimuth_deg, source, details)``; ``source`` is ``"given"``
    (``given``, else ``im.sun_azimuth``), ``"labels"``
    (:func:`planetcd.craters.sun.azimuth_from_craters` over at least
    :data:`MIN_LABEL_CRATERS` craters), ``"estimated"``
    (:func:`planetcd.craters.sun.estimate_sun_azimuth`, confident) or
    ``"fallback"`` (the estimate was not confident:
    :data:`planetcd.craters.sun.FALLBACK_AZIMUTH_DEG`).
    """
    if given is None:
        given = im.sun_azimuth
    if given is not None:
        return float(given) % 360.0, "given", {}
    if len(im.craters):
        azimuth, used = sun.azimuth_from_craters(im.image, im.craters, min_radius=4.0)
        if used >= MIN_LABEL_CRATERS and np.isfinite(azimuth):
            return float(azimuth), "labels", {"label_craters": int(used)}
    est = sun.estimate_sun_azimuth(im.image)
    details = {"estimate_deg": round(est.azimuth_deg, 2), "confidence": round(est.confidence, 3)}
    if est.confident:
        return float(est.azimuth_deg), "estimated", details
    log.info("%s: sun azimuth not confidently estimated (%.0f deg, confidence %.2f); using the fallback %.0f deg",
             im.name, est.azimuth_deg, est.confidence, sun.FALLBACK_AZIMUTH_DEG)
    return float(sun.FALLBACK_AZIMUTH_DEG), "fallback", details


def canonical_image(im: LabelledImage, azimuth: float | None = None, kind: str = "filled",
                    use_confidence: bool = True) -> tuple[LabelledImage, dict]:
    """``im`` turned to the canonical frame (light from the left), its craters mapped and its target redrawn.

    Parameters
    ----------
    im : LabelledImage
        As read (normalized -1..1).
    azimuth : float, optional
        Its sun azimuth; else ``im.sun_azimuth``, its labels or the estimator (:func:`image_sun_azimuth`).
    kind : str
        Target kind drawn on the canonical grid.
    use_confidence : bool
        Weigh crater pixels by the labels' confidence (:func:`planetcd.craters.targets.confidence_weights`).

    Returns
    -------
    image : LabelledImage
        On the canonical grid; pixels outside the turned input hold the image
        mean and weigh 0 in the loss (``weight``).
    record : dict
        ``azimuth_deg``, ``source`` and the frame (:meth:`CanonicalFrame.to_dict`), for the checkpoint metadata.
    """
    az, source, details = image_sun_azimuth(im, azimuth)
    mean = float(im.image.mean())
    img, frame = sun.to_canonical(im.image, az, fill=mean)
    img = np.asarray(img, np.float32)
    craters = frame.craters_to_canonical(im.craters) if len(im.craters) else np.zeros((0, 3))
    target = make_target(craters, img.shape, kind)
    weight = np.ones(img.shape, np.float32) if frame.exact else frame.footprint().astype(np.float32)
    if use_confidence and im.confidence is not None and len(craters):
        weight = weight * confidence_weights(craters, im.confidence, target)
    record = {"azimuth_deg": round(az, 2), "source": source, **details, "frame": frame.to_dict()}
    out = LabelledImage(im.name, img, target, craters, confidence=im.confidence, weight=weight, sun_azimuth=az, frame=frame)
    return out, record


# --------------------------------------------------------------------------- augmentation


def _sample_crops(images: Sequence[LabelledImage], n: int, size: int, rng: np.random.Generator, positive_fraction: float,
                  weights: bool = False):
    """``n`` windows of side ``size`` (clipped to the image) from images chosen by area.

    Returns images ``(n, 1, size, size)`` and targets ``(n, 1 or 2, size, size)``:
    with ``weights``, channel 1 holds the per-pixel loss weights (1 where an image has none).
    """
    areas = np.array([im.image.size for im in images], float)
    choice = rng.choice(len(images), size=n, p=areas / areas.sum())
    crops_x, crops_y = [], []
    for k in choice:
        im = images[k]
        h, w = im.image.shape
        sh, sw = min(size, h), min(size, w)
        if positive_fraction > 0 and len(im.craters) and rng.random() < positive_fraction:
            x, y, _ = im.craters[rng.integers(len(im.craters))]
            r0 = int(np.clip(y - sh / 2 + rng.uniform(-sh / 4, sh / 4), 0, h - sh))
            c0 = int(np.clip(x - sw / 2 + rng.uniform(-sw / 4, sw / 4), 0, w - sw))
        else:
            r0, c0 = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
        img, tgt = im.image[r0 : r0 + sh, c0 : c0 + sw], im.target[r0 : r0 + sh, c0 : c0 + sw].astype(np.float32)
        if weights:
            wgt = im.weight[r0 : r0 + sh, c0 : c0 + sw] if im.weight is not None else np.ones((sh, sw), np.float32)
            tgt = np.stack([tgt, wgt])
        else:
            tgt = tgt[None]
        if (sh, sw) != (size, size):
            pad = ((0, size - sh), (0, size - sw))
            img, tgt = np.pad(img, pad, mode="reflect"), np.pad(tgt, ((0, 0),) + pad, mode="reflect")
        crops_x.append(img)
        crops_y.append(tgt)
    return np.stack(crops_x)[:, None], np.stack(crops_y).astype(np.float32)


class MoundBank:
    """Mounds made from real labelled craters, to paste into training crops as hard negatives.

    In the canonical frame a crater is dark on its left (sun-facing) inner wall
    and bright on the right; the same chip turned 180° is lit from the right
    side's way round: bright on the left, shadowed on the right -- how a mound
    looks under light from the left. Each chip spans ``2 × reach`` radii around
    a labelled crater of ``min_radius..max_radius`` pixels lying wholly inside
    its image (and inside the turned image's footprint).

    Parameters
    ----------
    images : LabelledImage sequence, in the canonical frame (training images only)
    min_radius, max_radius : float
        Crater radii used, pixels.
    reach : float
        Chip half-side in radii (the pasted disk blends out between
        ``0.75 × reach`` and ``reach`` radii).
    """

    def __init__(self, images: Sequence[LabelledImage], min_radius: float = 4.0, max_radius: float = 32.0, reach: float = 2.0):
        self.reach = float(reach)
        self.chips: list[np.ndarray] = []
        self.radii: list[float] = []
        for im in images:
            h, w = im.image.shape
            for x, y, r in np.asarray(im.craters, float).reshape(-1, 3):
                if not min_radius <= r <= max_radius:
                    continue
                half = int(math.ceil(self.reach * r))
                cx, cy = int(round(x)), int(round(y))
                if cy - half < 0 or cx - half < 0 or cy + half >= h or cx + half >= w:
                    continue
                sl = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
                if im.weight is not None and float(im.weight[sl].min()) <= 0.0:
                    continue  # touches the outside of a turned image
                self.chips.append(np.ascontiguousarray(im.image[sl][::-1, ::-1], dtype=np.float32))
                self.radii.append(float(r))

    def __len__(self) -> int:
        return len(self.chips)

    @staticmethod
    def blend_mask(half: int, radius: float, reach: float = 2.0) -> np.ndarray:
        """Soft disk ``(2 half + 1)²``: 1 within ``0.75 reach`` radii, a cosine taper to 0 at ``reach`` radii."""
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
        d = np.sqrt(xx**2 + yy**2) / max(radius, 1e-6)
        inner = 0.75 * reach
        taper = 0.5 * (1.0 + np.cos(np.pi * np.clip((d - inner) / (reach - inner), 0.0, 1.0)))
        return taper.astype(np.float32)

    def paste(self, image: np.ndarray, target: np.ndarray, count: int, rng: np.random.Generator,
              region: tuple[int, int, int, int] | None = None, tries: int = 4) -> int:
        """Paste ``count`` random mounds into ``image`` (H, W) in place; ``target`` (C, H, W) gets 0 under them.

        The chip's level is matched to the crop (the masked means agree) so the
        mound differs from its surroundings only by its shading. ``target``
        channel 0 (the mask) is set to 0 and further channels (loss weights) to
        1 where the blend weight is at least 0.5. A spot is skipped when over 5 %
        of the pixels under the disk are crater target (tries ``tries`` spots).
        ``region = (row0, col0, rows, cols)`` limits the centres (default: the whole image).
        Returns how many were pasted.
        """
        if not self.chips or count <= 0:
            return 0
        h, w = image.shape
        r0, c0, rh, rw = region if region is not None else (0, 0, h, w)
        done = 0
        for _ in range(int(count)):
            k = int(rng.integers(len(self.chips)))
            chip, radius = self.chips[k], self.radii[k]
            half = chip.shape[0] // 2
            mask = self.blend_mask(half, radius, self.reach)
            for _ in range(tries):
                cy = int(rng.integers(max(half, r0), max(max(half, r0) + 1, min(h - half, r0 + rh))))
                cx = int(rng.integers(max(half, c0), max(max(half, c0) + 1, min(w - half, c0 + rw))))
                if cy - half < 0 or cx - half < 0 or cy + half >= h or cx + half >= w:
                    continue
                sl = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
                core = mask >= 0.5
                if float(target[0][sl][mask > 0].mean()) > 0.05:
                    continue
                under = image[sl]
                level = float((mask * under).sum() / mask.sum()) - float((mask * chip).sum() / mask.sum())
                image[sl] = (1.0 - mask) * under + mask * (chip + level)
                target[0][sl][core] = 0.0
                for c in range(1, target.shape[0]):
                    target[c][sl][core] = 1.0
                done += 1
                break
        return done


#: Mirror modes of :func:`augment_batch`.
FLIP_MODES = ("all", "light-axis", "none")


def augment_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    *,
    rotation: float = 20.0,
    zoom: float = 0.3,
    flips: bool | str = True,
    brightness: float = 0.1,
    contrast: float = 0.2,
    noise: float = 0.0,
    blur: float = 0.0,
    zoom_range: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images and targets together.

    ``x`` is ``(B, 1, L, L)`` and ``y`` ``(B, C, L, L)`` windows: channel 0 of
    ``y`` the target, further channels (e.g. per-pixel loss weights) resampled
    bilinearly with it but not thresholded. The output is the central
    ``out_size`` × ``out_size`` part after a random rotation within
    ±``rotation`` degrees, zoom by a factor within ``1 ± zoom``, random mirrors
    by ``flips``: ``True``/``"all"`` left-right and up-down (the old recipe),
    ``"light-axis"`` only the up-down mirror (the mirror along the light axis
    of the canonical frame, light from the left: it keeps where the light comes
    from, so a crater stays a crater), ``False``/``"none"`` none; then a random contrast (``1 ± contrast``) and brightness
    (``± brightness``) change of the image only; optionally (image only, each
    image its own draw) a Gaussian blur of standard deviation within
    ``0..blur`` pixels and additive Gaussian noise of standard deviation within
    ``0..noise`` (in the normalized ``-1..1`` units), for sensors and scenes
    noisier or softer than the training images.  Targets are resampled
    bilinearly and thresholded at 0.5, so they stay binary.  ``L`` should be at
    least ``out_size × (1 + zoom) × √2`` to avoid reflected borders.

    ``zoom_range = (low, high)`` replaces ``1 ± zoom``: magnifications drawn
    log-uniformly between ``low`` and ``high`` (e.g. ``(0.7, 2.5)`` also shows
    the network craters at 2–2.5 times their size, as in an image upsampled
    for small craters); ``L`` should then be at least ``out_size / low × √2``.
    """
    b, _, big, _ = x.shape
    g = generator

    def uniform(low, high):
        return low + (high - low) * torch.rand(b, generator=g)

    theta = uniform(-rotation, rotation) * math.pi / 180.0
    if zoom_range is None:
        scale = uniform(1.0 - zoom, 1.0 + zoom)
    else:
        low, high = (float(v) for v in zoom_range)
        if not 0 < low <= high:
            raise ValueError(f"zoom_range must be 0 < low <= high, got {zoom_range}")
        scale = torch.exp(uniform(math.log(low), math.log(high)))
    mode = {True: "all", False: "none"}.get(flips, flips) if isinstance(flips, bool) else flips
    if mode not in FLIP_MODES:
        raise ValueError(f"flips must be True, False or one of {FLIP_MODES}, got {flips!r}")
    # grid x_in = sx * x_out (columns: left-right mirror), y_in = sy * y_out (rows: up-down mirror)
    sx = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if mode == "all" else torch.ones(b)
    sy = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if mode in ("all", "light-axis") else torch.ones(b)
    ratio = out_size / (big * scale)
    cos, sin = torch.cos(theta) * ratio, torch.sin(theta) * ratio
    mat = torch.zeros(b, 2, 3)
    mat[:, 0, 0], mat[:, 0, 1] = cos * sx, -sin * sy
    mat[:, 1, 0], mat[:, 1, 1] = sin * sx, cos * sy
    grid = F.affine_grid(mat, (b, 1, out_size, out_size), align_corners=False)
    xa = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    ya = F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    ya = torch.cat([(ya[:, :1] >= 0.5).float(), ya[:, 1:]], dim=1)
    c = uniform(1.0 - contrast, 1.0 + contrast).view(b, 1, 1, 1)
    d = uniform(-brightness, brightness).view(b, 1, 1, 1)
    mean = xa.mean(dim=(2, 3), keepdim=True)
    xa = (xa - mean) * c + mean + d
    if blur > 0:
        xa = _gaussian_blur(xa, uniform(0.0, blur))
    if noise > 0:
        xa = xa + uniform(0.0, noise).view(b, 1, 1, 1) * torch.randn(xa.shape, generator=g)
    return xa.clamp(-1.5, 1.5), ya


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (B, 1, H, W) with its own Gaussian of ``sigma[b]`` pixels (separable, reflected edges)."""
    radius = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernels = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (B, K); sigma ~ 0 gives a unit impulse
    b = x.shape[0]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect").transpose(0, 1)  # (1, B, H+2r, W+2r)
    rows = F.conv2d(padded, kernels.view(b, 1, 1, -1), groups=b)
    out = F.conv2d(rows, kernels.view(b, 1, -1, 1), groups=b)
    return out.transpose(0, 1)


# --------------------------------------------------------------------------- losses and metrics


def loss_fn(name: str, pos_weight: float | None = None) -> Callable[..., torch.Tensor]:
    """A loss on logits: ``bce`` (binary cross-entropy), ``dice`` (soft Dice) or ``focal`` (γ = 2, α = 0.25).

    The returned ``criterion(logits, target, weight=None)`` takes optional
    per-pixel weights (same shape as ``target``): the weighted mean of the
    per-pixel losses (``sum(w l) / sum(w)``), for Dice the weighted sums.
    Logits are taken in float32 (also under bf16 autocast).
    """
    pw = None if pos_weight is None else torch.tensor(float(pos_weight))

    def weighted_mean(values, weight):
        return (values * weight).sum() / weight.sum().clamp_min(1e-6)

    def bce(logits, target, weight=None):
        logits = logits.float()
        if weight is None:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        return weighted_mean(F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none"), weight)

    def dice(logits, target, weight=None):
        p = torch.sigmoid(logits.float())
        w = torch.ones_like(p) if weight is None else weight
        inter = (p * target * w).sum()
        return 1.0 - (2.0 * inter + 1.0) / ((p * w).sum() + (target * w).sum() + 1.0)

    def focal(logits, target, weight=None, gamma=2.0, alpha=0.25):
        logits = logits.float()
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        pt = p * target + (1 - p) * (1 - target)
        at = alpha * target + (1 - alpha) * (1 - target)
        values = at * (1 - pt) ** gamma * ce
        return values.mean() if weight is None else weighted_mean(values, weight)

    losses = {"bce": bce, "dice": dice, "focal": focal}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(losses)}")
    return losses[name]


#: ``TrainConfig.precision`` values (resolved by :func:`planetcd.precision.resolve_precision`, the one resolver).
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class PixelCounts:
    """Confusion counts of thresholded predictions, accumulated over batches."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    loss_sum: float = 0.0
    n_batches: int = 0

    def add(self, prob: torch.Tensor, target: torch.Tensor, loss: float | None = None, threshold: float = 0.5) -> None:
        pred = prob >= threshold
        truth = target[:, :1] >= 0.5 if target.ndim == 4 else target >= 0.5
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())
        self.tn += int((~pred & ~truth).sum())
        if loss is not None:
            self.loss_sum += float(loss)
            self.n_batches += 1

    def metrics(self) -> dict[str, float]:
        """loss, accuracy, balanced accuracy, IoU and Dice (nan where undefined)."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        n = tp + fp + fn + tn

        def div(a, b):
            return a / b if b else float("nan")

        tpr, tnr = div(tp, tp + fn), div(tn, tn + fp)
        return {
            "loss": div(self.loss_sum, self.n_batches),
            "accuracy": div(tp + tn, n),
            "balanced_accuracy": (tpr + tnr) / 2 if tp + fn and tn + fp else float("nan"),
            "iou": div(tp, tp + fp + fn),
            "dice": div(2 * tp, 2 * tp + fp + fn),
        }


METRICS = ("loss", "accuracy", "balanced_accuracy", "iou", "dice")


# --------------------------------------------------------------------------- config and checkpoints


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint and the log folder)."""

    arch: str = "symmetric"  # "symmetric" (SymmetricUNet), "small" (SmallUNet) or "vgg16-unet" (VGG16UNet)
    kernel_size: int = 3
    filter_multiple: float = 1.0
    in_channels: int = 1
    target: str = "filled"  # filled | outline | rings
    loss: str = "bce"  # bce | dice | focal
    pos_weight: float | None = None
    lr: float = 5e-4
    lr_schedule: str = "constant"  # "constant" or "cosine" (per step from lr down to lr_min over all epochs)
    lr_min: float = 0.0
    batch_size: int = 8
    epochs: int = 100
    patience: int = 10
    crop: int = 256  # side of the random training crops
    crops_per_epoch: int = 256
    positive_fraction: float = 0.0  # share of crops centred near a labelled crater
    val_tile: int = 512  # validation tiles (the paper's 512×512 sub-images)
    augment: bool = True
    rotation: float = 20.0
    zoom: float = 0.3
    zoom_range: tuple[float, float] | None = None  # log-uniform magnifications (low, high); replaces 1 ± zoom
    noise: float = 0.0  # largest std of the additive Gaussian noise (normalized units), 0: none
    blur: float = 0.0  # largest Gaussian blur sigma in pixels, 0: none
    seed: int = 0
    threads: int | None = None
    time_limit: float | None = None  # seconds; stops after the epoch that passes it
    crater_f1: bool = True  # crater precision/recall/F1 on the validation images each epoch
    monitor: str = "val_loss"  # early stopping and best checkpoint: "val_loss", "val_f1" or "val_balanced_accuracy"
    init: str | None = None  # start from the weights of this checkpoint (same architecture)
    device: str = "cpu"
    prefetch: int | None = None  # batches made ahead by one background thread; None: 2 on a GPU, 0 (inline) on a CPU
    # > 0: the run's weights are an exponential moving average of the trained ones (updated every step with this
    # decay); best.pt is chosen among the averages, best-raw.pt among the trained weights (validated too)
    ema_decay: float = 0.0
    # sun-aware recipe (docs/training.md); the defaults are the old recipe
    sun_aware: bool = False  # turn every image to the canonical frame (light from the left) first
    sun_azimuths: dict[str, float] | None = None  # image name -> sun azimuth (deg clockwise from the top, light from)
    flips: str = "all"  # "all" (old recipe), "light-axis" (up-down mirror only; keeps the light direction) or "none"
    hard_negative_rate: float = 0.0  # mean number of 180°-turned labelled craters (mounds) pasted per crop (Poisson)
    hard_negative_radius: tuple[float, float] = (4.0, 32.0)  # radii (px) of the craters turned into mounds
    confidence_weights: bool = False  # weigh crater pixels by min(1, annotators / 3) (clustered VOC labels)
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "auto" (bf16 where the hardware runs it natively)
    channels_last: bool = False  # channels-last memory format for the model and batches
    vgg_frozen_blocks: int = 2  # arch "vgg16-unet": VGG-16 blocks kept at their ImageNet weights
    vgg_decoder: int = 32  # arch "vgg16-unet": the decoder's base width (TernausNet: 32)
    vgg_depth: int = 5  # arch "vgg16-unet": VGG-16 blocks in the encoder (3..5)
    vgg_weights: str | None = None  # arch "vgg16-unet": ImageNet VGG-16 weights (default: planetcd.features' lookup)

    @classmethod
    def sun_aware_recipe(cls, **overrides) -> "TrainConfig":
        """The sun-aware recipe of docs/training.md (canonical frame, light-axis mirror, mounds, crater-F1
        selection, bf16 where native); keyword arguments override fields. The annotator-confidence weights are
        off: two of three tile folds chose every crater alike (docs/segment.md, twenty-seventh session)."""
        recipe = dict(sun_aware=True, flips="light-axis", hard_negative_rate=1.0,
                      positive_fraction=0.5, monitor="val_f1", precision="auto", channels_last=True,
                      lr_schedule="cosine", lr_min=5e-5, noise=0.03, blur=1.0)
        recipe.update(overrides)
        return cls(**recipe)

    def model_config(self) -> dict:
        if self.arch in ("symmetric", "SymmetricUNet"):
            return {"in_channels": self.in_channels, "kernel_size": self.kernel_size, "filter_multiple": self.filter_multiple}
        if self.arch in ("vgg16-unet", "VGG16UNet"):  # ImageNet encoder to start from; checkpoints rebuild without it
            return {"in_channels": self.in_channels, "frozen_blocks": self.vgg_frozen_blocks, "decoder": self.vgg_decoder,
                    "depth": self.vgg_depth, "pretrained": self.vgg_weights or True}
        return {"in_channels": self.in_channels}


def plot_curves(rows: list[dict], path: str | os.PathLike) -> None:
    """Training curves (one panel per metric, training and validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    for ax, name in zip(axes, METRICS):
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}_{name}"
            if key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], style, label=split)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.part.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the loop


def score_segmenter(
    model: torch.nn.Module,
    images: Sequence[LabelledImage],
    tile: int,
    batch_size: int,
    criterion,
    device="cpu",
    return_prob: bool = False,
    precision: str = "fp32",
):
    """Pixel metrics of a segmenter (loss, accuracy, balanced accuracy, IoU, Dice) on a fixed grid of ``tile`` × ``tile``
    tiles of each labelled image: the validation step of :func:`train`.

    With ``return_prob``, also returns the probability map of each image
    stitched from its tiles (a list of ``(H, W)`` float32 arrays).
    ``precision``: ``"bf16"`` runs the network under autocast.
    """
    counts = PixelCounts()
    probs = []
    model.eval()
    with torch.no_grad():
        for im in images:
            xs, windows = tile_array(im.image, tile)
            ys, _ = tile_array(im.target, tile)
            h, w = im.image.shape
            full = np.zeros((max(h, tile), max(w, tile)), np.float32)  # tile_array pads small images
            for i in range(0, len(xs), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(xs[i : i + batch_size, None])).to(device)
                y = torch.from_numpy(ys[i : i + batch_size, None].astype(np.float32)).to(device)
                with autocast(precision, device):
                    logits = model.forward_logits(x)
                logits = logits.float()
                prob = torch.sigmoid(logits)
                counts.add(prob, y, float(criterion(logits, y)))
                for (r, c, th, tw), p in zip(windows[i : i + batch_size], prob[:, 0].cpu().numpy()):
                    full[r : r + th, c : c + tw] = p
            probs.append(full[:h, :w])
    if return_prob:
        return counts.metrics(), probs
    return counts.metrics()


def crater_scores(
    probs: Sequence[np.ndarray],
    images: Sequence[LabelledImage],
    target: str = "filled",
    thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    min_diameter_px: float = 8.0,
) -> dict[str, float]:
    """Crater precision, recall and F1 (DeepMoon rule, pooled over images) at the best of ``thresholds``.

    Craters are extracted with :func:`planetcd.craters.extract.extract_craters`
    (components) and matched with :func:`planetcd.craters.match.match_craters`.
    """
    from .extract import extract_craters
    from .match import match_craters, pool_results

    best = None
    for th in thresholds:
        results = []
        for prob, im in zip(probs, images):
            det = extract_craters(prob, method="components", threshold=th, target=target, min_radius=2.0, max_radius=150.0)
            results.append(match_craters(det, im.craters, mode="deepmoon", min_diameter_px=min_diameter_px))
        pooled = pool_results(results)
        f1 = 0.0 if np.isnan(pooled.f1) else pooled.f1
        if best is None or f1 > best["val_f1"]:
            best = {"val_precision": pooled.precision, "val_recall": pooled.recall, "val_f1": f1, "val_f1_threshold": th}
    return best or {}


def lr_at(fraction: float, lr: float, lr_min: float = 0.0) -> float:
    """Cosine decay: ``lr`` at ``fraction`` 0 of the run, ``lr_min`` at 1 (clipped to 0..1)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * fraction))


def averaged_weights(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s parameters and buffers, ``decay`` per update.

    ``update_parameters(model)`` after each optimiser step; the averaged network is ``.module``. Averaging smooths
    the step-to-step noise that makes the epoch kept on two validation tiles a lottery (docs/segment.md).
    """
    if not 0.0 < float(decay) < 1.0:
        raise ValueError(f"ema_decay must lie in (0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)


def validation_row(model: torch.nn.Module, val_images: Sequence[LabelledImage], config: "TrainConfig", criterion,
                   device, precision: str) -> dict:
    """One epoch's validation numbers of ``model``: ``val_*`` pixel metrics and, with ``config.crater_f1``, the crater
    precision/recall/F1 of :func:`crater_scores`."""
    metrics, probs = score_segmenter(model, val_images, config.val_tile, config.batch_size, criterion, device,
                                     return_prob=True, precision=precision)
    row = {f"val_{k}": v for k, v in metrics.items()}
    if config.crater_f1 and any(len(im.craters) for im in val_images):
        try:
            row.update(crater_scores(probs, val_images, config.target))
        except ImportError as exc:  # extraction/matching not installed
            log.debug("no crater scores: %s", exc)
    return row


def _monitored(row: dict, monitor: str, prefix: str = "") -> float:
    """The number a run minimises to choose its best epoch (minus a score, or a loss)."""
    if monitor in ("val_f1", "val_balanced_accuracy") and prefix + monitor in row:
        return -float(np.nan_to_num(row[prefix + monitor]))
    return row.get(prefix + "val_loss", row["train_loss"])


def train(
    train_images: Sequence[LabelledImage],
    val_images: Sequence[LabelledImage],
    config: TrainConfig,
    outdir: str | os.PathLike,
    *,
    on_epoch: Callable[[int, torch.nn.Module], dict] | None = None,
    progress: bool = False,
    extra_metadata: dict | None = None,
) -> dict:
    """Train a segmenter; writes ``best.pt``, ``log.csv``, ``curves.png`` under ``outdir``.

    Parameters
    ----------
    train_images, val_images : sequences of :class:`LabelledImage`
        Disjoint sets of whole images (split by image).
    config : TrainConfig
    outdir : path
    on_epoch : callable(epoch, model) -> dict, optional
        Extra per-epoch validation numbers (e.g. crater F1) added to the log.
    progress : bool
        Show a tqdm bar per epoch on stderr.
    extra_metadata : dict, optional
        Stored in the checkpoint beside the weights (e.g. data sources).

    ``best.pt`` is the epoch with the best monitored value (``config.monitor``:
    the validation loss by default, or the validation crater F1); ``last.pt``
    the latest epoch. With ``config.ema_decay`` both hold the moving average of the weights, whose numbers are
    the log's ``val_*``; the trained weights are validated too (``raw_val_*``) and their best epoch is
    ``best-raw.pt``.

    Returns
    -------
    dict with ``best_epoch``, ``best_val_loss``, ``epochs_run``, ``seconds``, ``history`` and ``checkpoint``.
    """
    if not train_images:
        raise ValueError("no training images")
    names_train = {im.name for im in train_images}
    overlap = names_train & {im.name for im in val_images}
    if overlap:
        raise ValueError(f"images in both training and validation sets: {sorted(overlap)} (split by image)")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if config.flips not in FLIP_MODES:
        raise ValueError(f"flips must be one of {FLIP_MODES}, got {config.flips!r}")
    precision = resolve_precision(config.precision, config.device)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    sun_records: dict[str, dict] = {}
    if config.sun_aware:
        given = dict(config.sun_azimuths or {})
        unknown = set(given) - names_train - {im.name for im in val_images}
        if unknown:
            raise ValueError(f"sun_azimuths names images not in the training or validation set: {sorted(unknown)}")
        turned = []
        for group in (train_images, val_images):
            out = []
            for im in group:
                c_im, record = canonical_image(im, given.get(im.name), config.target, config.confidence_weights)
                sun_records[im.name] = record
                out.append(c_im)
            turned.append(out)
        train_images, val_images = turned
    elif config.confidence_weights:
        train_images = [im if im.confidence is None else
                        LabelledImage(im.name, im.image, im.target, im.craters, im.confidence,
                                      confidence_weights(im.craters, im.confidence, im.target), im.sun_azimuth, im.frame)
                        for im in train_images]
    use_weights = any(im.weight is not None for im in train_images)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)

    model = build_model(config.arch, **config.model_config())
    if config.init:
        start_model, _ = load_checkpoint(config.init)
        if start_model.config != model.config:
            raise ValueError(f"{config.init}: a {start_model.config} model, not {model.config}")
        model.load_state_dict(start_model.state_dict())
    model = model.to(device)
    memory = torch.channels_last if config.channels_last else torch.contiguous_format
    if config.channels_last:
        model = model.to(memory_format=memory)
    criterion = loss_fn(config.loss, config.pos_weight)
    mounds = None
    if config.hard_negative_rate > 0:
        mounds = MoundBank(train_images, *config.hard_negative_radius)
        if not len(mounds):
            log.warning("no labelled crater of radius %g..%g px fits a mound chip; no hard negatives", *config.hard_negative_radius)
            mounds = None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    window = config.crop
    if config.augment:
        widest = 1.0 + config.zoom if config.zoom_range is None else max(1.0, 1.0 / float(config.zoom_range[0]))
        window = int(math.ceil(config.crop * widest * math.sqrt(2.0))) + 2
    steps = max(1, config.crops_per_epoch // config.batch_size)
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {config.lr_schedule!r} (constant or cosine)")
    total_steps = steps * config.epochs
    history: list[dict] = []
    best = {"epoch": -1, "loss": float("inf")}
    log_path, ckpt = outdir / "log.csv", outdir / "best.pt"
    start = time.monotonic()
    stale = 0
    meta = {
        "train_config": asdict(config),
        "train_images": sorted(names_train),
        "val_images": sorted(im.name for im in val_images),
        "normalization": {"method": "percentile", "percentiles": list(NORM_PERCENTILES), "range": [-1.0, 1.0], "missing": "mean"},
        "target": config.target,
        "precision": precision,
    }
    if config.sun_aware:
        meta.update({
            "sun_aware": True,
            "canonical_azimuth_deg": sun.CANONICAL_AZIMUTH_DEG,
            "sun_azimuths": sun_records,
            "augmentation_flips": config.flips,
            "hard_negatives": {"rate": config.hard_negative_rate, "mounds": len(mounds) if mounds else 0},
        })
    meta.update(extra_metadata or {})
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc="training", unit="epoch", leave=True)
    ema = averaged_weights(model, config.ema_decay) if config.ema_decay else None
    run_model = model if ema is None else ema.module  # the network validated, selected and saved as the run's
    best_raw = {"epoch": -1, "loss": float("inf")}
    if ema is not None:
        meta["weights"] = f"exponential moving average, decay {config.ema_decay:g} per step"
    ahead = (0 if device.type == "cpu" else 2) if config.prefetch is None else int(config.prefetch)
    pinned = device.type == "cuda" and ahead > 0
    batches = prefetched(
        training_batches(train_images, config, window, rng, gen, mounds, use_weights, total_steps, pin=pinned), ahead)
    with contextlib.closing(batches):  # closing stops the background thread of an unfinished run
        for epoch in range(1, config.epochs + 1):
            t0 = time.monotonic()
            model.train()
            counts = PixelCounts()
            for step in range(steps):
                if config.lr_schedule == "cosine":
                    done = ((epoch - 1) * steps + step) / max(1, total_steps - 1)
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(done, config.lr, config.lr_min)
                x, y = next(batches)
                x, y = x.to(device, memory_format=memory, non_blocking=pinned), y.to(device, non_blocking=pinned)
                target, weight = y[:, :1], (y[:, 1:2] if use_weights else None)
                with autocast(precision, device):
                    logits = model.forward_logits(x)
                loss = criterion(logits, target) if weight is None else criterion(logits, target, weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(model)
                counts.add(torch.sigmoid(logits.detach().float()), target, float(loss.detach()))
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v for k, v in counts.metrics().items()})
            if val_images:
                row.update(validation_row(run_model, val_images, config, criterion, device, precision))
                if ema is not None:
                    row.update({f"raw_{k}": v for k, v in validation_row(model, val_images, config, criterion, device,
                                                                        precision).items()})
            if on_epoch is not None:
                row.update(on_epoch(epoch, run_model) or {})
            row["seconds"] = round(time.monotonic() - t0, 2)
            history.append(row)
            monitor = _monitored(row, config.monitor)
            improved = monitor < best["loss"]
            if improved:
                best = {"epoch": epoch, "loss": monitor}
                stale = 0
                save_checkpoint(ckpt, run_model, config.arch, {**meta, "epoch": epoch, "metrics": row})
            else:
                stale += 1
            if ema is not None and val_images:
                raw_monitor = _monitored(row, config.monitor, prefix="raw_")
                if raw_monitor < best_raw["loss"]:
                    best_raw = {"epoch": epoch, "loss": raw_monitor}
                    save_checkpoint(outdir / "best-raw.pt", model, config.arch,
                                    {**meta, "weights": "trained", "epoch": epoch, "metrics": row})
            save_checkpoint(outdir / "last.pt", run_model, config.arch, {**meta, "epoch": epoch, "metrics": row})
            _write_log(log_path, history)
            try:
                plot_curves(history, outdir / "curves.png")
            except Exception as exc:  # plotting must never stop a run
                log.debug("could not draw curves: %s", exc)
            log.info(
                "epoch %d: train loss %.4f, val loss %.4f, val balanced acc %.3f%s (%.0f s)",
                epoch, row["train_loss"], row.get("val_loss", float("nan")), row.get("val_balanced_accuracy", float("nan")),
                " *" if improved else "", row["seconds"],
            )
            if bar is not None:
                bar.update(1)
            if stale >= config.patience:
                log.info("early stop: no better validation loss for %d epochs", config.patience)
                break
            if config.time_limit is not None and time.monotonic() - start > config.time_limit:
                log.info("time limit reached after epoch %d", epoch)
                break
    if bar is not None:
        bar.close()
    return {
        "best_epoch": best["epoch"],
        "best_monitor": best["loss"],
        "best_val_loss": history[best["epoch"] - 1].get("val_loss", float("nan")) if best["epoch"] > 0 else float("nan"),
        "epochs_run": len(history),
        **({"best_raw_epoch": best_raw["epoch"]} if ema is not None else {}),
        "seconds": time.monotonic() - start,
        "history": history,
        "checkpoint": str(ckpt),
    }


def training_batches(
    images: Sequence[LabelledImage],
    config: TrainConfig,
    window: int,
    rng: np.random.Generator,
    gen: torch.Generator,
    mounds: MoundBank | None,
    weights: bool,
    count: int,
    pin: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of a run, in order: random crops, mound negatives pasted, augmented.

    Parameters
    ----------
    images : sequence of LabelledImage
        The training images (already in the canonical frame for the sun-aware recipe).
    config : TrainConfig
        ``batch_size``, ``crop``, ``positive_fraction``, ``hard_negative_rate`` and the augmentation fields.
    window : int
        Side in pixels of the crops cut before augmentation (``crop`` when ``augment`` is off).
    rng, gen : numpy and torch generators
        The only randomness: the same generators give the same batches, inline or in a background thread.
    mounds : MoundBank or None
        Turned labelled craters to paste as negatives (``None``: none).
    weights : bool
        Whether the targets carry a second channel of pixel weights.
    count : int
        Number of batches.
    pin : bool
        Pin the batches' memory (for asynchronous copies to a CUDA device).

    Yields
    ------
    x : Tensor, float32, shape (batch_size, 1, crop, crop)
    y : Tensor, float32, shape (batch_size, 1 or 2, crop, crop)
        The target, and the pixel weights as a second channel when ``weights``.
    """
    for _ in range(count):
        xb, yb = _sample_crops(images, config.batch_size, window, rng, config.positive_fraction, weights=weights)
        if mounds is not None:
            lo = (window - config.crop) // 2
            for i in range(len(xb)):
                mounds.paste(xb[i, 0], yb[i], int(rng.poisson(config.hard_negative_rate)), rng,
                             region=(lo, lo, config.crop, config.crop))
        x, y = torch.from_numpy(xb), torch.from_numpy(yb)
        if config.augment:
            x, y = augment_batch(x, y, config.crop, gen, rotation=config.rotation, zoom=config.zoom, noise=config.noise,
                                 blur=config.blur, zoom_range=config.zoom_range, flips=config.flips)
        elif x.shape[-1] != config.crop:
            x, y = x[..., : config.crop, : config.crop], y[..., : config.crop, : config.crop]
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
        yield x, y


class _Raised:
    """An exception of the producer thread, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def prefetched(items: Iterable, depth: int) -> Iterator:
    """``items`` in the same order, up to ``depth`` of them made ahead by one background thread.

    ``depth`` 0 iterates inline. An exception raised while making an item is raised where that item would
    have been taken. Closing the returned generator (or dropping it) stops the thread. On a GPU this keeps
    the device busy while the CPU samples and augments the next batches; on a CPU the thread would compete
    with the training step for the same cores, so :func:`train` makes batches inline there by default.
    """
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 (carried to the consumer and raised there)
            put(_Raised(exc))

    thread = threading.Thread(target=produce, name="planetcd-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)


def _write_log(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)
