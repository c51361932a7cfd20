"""From a crater probability map to a crater list.

Two methods, both returning an ``(n, 4)`` float64 array with columns
``x_px, y_px, radius_px, confidence`` (pixel convention of
:mod:`planetcd.craters.catalog`: integer values at pixel centres):

``template``
    In the style of DeepMoon (Silburt et al. 2019): binarise the map, correlate
    it with ring (outline targets) or disc (filled targets) templates over a
    range of radii (:func:`skimage.feature.match_template`), keep local
    correlation peaks above ``match_threshold``, then remove duplicates with the
    rule of :mod:`planetcd.craters.match` (keeping the best correlation).
``components``
    A fast path. Filled targets: distance transform of the binary map,
    watershed from its maxima to split touching craters, one crater per region
    (area-equivalent radius, centroid). Outline and ring targets: every closed
    background region (a crater's inside) is a crater; its holes are filled so
    that nested craters give both the inner and the outer crater.

Filled targets can also be screened by their *disc contrast*
(:func:`disc_contrast`, ``min_contrast``): the mean probability inside the
crater's disc minus the mean over the ring from 1 to 1.5 radii around it.  A
crater stands out of its surroundings; blobs cut from a wide patch of
middling probability (rough terrain, noise texture) do not.  On the validation
tiles of ``ctx-craters`` it separated matched from unmatched detections better
than the mean probability (ROC AUC 0.90 against 0.83 on the stage 3 maps;
``benchmarks/contrast_auc.py``, docs/segment.md).

``benchmarks/bench_extract.py`` compares them on synthetic maps.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .match import suppress_duplicates

__all__ = [
    "TARGETS", "METHODS", "EXTRACTION_DEFAULTS", "extract_craters", "extraction_options", "crater_threshold",
    "model_metadata", "crater_template", "disc_mean", "ring_mean",
    "disc_contrast", "synthetic_probability_map",
]

TARGETS = ("filled", "outline", "rings")
METHODS = ("components", "template")
#: Inner radius of an ``outline`` target as a fraction of the rim radius (as planetcd.craters.targets).
OUTLINE_INNER_FRACTION = 0.7
#: Full thickness in pixels of a ``rings`` target (DeepMoon draws 1-2 px rings).
RING_THICKNESS = 1.0
#: Outer radius, in crater radii, of the ring that :func:`disc_contrast` compares the disc with.
CONTRAST_OUTER = 1.5


def ring_mean(image: np.ndarray, craters: np.ndarray, inner: float = 0.0, outer: float = 1.0) -> np.ndarray:
    """Mean of ``image`` over the ring ``inner * r < d <= outer * r`` around each crater.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    craters : ndarray, shape (n, >=3)
        ``x_px, y_px, radius_px`` in the image's pixels (integer values at pixel centres).
    inner, outer : float
        Ring limits in crater radii; ``inner=0`` gives the whole disc (centre
        included; radii below 0.5 px count as 0.5 px).

    Returns
    -------
    ndarray, float64, shape (n,)
        NaN where the ring holds no pixel of the image (off the image).
    """
    craters = np.asarray(craters, dtype=np.float64)
    if craters.size == 0:
        return np.zeros(0)
    craters = np.atleast_2d(craters)
    out = np.full(len(craters), np.nan)
    h, w = image.shape
    for k, (x, y, radius) in enumerate(craters[:, :3]):
        radius = max(radius, 0.5)
        reach = outer * radius
        r0, r1 = max(0, int(np.floor(y - reach))), min(h, int(np.ceil(y + reach)) + 1)
        c0, c1 = max(0, int(np.floor(x - reach))), min(w, int(np.ceil(x + reach)) + 1)
        if r1 <= r0 or c1 <= c0:
            continue
        rows, cols = np.ogrid[r0:r1, c0:c1]
        d2 = (rows - y) ** 2 + (cols - x) ** 2
        ring = d2 <= reach**2
        if inner > 0:
            ring &= d2 > (inner * radius) ** 2
        if np.any(ring):
            out[k] = float(image[r0:r1, c0:c1][ring].mean())
    return out


def disc_mean(image: np.ndarray, craters: np.ndarray) -> np.ndarray:
    """Mean of ``image (H, W)`` inside each disc ``x, y, radius`` (pixels); NaN off the image."""
    return ring_mean(image, craters, 0.0, 1.0)


def disc_contrast(prob: np.ndarray, craters: np.ndarray, outer: float = CONTRAST_OUTER) -> np.ndarray:
    """Mean probability inside each crater's disc minus the mean over the ring from 1 to ``outer`` radii.

    Parameters
    ----------
    prob : ndarray, shape (H, W)
        Crater probability (filled-disc targets), ``0..1``.
    craters : ndarray, shape (n, >=3)
        ``x_px, y_px, radius_px``.
    outer : float
        Outer edge of the surrounding ring, in crater radii.

    Returns
    -------
    ndarray, float64, shape (n,)
        In ``-1..1``; a ring entirely off the map counts as probability 0.
    """
    prob = np.nan_to_num(np.asarray(prob, dtype=np.float32), nan=0.0)
    inside = np.nan_to_num(disc_mean(prob, craters), nan=0.0)
    around = np.nan_to_num(ring_mean(prob, craters, 1.0, outer), nan=0.0)
    return inside - around


def crater_threshold(metadata: dict, prob_threshold: float | None = None) -> float:
    """The crater probability threshold: ``prob_threshold``, else the model's (``metadata["threshold"]``, 0.5).

    The one place a model's default threshold is read.

    Raises
    ------
    InputError
        When the threshold is not strictly between 0 and 1.
    """
    value = float(metadata.get("threshold", 0.5) if prob_threshold is None else prob_threshold)
    if not 0.0 < value < 1.0:
        raise InputError(f"prob_threshold {value:g}: must be between 0 and 1")
    return value


def extraction_options(metadata: dict, threshold: float | None = None) -> dict:
    """:func:`extract_craters` keyword arguments from a model's registry metadata (its ``extraction`` entry).

    ``threshold`` overrides the model's probability threshold (:func:`crater_threshold`).
    """
    ext = metadata.get("extraction", {})
    options = {
        "method": ext.get("method", "components"),
        "threshold": crater_threshold(metadata, threshold),
        "target": metadata.get("target", "filled"),
        "min_radius": float(ext.get("min_radius", 2.0)),
        "max_radius": float(ext.get("max_radius", 150.0)),
    }
    if ext.get("min_contrast") is not None:
        options["min_contrast"] = float(ext["min_contrast"])
    return options


def model_metadata(model) -> dict:
    """The metadata of a segmenter given as a registry name, a checkpoint path, a loaded module or a dict."""
    if isinstance(model, dict):
        return model
    if hasattr(model, "metadata"):
        return model.metadata
    from .. import models

    if str(model) in models.available():
        return models.metadata(str(model))
    return models.cached(model).metadata


def crater_template(radius: float, target: str = "filled", pad: int | None = None) -> np.ndarray:
    """A square float32 template of one crater of ``radius`` pixels, centred, with a zero margin.

    Parameters
    ----------
    radius : float
        Rim radius in pixels.
    target : {"filled", "outline", "rings"}
        Disc; annulus from ``0.7 * radius`` to ``radius``; or a thin ring.
    pad : int, optional
        Zero margin around the crater (default ``max(3, radius // 2)``) so that the
        normalised correlation penalises craters larger than the template.

    Returns
    -------
    ndarray, float32, shape (2 * (ceil(radius) + pad) + 1,) * 2
    """
    if pad is None:
        pad = max(3, int(radius // 2))
    half = int(np.ceil(radius)) + pad
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    d = np.hypot(yy, xx)
    return _crater_mask(d, radius, target).astype(np.float32)


def _crater_mask(d: np.ndarray, radius: float, target: str) -> np.ndarray:
    if target == "filled":
        return d <= radius
    if target == "outline":
        return (d <= radius) & (d >= OUTLINE_INNER_FRACTION * radius)
    if target == "rings":
        return np.abs(d - radius) <= max(0.5, RING_THICKNESS / 2)
    if target == "rings-template":
        # DeepMoon correlates 2-px-wide rings, which tolerate the radius step.
        return np.abs(d - radius) <= 1.0
    raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")


def _check(prob: np.ndarray, method: str, target: str, min_radius: float, max_radius: float) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"the probability map must be 2-D (H, W); got shape {prob.shape}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    if not 0 < min_radius <= max_radius:
        raise ValueError(f"need 0 < min_radius <= max_radius, got {min_radius}, {max_radius}")
    return np.nan_to_num(prob, nan=0.0)


#: Settings of :func:`extract_craters` when neither the call nor a model gives them.
EXTRACTION_DEFAULTS = {"method": "components", "threshold": 0.5, "min_radius": 3.0, "max_radius": 50.0, "target": "filled"}


def extract_craters(
    prob: np.ndarray,
    *,
    method: str | None = None,
    threshold: float | None = None,
    min_radius: float | None = None,
    max_radius: float | None = None,
    target: str | None = None,
    match_threshold: float | None = None,
    radius_step: float = 1.0,
    duplicate_mode: str = "deepmoon",
    close_gaps: int = 2,
    min_contrast: float | None = None,
    model=None,
) -> np.ndarray:
    """Craters from a probability map.

    Settings not given come from ``model``'s registry extraction
    (:func:`extraction_options`) when a model is given, else from
    :data:`EXTRACTION_DEFAULTS` (components, threshold 0.5, radii 3-50 px, filled targets).

    Parameters
    ----------
    prob : ndarray, shape (H, W)
        Crater probability in ``0..1`` (``nan`` counts as 0).
    method : {"components", "template"}
        See the module docstring.
    threshold : float
        Probability above which a pixel belongs to a target.
    min_radius, max_radius : float
        Radii kept, in pixels.
    target : {"filled", "outline", "rings"}
        What the map shows: crater discs, annuli (inner radius 0.7 × rim) or thin rims.
    match_threshold : float, optional
        ``template``: smallest normalised correlation of a detection. Default 0.5
        for rings and outlines (DeepMoon's value), 0.6 for filled targets, where a
        disc template straddling two touching craters still correlates at ~0.55.
    radius_step : float
        ``template``: step between template radii in pixels.
    duplicate_mode : {"deepmoon", "strict", "iou"}
        Rule of :func:`planetcd.craters.match.suppress_duplicates`.
    close_gaps : int
        ``components`` with outline/ring targets: radius in pixels of a
        morphological closing that bridges gaps in the rims before their insides
        are found (0: none). Insides narrower than about ``close_gaps`` pixels
        are closed too, so craters under ~``close_gaps + 1`` px radius are lost.
    min_contrast : float, optional
        Filled targets: drop craters whose :func:`disc_contrast` (mean
        probability in the disc minus that of the ring from 1 to 1.5 radii) is
        below this.  None: no screening (or the model's); -1 keeps every crater.
    model : str, path, torch.nn.Module or dict, optional
        A segmenter (registry name, checkpoint, loaded model or its metadata) whose extraction settings fill
        the settings not given.

    Returns
    -------
    ndarray, float64, shape (n, 4)
        ``x_px, y_px, radius_px, confidence``, sorted by decreasing confidence.
        Confidence: the correlation peak (``template``) or the mean probability
        over the crater's region (``components``).
    """
    settings = dict(EXTRACTION_DEFAULTS)
    if model is not None:
        settings.update(extraction_options(model_metadata(model)))
    given = {"method": method, "threshold": threshold, "min_radius": min_radius, "max_radius": max_radius,
             "target": target, "min_contrast": min_contrast}
    settings.update({k: v for k, v in given.items() if v is not None})
    method, threshold, target = settings["method"], settings["threshold"], settings["target"]
    min_radius, max_radius = settings["min_radius"], settings["max_radius"]
    min_contrast = settings.get("min_contrast")
    if min_contrast is not None and min_contrast <= -1.0:
        min_contrast = None  # every contrast is at least -1
    prob = _check(prob, method, target, min_radius, max_radius)
    if min_contrast is not None and target != "filled":
        raise ValueError(f"min_contrast screens filled-disc maps; the map holds {target!r} targets")
    binary = prob >= threshold
    if match_threshold is None:
        match_threshold = 0.6 if target == "filled" else 0.5
    if method == "template":
        craters = _template_craters(binary, target, min_radius, max_radius, match_threshold, radius_step)
    elif target == "filled":
        craters = _filled_components(binary, prob, min_radius)
    else:
        if close_gaps > 0:
            from skimage.morphology import disk

            binary = ndimage.binary_closing(binary, structure=disk(close_gaps), border_value=0)
        craters = _outline_components(binary, prob, target)
    if len(craters):
        craters = craters[(craters[:, 2] >= min_radius) & (craters[:, 2] <= max_radius)]
    if len(craters) and min_contrast is not None:
        craters = craters[disc_contrast(prob, craters) >= min_contrast]
    if len(craters):
        craters = craters[suppress_duplicates(craters, craters[:, 3], duplicate_mode)]
        craters = craters[np.argsort(-craters[:, 3], kind="stable")]
    return craters.reshape(-1, 4)


def _template_craters(binary, target, min_radius, max_radius, match_threshold, radius_step) -> np.ndarray:
    from skimage.feature import match_template, peak_local_max

    image = binary.astype(np.float32)
    found = []
    if not image.any():
        return np.zeros((0, 4))
    for radius in np.arange(min_radius, max_radius + 1e-9, radius_step):
        template = crater_template(radius, "rings-template" if target == "rings" else target)
        if template.shape[0] > min(image.shape) + 2 * template.shape[0] // 2:
            break
        score = match_template(image, template, pad_input=True, mode="constant", constant_values=0)
        peaks = peak_local_max(
            score, min_distance=max(1, int(radius // 2)), threshold_abs=match_threshold, exclude_border=False
        )
        if len(peaks):
            found.append(np.column_stack([peaks[:, 1], peaks[:, 0], np.full(len(peaks), radius), score[peaks[:, 0], peaks[:, 1]]]))
    if not found:
        return np.zeros((0, 4))
    craters = np.concatenate(found).astype(np.float64)
    craters[:, 3] = np.clip(craters[:, 3], 0.0, 1.0)
    return craters


def _regions(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Centroid, area-equivalent radius and mean probability of every labelled region, its holes filled.

    (The filled-disc path measures its regions with :func:`_piece_regions`.)"""
    rows, cols, areas, means = [], [], [], []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        region = ndimage.binary_fill_holes(labels[sl] == k)
        r, c = np.nonzero(region)
        rows.append(r.mean() + sl[0].start)
        cols.append(c.mean() + sl[1].start)
        areas.append(region.sum())
        means.append(prob[sl][region].mean())
    if not areas:
        return np.zeros((0, 4))
    return np.column_stack([cols, rows, np.sqrt(np.asarray(areas) / np.pi), means])


def _component_distances_and_peaks(binary: np.ndarray, components: np.ndarray, min_distance: int,
                                   boxes: list | None = None,
                                   labels: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """``ndimage.distance_transform_edt(binary)`` and ``peak_local_max(that, min_distance, labels=components,
    exclude_border=False)``, computed component by component on small crops: the same values and peaks.

    The nearest background pixel of a component's pixel lies within the component's bounding box grown by
    one pixel (along a row or column the component ends at a background pixel no farther than the box's
    edge, and a pixel beyond the grown box is farther still), so the transform of that crop of ``binary``
    equals the whole map's on the component. ``peak_local_max`` works label by label on each label's
    bounding box with its own threshold (the map's minimum: 0, there being background), which the crop
    reproduces. What is saved is the whole-map transform and ``peak_local_max``'s whole-map passes, and the
    whole map of distances (8 bytes a pixel, fresh memory each time).

    ``boxes``: ``ndimage.find_objects(components)``, when the caller has it. ``labels``: the components to
    work on, increasing (default: all); the peaks of these are as above and in the same order.

    Returns
    -------
    distances : dict
        ``{label: (crop, transform)}``: each component's grown box (a pair of slices) and the transform of
        ``binary`` there, which equals the whole map's on the component's pixels.
    peaks : ndarray, shape (n, 2)
        Rows and columns.
    """
    from skimage.feature import peak_local_max

    height, width = binary.shape
    distances, peaks = {}, []
    boxes = ndimage.find_objects(components) if boxes is None else boxes
    for k in (range(1, len(boxes) + 1) if labels is None else labels):
        box = boxes[k - 1]
        if box is None:
            continue
        crop = (slice(max(box[0].start - 1, 0), min(box[0].stop + 1, height)),
                slice(max(box[1].start - 1, 0), min(box[1].stop + 1, width)))
        inside = components[crop] == k
        local = ndimage.distance_transform_edt(binary[crop])
        distances[int(k)] = (crop, local)
        found = peak_local_max(local, min_distance=min_distance, labels=inside.astype(np.int32), threshold_abs=0.0,
                               exclude_border=False)
        peaks.append(found + (crop[0].start, crop[1].start))
    return distances, (np.vstack(peaks) if peaks else np.zeros((0, 2), np.intp))


def _filled_components(binary: np.ndarray, prob: np.ndarray, min_radius: float) -> np.ndarray:
    """The regions (:func:`_regions`) of the watershed split of ``binary``'s filled components.

    A component whose area-equivalent radius is below ``min_radius`` is dropped before the split: every
    region cut from it is smaller still, so :func:`extract_craters`' radius filter would drop them all.
    The regions of the other components are the same, in the same order, as without the drop: the
    distance transform reads ``binary``, not the labels, and the seeds keep their relative order. So
    the caller must still drop the regions of radius below ``min_radius``.
    """
    from skimage.feature import peak_local_max

    if not binary.any():
        return np.zeros((0, 4))
    # Gaps inside a disc would seed extra watershed basins; a filled target has no holes.
    binary = _fill_holes(binary)
    components, _ = ndimage.label(binary)
    boxes = ndimage.find_objects(components)
    # Most components of a low-threshold map are specks. Each is counted in its box (np.bincount of the map
    # would first copy the labels to int64: a fresh 8 bytes a pixel); the same sqrt(area / pi) as _regions'
    # radius, monotone in the area, so a component dropped here holds no region of radius >= min_radius.
    areas = np.array([np.count_nonzero(components[box] == k) for k, box in enumerate(boxes, start=1)], np.float64)
    kept = np.flatnonzero(np.sqrt(areas / np.pi) >= min_radius) + 1
    if not kept.size:
        return np.zeros((0, 4))
    min_distance = max(1, int(round(min_radius)))
    if binary.all():  # no background: the per-component crops rest on one (their grown box holds it)
        distance = ndimage.distance_transform_edt(binary)
        peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
        distances = {1: (boxes[0], distance)}
    else:
        distances, peaks = _component_distances_and_peaks(binary, components, min_distance, boxes, kept)
    # Components without a peak (thin slivers) get one seed each, after the peaks. A one-seed component is
    # its seed's basin wherever the seed lies, so its first pixel serves (it was the distance's maximum).
    unmarked = np.setdiff1d(kept, components[peaks[:, 0], peaks[:, 1]])
    seeds = [peaks.reshape(-1, 2)]
    for k in unmarked:
        box = boxes[k - 1]
        first = np.argwhere(components[box] == k)[0]
        seeds.append([[first[0] + box[0].start, first[1] + box[1].start]])
    pieces = _split_components(components, np.concatenate(seeds).astype(np.intp), distances, boxes)
    return _piece_regions(pieces, prob)


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(binary)``: the background 4-connected to the map's edge stays, the rest is
    filled; by one labelling of the background instead of the iterated dilation (a tenth of the time)."""
    background, n = ndimage.label(~binary)
    outside = np.zeros(n + 1, bool)
    outside[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = True
    outside[0] = False
    return ~outside[background]


def _split_components(components: np.ndarray, seeds: np.ndarray, distances: dict,
                      boxes: list | None = None) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """``watershed(-distance, markers, mask=components > 0)``, component by component, where ``markers``
    holds ``i + 1`` at ``seeds[i]`` (``(n, 2)`` rows and columns, at most one seed a pixel) and 0 elsewhere.

    ``distances``: ``{label: (crop, values)}`` (:func:`_component_distances_and_peaks`), the distance on a crop
    holding the component's box, for every component with more than one seed; only its values on the
    component's pixels are read.

    A basin never leaves its component (the mask separates components, and both this flood and
    :func:`scipy.ndimage.label` connect the 4 neighbours), so each component is flooded alone on its bounding
    box (``boxes``: ``ndimage.find_objects(components)``, when the caller has it). The basins are the whole
    map's but for ties: a pixel that two basins reach at the same step goes where the flood's heap order sends
    it, and that order depends on what else the heap holds (skimage pushes every seed at the same age). A
    component with one seed (most craters) is that seed's basin without a flood. What is saved is the whole
    map's flood and its input checks, and every whole map (markers, labels): fresh memory is slow.

    Returns
    -------
    list of (box, labels)
        For each component that holds a seed, in label order: its bounding box and the basin labels there
        (int32, 0 off the component). Together they make the whole map's labels (0 where no seed is).
    """
    from skimage.segmentation import watershed

    boxes = ndimage.find_objects(components) if boxes is None else boxes
    seeds = np.asarray(seeds, np.intp).reshape(-1, 2)
    owner = components[seeds[:, 0], seeds[:, 1]]  # the component of each seed
    order = np.argsort(owner, kind="stable")
    held, first = np.unique(owner[order], return_index=True)
    pieces = []
    for k, mine in zip(held, np.split(order, first[1:])):
        box = boxes[k - 1]
        inside = components[box] == k
        if len(mine) == 1:
            pieces.append((box, np.where(inside, np.int32(mine[0] + 1), np.int32(0))))
            continue
        markers = np.zeros(inside.shape, np.int32)
        markers[seeds[mine, 0] - box[0].start, seeds[mine, 1] - box[1].start] = mine + 1
        crop, values = distances[int(k)]
        values = values[box[0].start - crop[0].start : box[0].stop - crop[0].start,
                        box[1].start - crop[1].start : box[1].stop - crop[1].start]
        pieces.append((box, np.where(inside, watershed(-values, markers, mask=inside), 0).astype(np.int32)))
    return pieces


def _piece_regions(pieces: list[tuple[tuple[slice, slice], np.ndarray]], prob: np.ndarray) -> np.ndarray:
    """Centroid ``x, y``, area-equivalent radius and mean probability of every label of the map that
    :func:`_split_components`' pieces make up (a piece: a box and the labels there, 0 off them), piece by piece.

    Per-label sums in one pass each over the labelled pixels (``np.bincount``, in raster order), not ndimage's
    per-statistic passes over the whole map. A label lies in one piece, and a piece's pixels in raster order
    are the map's in raster order, so the sums (the areas and coordinates integers, the probabilities float64)
    are those over the whole map, bit for bit, without it. One row per label present, in label order.
    """
    if not pieces:
        return np.zeros((0, 4))
    ids, rows = [], []
    for box, labels in pieces:
        inside = labels > 0
        found = labels[inside]
        r, c = np.nonzero(inside)
        names, index = np.unique(found, return_inverse=True)
        area = np.bincount(index, minlength=len(names)).astype(np.float64)
        x_sum, y_sum, prob_sum = (np.bincount(index, weights=w, minlength=len(names))
                                  for w in (c + box[1].start, r + box[0].start,
                                            prob[box][inside].astype(np.float64)))
        ids.append(names)
        rows.append(np.column_stack([x_sum / area, y_sum / area, np.sqrt(area / np.pi), prob_sum / area]))
    return np.concatenate(rows)[np.argsort(np.concatenate(ids), kind="stable")]


def _outline_components(binary: np.ndarray, prob: np.ndarray, target: str) -> np.ndarray:
    inside = ~binary
    labels, n = ndimage.label(inside)
    if n == 0:
        return np.zeros((0, 4))
    # Background regions touching the border are the outside of the craters.
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    labels[np.isin(labels, border[border > 0])] = 0
    labels, _ = ndimage.label(labels > 0)
    craters = _regions(labels, 1.0 - prob)
    if len(craters) == 0:
        return craters
    # The region is the crater's inside: scale its radius back to the rim.
    if target == "outline":
        craters[:, 2] = craters[:, 2] / OUTLINE_INNER_FRACTION
    else:
        craters[:, 2] = _ring_radius(binary, craters)
    # Confidence: mean target probability on the rim circle found.
    craters[:, 3] = _rim_probability(prob, craters, target)
    return craters


def _ring_radius(binary: np.ndarray, craters: np.ndarray, reach: float = 3.0) -> np.ndarray:
    """Rim radius of thin rings: mean distance of the ring pixels just outside each inside region.

    The binarised ring is wider than the drawn one (blur, low threshold), so the
    radius of the inside region alone underestimates the rim.
    """
    radii = np.empty(len(craters))
    height, width = binary.shape
    for k, (x, y, r_inside, _) in enumerate(craters):
        outer = r_inside + reach
        r0, r1 = max(0, int(y - outer)), min(height, int(np.ceil(y + outer)) + 1)
        c0, c1 = max(0, int(x - outer)), min(width, int(np.ceil(x + outer)) + 1)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        d = np.hypot(yy - y, xx - x)
        ring = binary[r0:r1, c0:c1] & (d >= r_inside) & (d < outer)
        radii[k] = d[ring].mean() if ring.any() else r_inside + max(0.5, RING_THICKNESS / 2)
    return radii


def _rim_probability(prob: np.ndarray, craters: np.ndarray, target: str) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    fraction = (1 + OUTLINE_INNER_FRACTION) / 2 if target == "outline" else 1.0
    rr = craters[:, 1:2] + fraction * craters[:, 2:3] * np.sin(angles)
    cc = craters[:, 0:1] + fraction * craters[:, 2:3] * np.cos(angles)
    values = ndimage.map_coordinates(prob, [rr.ravel(), cc.ravel()], order=1, mode="constant", cval=0.0)
    return values.reshape(rr.shape).mean(axis=1)


def synthetic_probability_map(
    shape: tuple[int, int] = (512, 512),
    n_craters: int = 40,
    *,
    target: str = "filled",
    touching: bool = True,
    nested: bool = True,
    radius_range: tuple[float, float] = (5.0, 30.0),
    blur_sigma: float = 0.7,
    noise_std: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A probability map of known craters, for tests and benchmarks of the extraction.

    Isolated craters (log-uniform radii, at least 2 px apart), plus craters
    touching some of them (``touching``) and, for outline/ring targets, craters
    nested inside others (``nested``); drawn as ``target`` masks, blurred by
    ``blur_sigma`` pixels, with Gaussian noise, clipped to ``0..1``.

    Returns
    -------
    prob : ndarray, float32, shape ``shape``
    craters : ndarray, float64, shape (n, 3)
        ``x_px, y_px, radius_px`` of every crater drawn.
    """
    rng = np.random.default_rng(seed)
    r_lo, r_hi = radius_range
    height, width = shape
    craters: list[list[float]] = []

    def clear(x, y, r, ignore=None, gap=2.0):
        return all(np.hypot(x - c[0], y - c[1]) > r + c[2] + gap for k, c in enumerate(craters) if k != ignore)

    for _ in range(50 * n_craters):
        if len(craters) == n_craters:
            break
        r = float(np.exp(rng.uniform(np.log(r_lo), np.log(r_hi))))
        x, y = rng.uniform(r + 2, width - r - 2), rng.uniform(r + 2, height - r - 2)
        if clear(x, y, r):
            craters.append([x, y, r])
    n_base = len(craters)
    if touching:
        for k in range(n_base // 5):
            x, y, r = craters[k]
            angle, r2 = rng.uniform(0, 2 * np.pi), max(r_lo, r * rng.uniform(0.5, 0.9))
            x2, y2 = x + (r + r2) * np.cos(angle), y + (r + r2) * np.sin(angle)
            if r2 + 1 <= x2 < width - r2 - 1 and r2 + 1 <= y2 < height - r2 - 1 and clear(x2, y2, r2, ignore=k, gap=1.0):
                craters.append([x2, y2, r2])
    if nested and target != "filled":
        for k in range(n_base // 5, n_base // 5 + n_base // 6):
            x, y, r = craters[k]
            r2 = OUTLINE_INNER_FRACTION * r * rng.uniform(0.3, 0.55)
            if r2 < r_lo:
                continue
            offset, angle = rng.uniform(0, OUTLINE_INNER_FRACTION * r - r2 - 2), rng.uniform(0, 2 * np.pi)
            craters.append([x + offset * np.cos(angle), y + offset * np.sin(angle), r2])
    craters_arr = np.array(craters, dtype=np.float64).reshape(-1, 3)
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros(shape, bool)
    for x, y, r in craters_arr:
        mask |= _crater_mask(np.hypot(yy - y, xx - x), r, target)
    prob = ndimage.gaussian_filter(mask.astype(np.float32), blur_sigma) if blur_sigma > 0 else mask.astype(np.float32)
    prob = np.clip(prob + rng.normal(0.0, noise_std, shape), 0.0, 1.0).astype(np.float32)
    return prob, craters_arr
