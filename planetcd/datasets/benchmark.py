"""Benchmark generator: labelled change pairs made from real orbital images.

The published planetary change sets (Kerner et al. 2019: HiRISE RSL, CTX
impacts, LROC) cannot be downloaded everywhere and hold few labels, so this
module builds sets of the same shape from real images:

- the **pre** patch is a window of a real image, untouched;
- the **post** patch is the same ground seen again: displaced by up to
  ``max_shift`` pixels per axis (sub-pixel, cubic spline, taken from the real
  image around the window — never wrapped), blurred, with a gain, an offset, a
  gamma and Gaussian noise;
- a **changed** post patch also shows something new on the ground, placed
  where it is visible in the post patch: a *real crater* cut from elsewhere in
  the image (its crater labels), scaled to the local brightness and feathered
  in; a *rendered fresh crater* with a dark or bright blast zone
  (:func:`planetcd.datasets.synthetic.add_fresh_crater`); or, for the ``rsl``
  preset, a few elongated *dark slope streaks*. A new crater is lit by the sun
  post's ground shows (:func:`post_light`), as a real one would be.
- the ``real-nuisance`` preset adds what a real second date brings, to both
  dates independently (:mod:`planetcd.change.nuisance`): another sun (the
  ground relit from a photoclinometric height field), dust-devil tracks, a
  mosaic seam, haze and a coarser resolution; ``small-craters`` has new
  craters of radius 3–7 px on pairs misregistered by up to 20 px.

New craters are 10–40 px across. Every random draw of pair ``i`` comes from
``numpy.random.default_rng([seed, i])``, so a set is reproducible to the byte
and pair ``i`` does not depend on how many pairs are made. With
``implants=False`` the generator makes each changed pair's *unchanged twin*:
the same window, shift and nuisances without the new object — the two differ
only in the implant's footprint, which the tests check.

Test sets and training data
---------------------------
CTX tiles MC11E-A to MC11E-G train the crater UNet, so they are never used for
test sets: the default sources are MC11E-H, MC11E-I and the HRSC holdout tile,
and asking for a training tile needs ``allow_training_images=True``
(``--allow-training-images``), meant for making *training* sets only.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..change.nuisance import REAL_NUISANCE, DateNuisances, RealNuisance, draw_date_nuisances, real_nuisance
from ..craters.sun import angle_difference, estimate_sun_azimuth
from ..errors import InputError
from ..raster import open_raster, read_window
from .changeset import ChangeSet, write_changeset
from .crater_labels import read_pycda_csv, read_voc_boxes
from .synthetic import add_fresh_crater

__all__ = [
    "PRESETS",
    "Preset",
    "SourceImage",
    "PairSpec",
    "Benchmark",
    "TRAINING_IMAGES",
    "DEFAULT_TEST_IMAGES",
    "KNOWN_IMAGES",
    "default_shared_dir",
    "load_sources",
    "make_benchmark",
    "paste_crater",
    "turn_light",
    "write_benchmark",
]

#: Images that train something in planetcd (the crater UNet): never used for test sets.
TRAINING_IMAGES = tuple(f"MC11E-{c}" for c in "ABCDEFG")
#: Default sources of test sets.
DEFAULT_TEST_IMAGES = ("MC11E-H", "MC11E-I", "hrsc-holdout")
#: Named images in the shared data folder: image path and crater-label path (relative to it).
KNOWN_IMAGES = {
    **{f"MC11E-{c}": (f"data/ctx-mc11e/images/MC11E-{c}.png", f"data/ctx-mc11e/annotations/clustered/MC11E-{c}.xml")
       for c in "ABCDEFGHI"},
    "hrsc-holdout": ("data/hrsc-pycda/holdout_tile.pgm", "data/hrsc-pycda/holdout_tile_labels.csv"),
}

#: Radii (pixels) of new craters: 10–40 px across (the ``small-craters`` preset: 3–7 px).
CRATER_RADIUS = (5.0, 20.0)
#: Radii (pixels) of the labelled craters kept as donors: every preset's range.
DONOR_RADIUS = (3.0, 20.0)


@dataclass(frozen=True)
class Preset:
    """The shape of one benchmark: patch size, largest shift and what appears in changed pairs."""

    name: str
    patch_size: int
    max_shift: float
    implants: tuple[str, ...]
    mirrors: str
    #: radii of new craters, pixels
    crater_radius: tuple[float, float] = (5.0, 20.0)
    #: both dates get real nuisances, drawn independently (:func:`planetcd.change.nuisance.real_nuisance`)
    real_nuisance: bool = False

    def describe(self) -> str:
        extra = ", real nuisances on both dates" if self.real_nuisance else ""
        return (f"{self.name}: {self.patch_size} px patches, shifts <= {self.max_shift:g} px, "
                f"{', '.join(self.implants)} (r {self.crater_radius[0]:g}-{self.crater_radius[1]:g} px){extra}")


PRESETS: dict[str, Preset] = {
    "ctx-impacts": Preset("ctx-impacts", 150, 10.0, ("crater", "fresh-dark", "fresh-bright"),
                          "CTX new meteorite impacts (Kerner et al. 2019): 150 px patches"),
    "lroc": Preset("lroc", 100, 40.0, ("crater", "fresh-dark", "fresh-bright"),
                   "LROC NAC new impacts: 100 px patches, poorly co-registered"),
    "rsl": Preset("rsl", 100, 10.0, ("streaks",), "HiRISE recurring slope lineae: dark streaks appearing"),
    "small-craters": Preset("small-craters", 150, 20.0, ("crater", "fresh-dark", "fresh-bright"),
                            "small new craters (r 3-7 px) on poorly co-registered 150 px pairs (shifts up to 20 px)",
                            crater_radius=(3.0, 7.0)),
    "real-nuisance": Preset("real-nuisance", 150, 10.0, ("crater", "fresh-dark", "fresh-bright"),
                            "ctx-impacts with the nuisances of a real second date on both dates: another sun "
                            "(relit by photoclinometry), dust-devil tracks, mosaic seams, haze, resolution",
                            real_nuisance=True),
}

#: Nuisance ranges of the post image (all pairs, changed or not).
NUISANCE = {
    "gain": (0.85, 1.2),
    "offset": (-0.03, 0.03),
    "gamma": (0.8, 1.25),  #: drawn log-uniformly
    "blur": (0.0, 1.0),  #: Gaussian σ, pixels
    "noise": (0.005, 0.02),  #: σ on the 0..1 scale
}
#: Largest fraction of saturated (0 or full-scale) pixels a source window may hold.
MAX_SATURATED = 0.005


@dataclass
class SourceImage:
    """One real image the pairs are cut from, with the craters that can be transplanted."""

    name: str
    image: np.ndarray  #: (rows, cols) float32, 0..1
    craters: np.ndarray  #: (n, 3) x, y, radius in pixels (only those usable as donors)
    full_scale: float  #: the value mapped to 1 (255 for 8-bit images)
    #: where the image's own light comes from, degrees clockwise from the top (estimated from its shading by
    #: :func:`planetcd.craters.sun.estimate_sun_azimuth`); the ``real-nuisance`` relighting starts from it
    sun_azimuth: float | None = None


@dataclass
class PairSpec:
    """Every random choice behind one pair (pixels; the pre window is ``y0:y0+s, x0:x0+s``)."""

    source: str
    y0: int
    x0: int
    dy: float  #: a ground feature at pre pixel (y, x) appears at post pixel (y + dy, x + dx)
    dx: float
    gain: float
    offset: float
    gamma: float
    blur: float
    noise: float
    noise_seed: int
    implant: str = "none"  #: "none", "crater", "fresh-dark", "fresh-bright" or "streaks"
    y: float = float("nan")  #: implant centre in the *post* patch, pixels
    x: float = float("nan")
    radius: float = float("nan")  #: crater rim radius, or streak length / 2
    strength: float = float("nan")  #: blast-zone or streak darkening strength
    donor_x: float = float("nan")  #: where a real crater was cut from (source pixels)
    donor_y: float = float("nan")
    angle: float = float("nan")  #: streak direction, radians
    n_streaks: int = 0


@dataclass
class Benchmark:
    """A generated set: the pairs, what made each, and where each implant shows in post."""

    changeset: ChangeSet
    specs: list[PairSpec]
    footprints: np.ndarray  #: (n, h, w) bool, post pixels the implant can touch (all False when unchanged)
    preset: Preset
    seed: int
    images: tuple[str, ...]
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- sources


def default_shared_dir() -> Path:
    """``$PLANETCD_SHARED``, else ``shared/`` beside the repository (``../shared`` from a checkout)."""
    env = os.environ.get("PLANETCD_SHARED")
    if env:
        return Path(env)
    repo_sibling = Path(__file__).resolve().parents[2].parent / "shared"
    if repo_sibling.is_dir():
        return repo_sibling
    return Path.cwd().parent / "shared"


def _read_gray(path: Path) -> tuple[np.ndarray, float]:
    with open_raster(path) as ds:
        data, _ = read_window(ds, bands=[1])
        dtype = np.dtype(ds.dtypes[0])
    image = data[0]
    if dtype.kind in "ui":
        full = float(np.iinfo(dtype).max)
    else:
        full = float(np.percentile(image, 99.9)) or 1.0
    return (image / full).astype(np.float32), full


def _read_craters(path: Path | None) -> np.ndarray:
    if path is None or not path.is_file():
        return np.zeros((0, 3))
    if path.suffix.lower() == ".xml":
        return read_voc_boxes(path)
    return read_pycda_csv(path)


def load_sources(
    images: list[str] | tuple[str, ...] | None = None,
    shared_dir: str | os.PathLike | None = None,
    allow_training_images: bool = False,
) -> list[SourceImage]:
    """Read the source images (names of :data:`KNOWN_IMAGES` or paths).

    A path may have crater labels beside it (same stem, ``.xml`` VOC boxes or a
    PyCDA ``_labels.csv``/``.csv``); without them its real-crater implants are
    replaced by rendered fresh craters. Training images are refused unless
    ``allow_training_images``.
    """
    names = list(images) if images else list(DEFAULT_TEST_IMAGES)
    shared = Path(shared_dir) if shared_dir is not None else default_shared_dir()
    sources = []
    for name in names:
        if name in TRAINING_IMAGES and not allow_training_images:
            raise InputError(
                f"{name} trains the crater UNet and is never used for test sets; "
                "pass --allow-training-images only to make a training set"
            )
        if name in KNOWN_IMAGES:
            rel_image, rel_labels = KNOWN_IMAGES[name]
            image_path, label_path = shared / rel_image, shared / rel_labels
            if not image_path.is_file():
                raise InputError(f"{image_path}: no such file (set PLANETCD_SHARED to the shared data folder)")
        else:
            image_path = Path(name)
            if not image_path.is_file():
                known = ", ".join(KNOWN_IMAGES)
                raise InputError(f"{name}: not a file nor a known image ({known})")
            label_path = next((p for p in (image_path.with_suffix(".xml"),
                                           image_path.with_name(image_path.stem + "_labels.csv"),
                                           image_path.with_suffix(".csv")) if p.is_file()), None)
            name = image_path.stem
        image, full = _read_gray(image_path)
        craters = _read_craters(label_path)
        keep = (craters[:, 2] >= DONOR_RADIUS[0]) & (craters[:, 2] <= DONOR_RADIUS[1]) if len(craters) else []
        sun = estimate_sun_azimuth(image).azimuth_deg
        sources.append(SourceImage(name, image, craters[keep] if len(craters) else craters, full, sun))
    return sources


# --------------------------------------------------------------------------- drawing


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _margin(max_shift: float) -> int:
    return int(np.ceil(max_shift)) + 6


def _window_ok(image: np.ndarray, y0: int, x0: int, size: int) -> bool:
    window = image[y0 : y0 + size, x0 : x0 + size]
    saturated = np.mean((window <= 0.0) | (window >= 1.0))
    return saturated <= MAX_SATURATED and float(window.std()) > 0.01


def draw_spec(
    rng: np.random.Generator, source: SourceImage, preset: Preset, changed: bool, patch_size: int, max_shift: float
) -> PairSpec:
    """Draw every random choice of one pair (window, shift, nuisances, implant)."""
    s, m = patch_size, _margin(max_shift)
    rows, cols = source.image.shape
    if rows < s + 2 * m or cols < s + 2 * m:
        raise InputError(f"{source.name}: image ({cols}x{rows} px) is too small for {s} px patches with {m} px margins")
    for _ in range(200):
        y0 = int(rng.integers(m, rows - s - m + 1))
        x0 = int(rng.integers(m, cols - s - m + 1))
        if _window_ok(source.image, y0 - m, x0 - m, s + 2 * m):
            break
    else:
        raise InputError(f"{source.name}: no window of {s} px without saturated or flat areas")
    spec = PairSpec(
        source=source.name, y0=y0, x0=x0,
        dy=float(rng.uniform(-max_shift, max_shift)), dx=float(rng.uniform(-max_shift, max_shift)),
        gain=float(rng.uniform(*NUISANCE["gain"])), offset=float(rng.uniform(*NUISANCE["offset"])),
        gamma=_log_uniform(rng, *NUISANCE["gamma"]), blur=float(rng.uniform(*NUISANCE["blur"])),
        noise=float(rng.uniform(*NUISANCE["noise"])), noise_seed=int(rng.integers(2**31)),
    )
    kind = str(rng.choice(preset.implants))
    # Draw the implant even for unchanged pairs, so that the draws stay aligned; keep it only when changed.
    if kind == "streaks":
        half_length = float(rng.uniform(8.0, 25.0))
        extent = half_length + 8
        spec.radius, spec.angle = half_length, float(rng.uniform(0, np.pi))
        spec.n_streaks, spec.strength = int(rng.integers(1, 5)), float(rng.uniform(0.2, 0.45))
    else:
        radius = float(rng.uniform(*preset.crater_radius))
        donors = source.craters
        if len(donors):
            low, high = preset.crater_radius
            donors = donors[(donors[:, 2] >= low) & (donors[:, 2] <= high)]
        if kind == "crater":
            far = _donors_away_from(donors, y0, x0, s, m, source.image.shape)
            if len(far):
                x, y, radius = far[int(rng.integers(len(far)))]
                spec.donor_x, spec.donor_y = float(x), float(y)
            else:
                kind = "fresh-dark"  # no labelled crater to cut: render one
        spec.radius = float(radius)
        spec.strength = float(rng.uniform(0.25, 0.6))
        extent = 1.8 * spec.radius + 2
    # The implant lies in post (with its whole extent when it fits) and its crater (radius, or a streak's
    # half length) on ground that pre's patch shows too: a new crater on ground pre never saw is no
    # observable change. Up to commit ef28b65 only the first condition held; with 40 px shifts on
    # 100 px patches 10-17 % of changed lroc pairs then had their crater's centre outside pre's view.
    spec.y = float(rng.uniform(*_implant_range(s, extent, spec.radius, spec.dy)))
    spec.x = float(rng.uniform(*_implant_range(s, extent, spec.radius, spec.dx)))
    if changed:
        spec.implant = kind
    return spec


def _implant_range(size: int, extent: float, radius: float, shift: float) -> tuple[float, float]:
    """Range of an implant's centre along one axis of the post patch, pixels.

    Inside ``[extent, size - extent]`` (the implant fits in post) and inside
    ``[shift + radius, shift + size - radius]`` (post pixel ``y`` shows the
    ground pre shows at ``y - shift``); when both cannot hold, the second wins
    and the first is relaxed to the patch.
    """
    seen_low, seen_high = shift + radius, shift + size - radius
    low, high = max(extent, seen_low), min(size - extent, seen_high)
    if high > low:
        return low, high
    low, high = max(radius, seen_low), min(size - radius, seen_high)
    if high > low:
        return low, high
    middle = float(np.clip(shift + size / 2, 0, size))
    return middle, middle


def _donors_away_from(craters: np.ndarray, y0: int, x0: int, s: int, m: int, shape: tuple[int, int]) -> np.ndarray:
    """Labelled craters outside the pair's region whose cut-out fits in the image."""
    if not len(craters):
        return craters
    x, y, r = craters.T
    half = np.ceil(1.8 * r) + 2
    cy, cx = np.round(y), np.round(x)  # the cut-out is centred on the rounded centre (_transplant)
    inside_image = (cy - half >= 0) & (cx - half >= 0) & (cy + half + 1 <= shape[0]) & (cx + half + 1 <= shape[1])
    outside_region = (y + half < y0 - m) | (y - half > y0 + s + m) | (x + half < x0 - m) | (x - half > x0 + s + m)
    return craters[inside_image & outside_region]


# --------------------------------------------------------------------------- rendering


def _feather(rows: int, cols: int, cy: float, cx: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Radial distance in radii and the transplant weight (1 to 1.1 r, 0 beyond 1.7 r)."""
    rr, cc = np.mgrid[:rows, :cols]
    rho = np.hypot(rr - cy, cc - cx) / radius
    return rho, np.clip((1.7 - rho) / 0.6, 0.0, 1.0)


def paste_crater(ground: np.ndarray, donor_image: np.ndarray, donor_y: float, donor_x: float, radius: float,
                 gy: float, gx: float, turn_deg: float = 0.0) -> np.ndarray:
    """A copy of ``ground`` with the crater of ``donor_image`` at ``(donor_y, donor_x)`` (pixels; ``radius`` px)
    feathered in at ``(gy, gx)``: weight 1 to 1.1 r, 0 beyond 1.7 r, its brightness matched to the target's on
    the 1.2–1.8 r ring (the cut-out is centred on the rounded centres).

    ``turn_deg``: the donor is first turned about its centre so that its light comes from ``turn_deg`` degrees
    clockwise of its own image's (:func:`turn_light`; a bowl is round, so a turned crater is the crater lit
    from elsewhere).
    """
    half = int(np.ceil(1.8 * radius)) + 2
    dy, dx = int(round(donor_y)), int(round(donor_x))
    donor = donor_image[dy - half : dy + half + 1, dx - half : dx + half + 1].astype(np.float64)
    if abs(turn_deg) > 0.5:
        donor = turn_light(donor, half + (donor_y - dy), half + (donor_x - dx), turn_deg)
    ty, tx = int(round(gy)), int(round(gx))
    target = ground[ty - half : ty + half + 1, tx - half : tx + half + 1]
    size = 2 * half + 1
    rho, alpha = _feather(size, size, half + (donor_y - dy), half + (donor_x - dx), radius)
    ring = (rho >= 1.2) & (rho <= 1.8)
    factor = (target[ring].mean() + 1e-3) / (donor[ring].mean() + 1e-3)
    out = ground.copy()
    out[ty - half : ty + half + 1, tx - half : tx + half + 1] = target * (1 - alpha) + donor * factor * alpha
    return out


def _transplant(ground: np.ndarray, source: SourceImage, spec: PairSpec, gy: float, gx: float,
                turn_deg: float = 0.0) -> np.ndarray:
    """The pair's donor crater pasted into ``ground`` at ``(gy, gx)`` (:func:`paste_crater`); ``turn_deg``: post's
    own sun when the generator relights post."""
    return paste_crater(ground, source.image, spec.donor_y, spec.donor_x, spec.radius, gy, gx, turn_deg)


def turn_light(chip: np.ndarray, cy: float, cx: float, turn_deg: float) -> np.ndarray:
    """``chip`` turned about ``(cy, cx)`` (pixels) so that what was lit from azimuth ``A`` is lit from ``A + turn_deg``
    (degrees clockwise from the top): content turned clockwise by ``turn_deg``; bilinear, edges extended."""
    t = np.deg2rad(turn_deg)
    # output (row, col) reads the input at centre + M (out - centre), M the inverse of the clockwise turn
    # on screen (rows down): a wall that faced the light at A faces it at A + turn
    matrix = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    centre = np.array([cy, cx])
    return ndimage.affine_transform(chip, matrix, centre - matrix @ centre, order=1, mode="nearest")


#: Elevation (degrees) of the sun a fresh crater is shaded by when the date's own is not drawn (every preset but
#: ``real-nuisance``): :func:`planetcd.datasets.synthetic.hillshade`'s default.
FRESH_CRATER_ELEVATION = 35.0


def post_light(spec: PairSpec, source: SourceImage, nuisance: RealNuisance | None) -> tuple[float, float] | None:
    """The sun ``(azimuth, elevation)`` (degrees; azimuth clockwise from the top, light FROM) post's ground shows,
    which a new crater in post must be lit by: with real nuisances the sun post is rendered under
    (:func:`pair_date_nuisances`), else the source's own (its estimate) at :data:`FRESH_CRATER_ELEVATION`;
    None when the source's sun is unknown and post is not relit."""
    if nuisance is not None:
        post = pair_date_nuisances(spec.noise_seed, source.sun_azimuth, nuisance)[1]
        return (post.new_azimuth, post.new_elevation) if post.relight else (post.azimuth, post.elevation)
    if source.sun_azimuth is None:
        return None
    return float(source.sun_azimuth), FRESH_CRATER_ELEVATION


def _streaks(ground: np.ndarray, spec: PairSpec, gy: float, gx: float, rng: np.random.Generator) -> np.ndarray:
    """Darken ``n_streaks`` parallel, tapered, narrow streaks (recurring slope lineae) centred near (gy, gx)."""
    rows, cols = ground.shape
    rr, cc = np.mgrid[:rows, :cols].astype(np.float64)
    along = np.array([np.sin(spec.angle), np.cos(spec.angle)])
    across = np.array([along[1], -along[0]])
    darkening = np.zeros_like(ground, dtype=np.float64)
    offsets = (np.arange(spec.n_streaks) - (spec.n_streaks - 1) / 2) * rng.uniform(4.0, 9.0)
    for k, offset in enumerate(offsets):
        length = spec.radius * 2 * rng.uniform(0.6, 1.0)
        width = rng.uniform(1.0, 2.5)
        start = -spec.radius + rng.uniform(0, 2 * spec.radius - length + 1e-6)
        u = (rr - gy) * along[0] + (cc - gx) * along[1] - start
        v = (rr - gy) * across[0] + (cc - gx) * across[1] - offset
        head = np.clip(u / 3.0, 0, 1)  # sharp source at the top of the slope
        tail = np.clip((length - u) / (0.5 * length), 0, 1)  # fading downslope
        darkening = np.maximum(darkening, head * tail * np.exp(-((v / width) ** 2)))
    return ground * (1.0 - spec.strength * darkening)


#: Offsets from a pair's ``noise_seed`` of the generator's draws of the real nuisances: pre's, post's, and
#: the elevation of the source's sun (:func:`render_pair`, :func:`pair_date_nuisances`).
PRE_NUISANCE_SEED, POST_NUISANCE_SEED, SUN_ELEVATION_SEED = 2, 3, 4


def date_sun(noise_seed: int, source_sun_azimuth: float | None, nuisance: RealNuisance
             ) -> tuple[float, float] | None:
    """The sun ``(azimuth, elevation)`` (degrees) both dates of a pair are relit from: the source's own azimuth
    and an elevation drawn from ``nuisance.sun_elevation``; None when the source's sun is unknown."""
    if source_sun_azimuth is None:
        return None
    rng = np.random.default_rng(noise_seed + SUN_ELEVATION_SEED)
    return float(source_sun_azimuth), float(rng.uniform(*nuisance.sun_elevation))


def pair_date_nuisances(noise_seed: int, source_sun_azimuth: float | None, nuisance: RealNuisance = REAL_NUISANCE
                        ) -> tuple[DateNuisances, DateNuisances]:
    """What each date of a generated pair drew (suns, which nuisances), replayed from its ``noise_seed``
    (``pairs.csv``) and its source's sun azimuth (``benchmark.json``): pre's and post's
    :class:`~planetcd.change.nuisance.DateNuisances`, as :func:`render_pair` drew them."""
    sun = date_sun(noise_seed, source_sun_azimuth, nuisance)
    return (draw_date_nuisances(np.random.default_rng(noise_seed + PRE_NUISANCE_SEED), nuisance, sun),
            draw_date_nuisances(np.random.default_rng(noise_seed + POST_NUISANCE_SEED), nuisance, sun))


def render_pair(
    spec: PairSpec, source: SourceImage, patch_size: int, max_shift: float, implant: bool = True,
    nuisance=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make one pair from its spec.

    Returns
    -------
    pre, post : ndarray, float32, shape (patch_size, patch_size)
        On the source's ``0..1`` scale (pre is the source window exactly).
    footprint : ndarray of bool
        Post pixels the implant can touch (its extent moved by the shift,
        widened by the blur and the interpolation kernel).

    With ``nuisance`` (a :class:`planetcd.change.nuisance.RealNuisance`), each date's ground first gets
    its own real nuisances (seeds ``noise_seed + 2`` for pre, ``+ 3`` for post), and the implant is added
    to post's as a difference, so a changed pair and its unchanged twin still differ only in the implant.
    """
    s, m = patch_size, _margin(max_shift)
    region = source.image[spec.y0 - m : spec.y0 + s + m, spec.x0 - m : spec.x0 + s + m].astype(np.float64)
    ground = region
    footprint = np.zeros((s, s), bool)
    if implant and spec.implant != "none":
        # The implant is placed at (y, x) of the post patch: on the ground at (y - dy, x - dx) of the region.
        # A new crater is lit by post's sun, as the ground around it (fresh craters were shaded from a fixed
        # 300° before the twenty-fourth session, whatever the image's sun, and transplants kept the source's).
        gy, gx = m + spec.y - spec.dy, m + spec.x - spec.dx
        light = post_light(spec, source, nuisance)
        if spec.implant == "crater":
            turn = 0.0
            if light is not None and source.sun_azimuth is not None:
                turn = float(angle_difference(light[0], source.sun_azimuth))
            ground = _transplant(region, source, spec, gy, gx, turn)
        elif spec.implant in ("fresh-dark", "fresh-bright"):
            # Add the rendered change as a difference, so pixels it does not touch stay bit-identical.
            region32 = region.astype(np.float32)
            sun = {} if light is None else {"sun_azimuth_deg": light[0], "sun_elevation_deg": light[1]}
            rendered = add_fresh_crater(region32, gy, gx, spec.radius, halo=spec.implant.split("-")[1],
                                        halo_strength=spec.strength, **sun)
            ground = region + (rendered.astype(np.float64) - region32.astype(np.float64))
        elif spec.implant == "streaks":
            ground = _streaks(region, spec, gy, gx, np.random.default_rng(spec.noise_seed + 1))
        else:
            raise InputError(f"unknown implant {spec.implant!r}")
        touched = np.abs(ground - region) > 1e-9
        moved = ndimage.shift(touched.astype(np.float32), (spec.dy, spec.dx), order=1, mode="constant") > 0
        grow = int(np.ceil(3 * spec.blur)) + 4  # blur kernel + cubic-spline interpolation support
        footprint = ndimage.binary_dilation(moved, iterations=grow)[m : m + s, m : m + s]
    pre_region = region
    if nuisance is not None:
        # Both dates are relit from the ground's one height field, under the sun the source image really has
        # (its estimate) and one elevation for it (seed noise_seed + SUN_ELEVATION_SEED): each date's sun is then within
        # ± nuisance.sun_azimuth_change of it. Without a source sun, each date draws its own old sun.
        sun = date_sun(spec.noise_seed, source.sun_azimuth, nuisance)
        pre_region = real_nuisance(region, np.random.default_rng(spec.noise_seed + PRE_NUISANCE_SEED), nuisance,
                                   sun).astype(np.float64)
        post_region = real_nuisance(region, np.random.default_rng(spec.noise_seed + POST_NUISANCE_SEED), nuisance,
                                    sun).astype(np.float64)
        ground = post_region + (ground - region)
    seen = ndimage.shift(ground, (spec.dy, spec.dx), order=3, mode="nearest")
    if spec.blur > 0:
        seen = ndimage.gaussian_filter(seen, spec.blur, mode="nearest")
    post = seen[m : m + s, m : m + s]
    post = spec.gain * np.clip(post, 0.0, 1.0) ** spec.gamma + spec.offset
    post = post + np.random.default_rng(spec.noise_seed).normal(0.0, spec.noise, post.shape)
    pre = pre_region[m : m + s, m : m + s]
    return pre.astype(np.float32), np.clip(post, 0.0, 1.0).astype(np.float32), footprint


# --------------------------------------------------------------------------- sets


def make_benchmark(
    preset: str | Preset = "ctx-impacts",
    n_pairs: int = 200,
    seed: int = 0,
    images: list[str] | tuple[str, ...] | None = None,
    *,
    shared_dir: str | os.PathLike | None = None,
    sources: list[SourceImage] | None = None,
    changed_fraction: float = 0.5,
    patch_size: int | None = None,
    max_shift: float | None = None,
    implants: bool = True,
    allow_training_images: bool = False,
    progress: bool = False,
) -> Benchmark:
    """Generate a labelled set in memory.

    Parameters
    ----------
    preset : str or Preset
        ``ctx-impacts``, ``lroc``, ``rsl``, ``small-craters`` or ``real-nuisance`` (see :data:`PRESETS`).
    n_pairs : int
    seed : int
        The same seed (and sources) gives the same pairs, to the byte.
    images : list of str, optional
        Source images (names of :data:`KNOWN_IMAGES` or paths); default
        :data:`DEFAULT_TEST_IMAGES`. Training images are refused.
    sources : list of SourceImage, optional
        Already loaded sources (``images`` is then ignored).
    changed_fraction : float
        Fraction of changed pairs (label 1).
    patch_size, max_shift : optional
        Override the preset's.
    implants : bool
        False gives every changed pair's unchanged twin (labels kept).
    allow_training_images : bool
        Allow MC11E-A..G (sets that train something only).
    progress : bool
        Show a progress bar of the pairs made on stderr.

    Returns
    -------
    Benchmark
        Pixel values are 8-bit (``uint8``) in the change set, as the sources are.
    """
    preset = PRESETS[preset] if isinstance(preset, str) and preset in PRESETS else preset
    if not isinstance(preset, Preset):
        raise InputError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if n_pairs < 1:
        raise InputError("n_pairs must be at least 1")
    if not 0.0 <= changed_fraction <= 1.0:
        raise InputError("changed_fraction must be between 0 and 1")
    s = int(patch_size or preset.patch_size)
    shift = float(preset.max_shift if max_shift is None else max_shift)
    if sources is None:
        sources = load_sources(images, shared_dir, allow_training_images)
    margin = _margin(shift)
    for source in sources:  # every source, not only those drawn: the same options never work for some n_pairs only
        rows, cols = source.image.shape
        if rows < s + 2 * margin or cols < s + 2 * margin:
            raise InputError(f"{source.name}: image ({cols}x{rows} px) is too small for {s} px patches with "
                             f"{margin} px margins")
    master = np.random.default_rng(seed)
    n_changed = int(round(changed_fraction * n_pairs))
    labels = master.permutation(np.r_[np.ones(n_changed, np.int64), np.zeros(n_pairs - n_changed, np.int64)])
    which = master.integers(len(sources), size=n_pairs)
    specs, pres, posts, footprints = [], [], [], []
    nuisance = REAL_NUISANCE if preset.real_nuisance else None
    from tqdm.auto import tqdm

    for i in tqdm(range(n_pairs), disable=not progress, desc="pairs", unit="pair", dynamic_ncols=True):
        source = sources[int(which[i])]
        spec = draw_spec(np.random.default_rng([seed, i]), source, preset, bool(labels[i]), s, shift)
        pre, post, footprint = render_pair(spec, source, s, shift, implant=implants, nuisance=nuisance)
        specs.append(spec)
        pres.append(_to_uint8(pre))
        posts.append(_to_uint8(post))
        footprints.append(footprint)
    width = len(str(n_pairs - 1))
    ids = [f"{preset.name}-{i:0{width}d}" for i in range(n_pairs)]
    changeset = ChangeSet(ids, np.stack(pres)[:, None], np.stack(posts)[:, None], labels, ["test"] * n_pairs,
                          f"{preset.name}-seed{seed}")
    params = {"preset": preset.name, "n_pairs": n_pairs, "seed": seed, "images": [src.name for src in sources],
              "patch_size": s, "max_shift": shift, "changed_fraction": changed_fraction, "implants": implants,
              "nuisance": {k: list(v) for k, v in NUISANCE.items()}, "crater_radius_px": list(preset.crater_radius),
              "real_nuisance": preset.real_nuisance,
              # how new craters are lit (post_light); sets made before 2026-12-03 lack the key: fixed 300° then
              "implant_light": "post's sun",
              "source_sun_azimuth_deg": {src.name: (None if src.sun_azimuth is None else round(src.sun_azimuth, 2))
                                         for src in sources}}
    return Benchmark(changeset, specs, np.stack(footprints), preset, seed, tuple(src.name for src in sources), params)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def specs_csv(benchmark: Benchmark) -> str:
    """One row per pair: its id, label and every draw that made it (``pairs.csv``)."""
    out = io.StringIO()
    fields = list(asdict(benchmark.specs[0]))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "label", *fields])
    for pair_id, label, spec in zip(benchmark.changeset.ids, benchmark.changeset.labels, benchmark.specs):
        row = asdict(spec)
        writer.writerow([pair_id, int(label), *(_fmt(row[f]) for f in fields)])
    return out.getvalue()


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return str(value)


def write_benchmark(outdir: str | os.PathLike, benchmark: Benchmark, fmt: str = "png", overwrite: bool = False) -> Path:
    """Write a generated set in the canonical layout, with ``pairs.csv`` (every draw) and ``benchmark.json``."""
    meta = json.dumps({"generator": "planetcd.datasets.benchmark", **benchmark.params}, indent=2, sort_keys=True)
    return write_changeset(outdir, benchmark.changeset, fmt=fmt, overwrite=overwrite,
                           extra_files={"pairs.csv": specs_csv(benchmark), "benchmark.json": meta + "\n"})
