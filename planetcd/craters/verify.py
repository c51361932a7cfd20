"""Crater verification: a sun-aware chip classifier that tells craters from mounds, knobs and noise.

Not in DeLatte et al.: a second stage after the segmenter (issue 13). Every
crater the segmenter extracts is cut out as a small chip, ``size × size``
pixels spanning ``±context`` radii around its centre, **in the canonical
frame** (axes turned so the light comes from the left: :mod:`planetcd.craters.sun`),
standardised, and scored by :class:`ChipVerifier`, a three-layer CNN. A crater
is dark on its sun-facing (left) inner wall and bright on the far one; a
mound the other way round, so the same chip turned 180° is a mound. The
verifier is trained on labelled craters (positives), the same chips turned
180° (mounds) and the segmenter's own unmatched detections on the training
tiles (hard negatives): :func:`verifier_training_chips`, :func:`train_verifier`.

The scale of a chip follows the crater: chips are sampled bilinearly from a
box-mean pyramid of the image (:func:`image_pyramid`) at the level whose
pixels are closest to (not coarser than) the chip's sample spacing, so a big
crater is not aliased and a small one is upsampled from full resolution.

Functions on arrays: :func:`crater_chips` (chips of craters on the input grid,
oriented by a :class:`~planetcd.craters.sun.CanonicalFrame`),
:func:`verifier_scores`, :func:`verify_craters` (scores of craters of an image);
:class:`ChipVerifier` is the network (its ``metadata`` says the chip geometry);
:func:`decoy_threshold` raises the verifier's threshold on one image by its decoys (the craters found
under the opposite sun: ``planetcd segment --decoy-fdr``); :func:`local_decoy_thresholds` does it per crater,
from the decoys around it (``planetcd segment --decoy-sigma``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError

__all__ = [
    "CHIP_SIZE", "CHIP_CONTEXT", "ChipVerifier", "image_pyramid", "crater_chips", "chip_stack", "verifier_contexts",
    "verifier_scores",
    "verify_craters", "verifier_training_chips", "train_verifier", "save_verifier", "load_verifier",
    "decoy_threshold", "decoy_competition", "check_fdr", "local_decoy_weights", "local_decoy_thresholds",
    "local_decoys_passing", "check_sigma", "DecoyCut", "decoy_cut",
]

log = logging.getLogger(__name__)

#: Chip side in samples.
CHIP_SIZE = 24
#: Half-width of a chip in crater radii (the crater's rim spans the middle half).
CHIP_CONTEXT = 2.0
#: Pyramid levels (factors 1, 2, 4, ... 2**(PYRAMID_LEVELS - 1)).
PYRAMID_LEVELS = 7


class ChipVerifier(nn.Module):
    """Crater probability of a chip ``(n, k, size, size)`` → logits ``(n,)``.

    Three 3×3 convolution blocks (16, 32, 64 channels; ReLU; 2×2 max pooling
    after the first two), global average pooling, dropout, one linear unit.
    About 24 k parameters: cheap next to the segmenter.

    ``contexts``: the half-widths, in crater radii, of the ``k`` chips stacked as input channels (each
    :func:`crater_chips` at one context; default ``(context,)``, one channel). A wider view shows a
    whole mound around a detection that sits off its centre, e.g. on its shadow.
    """

    def __init__(self, size: int = CHIP_SIZE, context: float = CHIP_CONTEXT, dropout: float = 0.3,
                 contexts: tuple[float, ...] | None = None):
        super().__init__()
        self.contexts = tuple(float(c) for c in contexts) if contexts else (float(context),)
        self.size, self.context = int(size), self.contexts[0]
        self.features = nn.Sequential(
            nn.Conv2d(len(self.contexts), 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(64, 1))
        self.metadata: dict = {"chip_size": self.size, "context": self.context, "contexts": list(self.contexts)}

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(chips))[:, 0]


# --------------------------------------------------------------------------- chips


def _crater_rows(craters) -> np.ndarray:
    """Craters as a float64 ``(n, k)`` array (an empty input of any shape: ``(0, 3)``)."""
    array = np.asarray(craters, dtype=np.float64)
    return array if array.ndim == 2 else array.reshape(-1, 3)


def image_pyramid(image: np.ndarray, levels: int = PYRAMID_LEVELS, missing: np.ndarray | None = None) -> list[np.ndarray]:
    """Box-mean pyramid of an image: level ``L`` has pixels ``2**L`` input pixels wide.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Intensities (any scale: chips are standardised).
    levels : int
        How many levels (at most; a level stops when a side would drop below 2 px).
    missing : ndarray of bool, shape (H, W), optional
        Pixels without data: filled with the mean of the others first.

    Returns
    -------
    list of float32 ndarrays, level 0 first.
    """
    base = np.array(image, dtype=np.float32)
    if base.ndim != 2:
        raise InputError(f"image must be (H, W); got shape {base.shape}")
    if missing is not None and missing.any():
        base[missing] = float(base[~missing].mean()) if (~missing).any() else 0.0
    pyramid = [base]
    for _ in range(levels - 1):
        p = pyramid[-1]
        h, w = p.shape[0] // 2 * 2, p.shape[1] // 2 * 2
        if h < 2 or w < 2:
            break
        pyramid.append(p[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3)))
    return pyramid


def crater_chips(pyramid: list[np.ndarray], craters: np.ndarray, frame=None, *, size: int = CHIP_SIZE,
                 context: float = CHIP_CONTEXT, turn: bool = False) -> np.ndarray:
    """Standardised chips ``(n, size, size)`` float32 around craters, axes in the canonical frame.

    Parameters
    ----------
    pyramid : list of ndarray
        :func:`image_pyramid` of the image the craters are on (the input grid).
    craters : ndarray, shape (n, >=3)
        ``x_px, y_px, radius_px`` on the input grid (pixel ``i``'s centre at ``i``).
    frame : planetcd.craters.sun.CanonicalFrame, optional
        The image's canonical frame: chip column ``j`` runs along the canonical
        ``x`` (light comes from chip column 0). None: the input axes.
    size, context : int, float
        ``size`` samples spanning ``±context`` radii on each axis.
    turn : bool
        Sample every chip turned 180° (a crater becomes a mound under the same light).

    Returns
    -------
    ndarray, float32, shape (n, size, size): each chip minus its mean, over its standard deviation (+0.02).
    """
    from scipy import ndimage

    craters = _crater_rows(craters)
    n = len(craters)
    out = np.zeros((n, size, size), np.float32)
    if n == 0:
        return out
    if craters.shape[1] < 3:
        raise InputError(f"craters must have shape (n, >=3); got {craters.shape}")
    x, y, r = craters[:, 0], craters[:, 1], np.maximum(craters[:, 2], 0.5)
    u = np.linspace(-context, context, size) * (-1.0 if turn else 1.0)
    # canonical offsets (dx along the canonical x = chip columns, dy along canonical y = chip rows)
    dx = r[:, None, None] * u[None, None, :]
    dy = r[:, None, None] * u[None, :, None]
    dx, dy = np.broadcast_arrays(dx, dy)
    if frame is not None and not frame.identity:
        cx, cy = frame.xy_to_canonical(x, y)
        px, py = frame.xy_to_input(cx[:, None, None] + dx, cy[:, None, None] + dy)
    else:
        px, py = x[:, None, None] + dx, y[:, None, None] + dy
    spacing = chip_spacing(r, size, context)
    level = np.clip(np.floor(np.log2(np.maximum(spacing, 1.0))), 0, len(pyramid) - 1).astype(int)
    for lev in np.unique(level):
        idx = np.flatnonzero(level == lev)
        s = 2.0 ** lev
        rows = (py[idx] + 0.5) / s - 0.5
        cols = (px[idx] + 0.5) / s - 0.5
        values = ndimage.map_coordinates(pyramid[lev], [rows.ravel(), cols.ravel()], order=1, mode="nearest")
        out[idx] = values.reshape(len(idx), size, size)
    mean = out.mean((1, 2), keepdims=True)
    std = out.std((1, 2), keepdims=True)
    return ((out - mean) / (std + 0.02)).astype(np.float32)


def chip_stack(pyramid: list[np.ndarray], craters: np.ndarray, frame=None, *, size: int = CHIP_SIZE,
               contexts=(CHIP_CONTEXT,), turn: bool = False) -> np.ndarray:
    """Chips ``(n, k, size, size)`` float32 of craters at ``k`` contexts: :func:`crater_chips` at each, stacked.

    ``contexts``: half-widths in crater radii, one channel each (a :class:`ChipVerifier`'s ``contexts``).
    """
    return np.stack([crater_chips(pyramid, craters, frame, size=size, context=float(c), turn=turn)
                     for c in contexts], axis=1)


def verifier_contexts(model) -> tuple[float, ...]:
    """The contexts (crater radii) of a verifier's input channels, from its ``metadata`` (one: ``context``)."""
    meta = getattr(model, "metadata", {}) or {}
    if meta.get("contexts"):
        return tuple(float(c) for c in meta["contexts"])
    return (float(meta.get("context", CHIP_CONTEXT)),)


def verifier_scores(model: ChipVerifier, chips: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Crater probability ``(n,)`` float64 of chips ``(n, size, size)`` (:func:`crater_chips`) or
    ``(n, k, size, size)`` (:func:`chip_stack`, ``k`` the model's contexts).

    The network runs in float32 (it is small; bf16 would not pay).
    """
    chips = np.asarray(chips, np.float32)
    if len(chips) == 0:
        return np.zeros(0)
    if chips.ndim == 3:
        chips = chips[:, None]
    model = model.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(chips), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(chips[k : k + batch_size]))
            out.append(torch.sigmoid(model(batch.float())).double().numpy())
    return np.concatenate(out)


def verify_craters(model: ChipVerifier, pyramid: list[np.ndarray], craters: np.ndarray, frame=None) -> np.ndarray:
    """Verifier probability ``(n,)`` of craters ``(n, >=3)`` on the input grid of ``pyramid``'s image."""
    meta = getattr(model, "metadata", {}) or {}
    chips = chip_stack(pyramid, craters, frame, size=int(meta.get("chip_size", CHIP_SIZE)),
                       contexts=verifier_contexts(model))
    return verifier_scores(model, chips)


def check_fdr(value, name: str = "max_fdr") -> float:
    """A decoy false-discovery share as a float in ``(0, 1]``; ``InputError`` naming ``name`` otherwise
    (``ValueError`` when ``value`` is not a number)."""
    share = float(value)
    if not 0.0 < share <= 1.0:
        raise InputError(f"{name} {value}: must be in (0, 1]")
    return share


def decoy_threshold(scores: np.ndarray, decoy_scores: np.ndarray, floor: float, max_fdr: float) -> float:
    """The lowest verifier threshold whose estimated false-discovery rate is at most ``max_fdr``.

    Target-decoy estimate, as in mass-spectrometry search: the *decoys* are the
    craters found on the same image under the opposite sun (turned 180° from
    its canonical frame), where real craters look like mounds and are rejected,
    so what still passes there is the image's own rate of crater-like texture.
    At threshold ``t`` the estimated false share of the catalogue is
    ``#(decoy_scores >= t) / #(scores >= t)``. On smooth ground there are few
    decoys and the threshold stays at ``floor``; on rough or knobby ground it
    rises until the catalogue is mostly craters again.

    Parameters
    ----------
    scores : ndarray, shape (n,)
        Verifier probabilities of the craters found (the catalogue's candidates).
    decoy_scores : ndarray, shape (m,)
        Verifier probabilities of the decoys, found and scored in the opposite frame.
    floor : float
        The verifier's own threshold: the result is never below it.
    max_fdr : float
        Largest estimated false share allowed, in ``(0, 1]``.

    Returns
    -------
    float
        The threshold (``inf`` when no threshold reaches ``max_fdr``: keep nothing).
    """
    check_fdr(max_fdr)
    scores = np.sort(np.asarray(scores, np.float64).ravel())
    decoys = np.sort(np.asarray(decoy_scores, np.float64).ravel())
    candidates = np.unique(scores[scores >= floor])
    if not len(candidates):
        return float(floor)
    kept = len(scores) - np.searchsorted(scores, candidates, side="left")
    false = len(decoys) - np.searchsorted(decoys, candidates, side="left")
    ok = false <= max_fdr * kept
    if ok[0]:
        return float(floor)
    return float(candidates[np.argmax(ok)]) if ok.any() else math.inf


def decoy_competition(craters: np.ndarray, scores: np.ndarray, decoys: np.ndarray,
                      decoy_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target-decoy competition: where a crater and a decoy are the same feature, the one the verifier likes more wins.

    A feature is a crater or a mound, not both. Under the opposite sun a mound looks like a crater, so the
    decoy pass finds it centred and the verifier scores it high there; under the image's own sun the
    segmenter may fire beside the mound (on its shadow or flank), off its centre, where the verifier
    is less sure. A real crater is the other way round. So of a crater and a decoy that overlap (the
    DeepMoon rule, :func:`planetcd.craters.match.candidate_pairs`), the lower-scoring one is dropped, as
    a search engine's target-decoy competition assigns each spectrum to its better match (Elias and
    Gygi 2007). Ties keep both.

    Parameters
    ----------
    craters : ndarray, shape (n, >=3)
        ``x_px, y_px, radius_px`` of the catalogue's candidates, on the input grid.
    scores : ndarray, shape (n,)
        Their verifier probabilities.
    decoys : ndarray, shape (m, >=3)
        The decoys (found under the opposite sun), on the same grid.
    decoy_scores : ndarray, shape (m,)
        Their verifier probabilities, scored in the opposite frame.

    Returns
    -------
    crater_wins : ndarray of bool, shape (n,)
        Craters that no overlapping decoy outscores.
    decoy_wins : ndarray of bool, shape (m,)
        Decoys that no overlapping crater outscores.
    """
    from .match import candidate_pairs

    craters, decoys = _crater_rows(craters), _crater_rows(decoys)
    scores, decoy_scores = np.asarray(scores, np.float64), np.asarray(decoy_scores, np.float64)
    crater_wins, decoy_wins = np.ones(len(craters), bool), np.ones(len(decoys), bool)
    if not len(craters) or not len(decoys):
        return crater_wins, decoy_wins
    i, j, _ = candidate_pairs(craters[:, :3], decoys[:, :3], "deepmoon")
    crater_wins[i[decoy_scores[j] > scores[i]]] = False
    decoy_wins[j[scores[i] > decoy_scores[j]]] = False
    return crater_wins, decoy_wins


#: Verifier thresholds :func:`local_decoy_thresholds` tries (0..1 in steps of 0.02; the tile folds' grid).
LOCAL_THRESHOLD_STEPS = np.round(np.arange(0.0, 1.0001, 0.02), 2)

#: Distance (in σ) past which :func:`local_decoy_weights` drops a Gaussian weight (exp(-8) = 3e-4 of a
#: neighbour's): the weights are sparse, so a large image's tens of thousands of craters cost memory in
#: proportion to their neighbours, not to their number squared.
LOCAL_CUTOFF_SIGMAS = 4.0


def check_sigma(value, name: str = "decoy_sigma") -> float:
    """A local-decoy length in pixels as a positive float; ``InputError`` naming ``name`` otherwise."""
    sigma = float(value)
    if not (math.isfinite(sigma) and sigma > 0.0):
        raise InputError(f"{name} {value}: must be a positive number of pixels")
    return sigma


def local_decoy_weights(craters: np.ndarray, decoys: np.ndarray, sigma: float):
    """Gaussian weights of every crater and every decoy as seen from each crater.

    Parameters
    ----------
    craters : ndarray, shape (n, >=2)
        ``x_px, y_px, ...`` of the craters.
    decoys : ndarray, shape (m, >=2)
        ``x_px, y_px, ...`` of the decoys, on the same grid.
    sigma : float
        Length of the Gaussian, pixels; weights beyond :data:`LOCAL_CUTOFF_SIGMAS` σ are zero.

    Returns
    -------
    w_craters : scipy.sparse.csr_matrix, shape (n, n)
        ``exp(-d² / 2σ²)`` between craters (1 on the diagonal).
    w_decoys : scipy.sparse.csr_matrix, shape (n, m)
        The same from each crater to each decoy.
    """
    from scipy import sparse
    from scipy.spatial import cKDTree

    sigma = check_sigma(sigma, "sigma")
    craters, decoys = _crater_rows(craters)[:, :2], _crater_rows(decoys)[:, :2]

    def weights(points: np.ndarray):
        shape = (len(craters), len(points))
        if not len(craters) or not len(points):
            return sparse.csr_matrix(shape)
        near = cKDTree(craters).sparse_distance_matrix(cKDTree(points), LOCAL_CUTOFF_SIGMAS * sigma,
                                                       output_type="ndarray")
        return sparse.csr_matrix((np.exp(-0.5 * (near["v"] / sigma) ** 2), (near["i"], near["j"])), shape=shape)

    w_craters = weights(craters)
    if len(craters):  # sparse_distance_matrix may leave the zero distances out: every crater sees itself
        w_craters = (w_craters - sparse.diags(w_craters.diagonal()) + sparse.identity(len(craters))).tocsr()
    return w_craters, weights(decoys)


def local_decoy_thresholds(craters: np.ndarray, scores: np.ndarray, decoys: np.ndarray, decoy_scores: np.ndarray,
                           floor: float, max_fdr: float, sigma: float, weights=None) -> np.ndarray:
    """Each crater's verifier threshold from the decoys AROUND it.

    :func:`decoy_threshold`'s target-decoy estimate with every crater and decoy weighted by a Gaussian of its
    distance from the crater: on an image that mixes smooth ground and knobs, one threshold per image is too
    strict on the first or too lax on the second. At threshold ``t`` the local false share around crater ``i``
    is ``sum_j w_ij [decoy_j >= t] / sum_k w_ik [crater_k >= t]``; crater ``i``'s threshold is the lowest of
    :data:`LOCAL_THRESHOLD_STEPS` at or above ``floor`` where that share is at most ``max_fdr``. Chosen with
    the tile folds (``benchmarks/crater_folds.py --local-decoys``, docs/segment.md).

    Parameters
    ----------
    craters : ndarray, shape (n, >=2)
        The catalogue's candidates (``x_px, y_px, ...``), after :func:`decoy_competition`.
    scores : ndarray, shape (n,)
        Their verifier probabilities.
    decoys : ndarray, shape (m, >=2)
        The decoys that won the competition, on the same grid.
    decoy_scores : ndarray, shape (m,)
        Their verifier probabilities.
    floor : float
        The verifier's own threshold: no crater's is below it.
    max_fdr : float
        Largest local estimated false share, in ``(0, 1]``.
    sigma : float
        Length of the neighbourhood (Gaussian σ), pixels of the input grid.
    weights : tuple, optional
        :func:`local_decoy_weights` of these craters and decoys at ``sigma``, if already made.

    Returns
    -------
    ndarray, shape (n,)
        Each crater's threshold (``inf``: no step reaches ``max_fdr`` around it; the crater is dropped).
    """
    check_fdr(max_fdr)
    craters = _crater_rows(craters)
    if not len(craters):
        return np.zeros(0)
    steps = LOCAL_THRESHOLD_STEPS[LOCAL_THRESHOLD_STEPS >= floor - 1e-9]
    if not len(steps):
        steps = np.array([floor])
    w_craters, w_decoys = local_decoy_weights(craters, decoys, sigma) if weights is None else weights
    kept = (np.asarray(scores, np.float64)[None, :] >= steps[:, None]).astype(np.float64)  # (T, n)
    false = (np.asarray(decoy_scores, np.float64)[None, :] >= steps[:, None]).astype(np.float64)  # (T, m)
    ok = np.asarray(w_decoys @ false.T) <= max_fdr * np.asarray(w_craters @ kept.T) + 1e-12  # (n, T)
    first = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), steps[first], np.inf)


def local_decoys_passing(craters: np.ndarray, limits: np.ndarray, decoys: np.ndarray, decoy_scores: np.ndarray) -> int:
    """How many decoys pass the threshold (:func:`local_decoy_thresholds`) of the crater nearest to them."""
    from scipy.spatial import cKDTree

    craters, decoys = _crater_rows(craters), _crater_rows(decoys)
    if not len(decoys) or not len(craters):
        return 0
    _, nearest = cKDTree(craters[:, :2]).query(decoys[:, :2])
    return int(np.count_nonzero(np.asarray(decoy_scores) >= np.asarray(limits)[nearest]))


@dataclass
class DecoyCut:
    """What :func:`decoy_cut` keeps of a catalogue.

    Attributes
    ----------
    keep : ndarray of bool, shape (n,)
        Craters that won the target-decoy competition and pass their threshold.
    threshold : float or ndarray, shape (n,)
        The verifier threshold: one for the image, or (``sigma``) each crater's own, ``inf`` for a crater a
        decoy beat (``inf`` overall: no threshold reaches the share; keep none).
    passing : int
        Decoys that won the competition and pass (locally: the threshold of the crater nearest to them).
    won : ndarray of bool, shape (n,)
        Craters that no overlapping decoy outscores (:func:`decoy_competition`).
    """

    keep: np.ndarray
    threshold: float | np.ndarray
    passing: int
    won: np.ndarray


def decoy_cut(craters: np.ndarray, scores: np.ndarray, decoys: np.ndarray, decoy_scores: np.ndarray, floor: float,
              max_fdr: float, sigma: float | None = None, *, competition=None, weights=None) -> DecoyCut:
    """The verifier's cut of a catalogue by its decoys, as ``planetcd segment`` makes it.

    The target-decoy competition first (:func:`decoy_competition`: of a crater and a decoy that are one feature,
    the better-scored wins), then the threshold the winning decoys set: one for the image
    (:func:`decoy_threshold`), or with ``sigma`` (px) each crater's own from the decoys around it
    (:func:`local_decoy_thresholds`).

    Parameters
    ----------
    craters, scores, decoys, decoy_scores
        As :func:`decoy_competition`.
    floor, max_fdr
        The verifier's own threshold and the largest estimated false share, as :func:`decoy_threshold`.
    sigma : float, optional
        Length of the local neighbourhood in pixels; None: one threshold for the image.
    competition : (ndarray, ndarray), optional
        :func:`decoy_competition` of these craters and decoys, if already made (a grid of thresholds reuses it).
    weights : tuple, optional
        :func:`local_decoy_weights` of the winning craters and decoys at ``sigma``, if already made.

    Returns
    -------
    DecoyCut
    """
    scores, decoy_scores = np.asarray(scores, np.float64), np.asarray(decoy_scores, np.float64)
    won, decoy_won = decoy_competition(craters, scores, decoys, decoy_scores) if competition is None else competition
    winners, winner_scores = _crater_rows(decoys)[decoy_won], decoy_scores[decoy_won]
    if sigma is None:
        cut = decoy_threshold(scores[won], winner_scores, floor, max_fdr)
        return DecoyCut(won & (scores >= cut), cut, int(np.count_nonzero(winner_scores >= cut)), won)
    rows = _crater_rows(craters)
    limits = local_decoy_thresholds(rows[won], scores[won], winners, winner_scores, floor, max_fdr, sigma,
                                    weights=weights)
    threshold = np.full(len(rows), np.inf)
    threshold[won] = limits
    return DecoyCut(scores >= threshold, threshold, local_decoys_passing(rows[won], limits, winners, winner_scores),
                    won)


# --------------------------------------------------------------------------- training


def verifier_training_chips(pyramid: list[np.ndarray], truth: np.ndarray, detections: np.ndarray, frame=None, *,
                            rng: np.random.Generator, size: int = CHIP_SIZE, context: float = CHIP_CONTEXT,
                            min_radius: float = 3.0, opposite_detections: np.ndarray | None = None,
                            opposite_frame=None, contexts: tuple[float, ...] | None = None,
                            mound_offsets: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Chips and labels of one labelled image for :func:`train_verifier`.

    Positives: every labelled crater of radius ≥ ``min_radius`` whose chip lies
    inside the image, once as it is, once jittered (centre ±12 % of the radius,
    radius ×exp(N(0, 0.1))) and once mirrored along the light axis (chip rows
    reversed: the light still comes from the left). Negatives: the same
    craters turned 180° (mounds, twice: plain and jittered) and the segmenter's
    ``detections`` that match no labelled crater (DeepMoon rule), plain and
    mirrored. ``opposite_detections``: the segmenter's detections on the same
    image segmented under the opposite sun (``opposite_frame``, the frame of
    the azimuth + 180°), where every crater looks like a mound: those that
    match a labelled crater are mounds as the segmenter mistakes them (centred
    and sized where it fires, which a chip turned about the crater's own
    centre is not), cut in ``opposite_frame``, plain and mirrored.

    ``mound_offsets``: ``(low, high)`` in crater radii: also the turned chips (mounds) centred off the crater,
    by a distance uniform in ``low..high`` radii in a random direction, radius ×exp(N(0, 0.2)), plain and
    mirrored. A segmenter that fires on a mound tends to fire beside its centre (on its shadow or flank),
    where a chip turned about the crater's own centre does not look.

    ``contexts``: chips at several contexts, stacked (:func:`chip_stack`); the chip must lie inside the
    image at the widest. None: one chip at ``context``.

    Returns
    -------
    chips : ndarray, float32, shape (n, size, size), or (n, k, size, size) with ``contexts``
    labels : ndarray, float32, shape (n,)
    """
    from .match import match_craters

    h, w = pyramid[0].shape
    truth = _crater_rows(truth)
    reach = (max(contexts) if contexts else context) * truth[:, 2]
    inside = ((truth[:, 2] >= min_radius) & (truth[:, 0] - reach >= 0) & (truth[:, 1] - reach >= 0)
              & (truth[:, 0] + reach <= w - 1) & (truth[:, 1] + reach <= h - 1))
    pos_craters = truth[inside, :3]
    jittered = pos_craters.copy()
    jittered[:, :2] += rng.normal(0.0, 0.12, (len(jittered), 2)) * jittered[:, 2:3]
    jittered[:, 2] *= np.exp(rng.normal(0.0, 0.1, len(jittered)))
    if contexts:
        def chips_of(craters, in_frame):
            return chip_stack(pyramid, craters, in_frame, size=size, contexts=contexts)
    else:
        def chips_of(craters, in_frame):
            return crater_chips(pyramid, craters, in_frame, size=size, context=context)
    # flips act on the last two axes (rows, columns), whatever the channels
    plain = chips_of(pos_craters, frame)
    jitter = chips_of(jittered, frame)
    positives = np.concatenate([plain, jitter, np.flip(plain, -2)])
    mounds = np.concatenate([np.flip(plain, (-2, -1)), np.flip(jitter, (-2, -1))])
    detections = _crater_rows(detections)
    false = np.ones(len(detections), bool)
    if len(detections) and len(truth):
        result = match_craters(detections[:, :3], truth[:, :3], mode="deepmoon", min_diameter_px=0)
        if len(result.pairs):
            false[result.pairs[:, 0]] = False
    hard = chips_of(detections[false, :3], frame)
    negatives = [mounds, hard, np.flip(hard, -2)]
    if mound_offsets is not None and len(pos_craters):
        low, high = mound_offsets
        angle = rng.uniform(0.0, 2 * np.pi, len(pos_craters))
        distance = rng.uniform(low, high, len(pos_craters)) * pos_craters[:, 2]
        beside = pos_craters.copy()
        beside[:, 0] += distance * np.cos(angle)
        beside[:, 1] += distance * np.sin(angle)
        beside[:, 2] *= np.exp(rng.normal(0.0, 0.2, len(beside)))
        turned = np.flip(chips_of(beside, frame), (-2, -1))
        negatives += [turned, np.flip(turned, -2)]
    if opposite_detections is not None and len(opposite_detections) and len(truth):
        opposite = np.asarray(opposite_detections, np.float64)
        result = match_craters(opposite[:, :3], truth[:, :3], mode="deepmoon", min_diameter_px=0)
        if len(result.pairs):
            fooled = chips_of(opposite[result.pairs[:, 0], :3], opposite_frame)
            negatives += [fooled, np.flip(fooled, -2)]
    negatives = np.concatenate(negatives)
    chips = np.concatenate([positives, negatives]).astype(np.float32)
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))]).astype(np.float32)
    return chips, labels


def train_verifier(chips: np.ndarray, labels: np.ndarray, *, epochs: int = 12, batch_size: int = 128, lr: float = 2e-3,
                   seed: int = 0, size: int = CHIP_SIZE, context: float = CHIP_CONTEXT,
                   threads: int | None = None, contexts: tuple[float, ...] | None = None) -> ChipVerifier:
    """Train a :class:`ChipVerifier` on chips ``(n, size, size)`` (or ``(n, k, size, size)`` at ``k``
    ``contexts``, :func:`chip_stack`) and 0/1 labels ``(n,)``.

    Adam (weight decay 1e-4), binary cross-entropy with the positives weighted
    by the negative/positive ratio, gain ×(1 + N(0, 0.2)) and additive noise
    N(0, 0.1) per batch. Deterministic for a ``seed`` on one thread count.
    About 20 s for 13 000 chips on two CPU threads.
    """
    chips = np.asarray(chips, np.float32)
    labels = np.asarray(labels, np.float32)
    k = len(contexts) if contexts else 1
    if chips.ndim == 3 and k == 1:
        chips = chips[:, None]
    if chips.ndim != 4 or chips.shape[1:] != (k, size, size) or len(chips) != len(labels):
        shape = f"(n, {size}, {size})" if k == 1 else f"(n, {k}, {size}, {size})"
        raise InputError(f"chips must be {shape} with n labels; got {chips.shape} and {labels.shape}")
    if labels.min(initial=1) == labels.max(initial=0):
        raise InputError("the verifier needs both crater (1) and non-crater (0) chips")
    if threads:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ChipVerifier(size, context, contexts=contexts)
    opt = torch.optim.Adam(model.parameters(), lr, weight_decay=1e-4)
    x, y = torch.from_numpy(np.ascontiguousarray(chips)), torch.from_numpy(labels)
    pos_weight = float((1 - labels).sum() / max(labels.sum(), 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for k in range(0, len(x), batch_size):
            b = order[k : k + batch_size]
            xb = x[b] * (1 + 0.2 * torch.randn(len(b), 1, 1, 1, generator=gen)) + 0.1 * torch.randn(x[b].shape, generator=gen)
            loss = loss_fn(model(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def save_verifier(model: ChipVerifier, path: str | os.PathLike, **metadata) -> Path:
    """Write a verifier checkpoint (``state_dict`` and its metadata); returns the path."""
    path = Path(path)
    meta = {**model.metadata, **metadata}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"kind": "planetcd-chip-verifier", "state_dict": model.state_dict(), "metadata": meta}, tmp)
    os.replace(tmp, path)
    return path


def load_verifier(path: str | os.PathLike) -> ChipVerifier:
    """A verifier saved by :func:`save_verifier`, in eval mode, with its ``metadata``."""
    from ..errors import WeightsError

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = dict(payload["metadata"])
        model = ChipVerifier(int(meta.get("chip_size", CHIP_SIZE)), float(meta.get("context", CHIP_CONTEXT)),
                             contexts=meta.get("contexts"))
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # torch.load / load_state_dict raise many kinds
        raise WeightsError(f"{path}: not a planetcd chip verifier ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    model.metadata = meta
    return model.eval()


def chip_spacing(radius, size: int = CHIP_SIZE, context: float = CHIP_CONTEXT):
    """Input pixels between two chip samples for craters of ``radius`` px (a number or an array)."""
    return 2.0 * context * np.asarray(radius, np.float64) / max(size - 1, 1)


def pyramid_levels_for(max_radius: float, size: int = CHIP_SIZE, context: float = CHIP_CONTEXT) -> int:
    """Pyramid levels :func:`crater_chips` needs for craters up to ``max_radius`` px."""
    return max(1, int(math.floor(math.log2(max(float(chip_spacing(max_radius, size, context)), 1.0)))) + 1)
