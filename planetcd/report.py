"""What monitor hands over: :class:`MonitorResult` and its writers (tables, chips, ``report.html``, ``monitor.json``).

:meth:`MonitorResult.write` writes every output of a pair; :func:`is_complete`
and :func:`summary_row` read a written one back (batch mode). ``report.html``
is one page to vet typed candidates (new craters, bare change) one by one.

Everything is inside the file: the candidate table as JSON, every chip
(pre | post | difference) and an overview of the pre image as base64 PNGs,
and a small script that renders the candidate list, shows one candidate at a
time, marks the candidates on the overview, and records accept / reject
decisions (buttons or keys ``a`` / ``r``, ``←`` / ``→`` or ``j`` / ``k`` to
move) in the browser's local storage, downloadable as CSV. No network access
and no external files are needed: the page can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from .jsonio import json_text
from .raster import atomic_output, check_writable, overview_shape, read_window, removed_on_failure

if TYPE_CHECKING:
    from .change.detect import ChangeResult
    from .craters.catalog import Catalog

#: Files of a finished run (``monitor.json`` is written last: its presence marks a complete output).
OUTPUTS = ("new_craters.csv", "new_craters.gpkg", "pre_craters.csv", "post_craters.csv", "report.html", "monitor.json")
CHANGE_DIR = "change"
CHIP_DIR = "chips"
DONE_MARKER = "monitor.json"
#: Columns of ``new_craters.csv`` after the catalog's own (map, lon/lat, diameter) columns.
SCORE_COLUMNS = ("score", "change_ratio", "confidence", "pre_support", "change_peak", "patch_row_off",
                 "patch_col_off")

#: Columns of the candidate table copied into the page (when present).
PAGE_COLUMNS = ("rank", "type", "x_px", "y_px", "radius_px", "x_map", "y_map", "lon_deg", "lat_deg", "diameter_km",
                "score", "change_ratio", "confidence", "pre_support")


# ----------------------------------------------------------------------------- the result of monitor


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
        ``score, change_ratio, confidence, pre_support, change_peak, patch_row_off, patch_col_off`` per candidate
        (``pre_support`` NaN for ``change`` candidates, ``change_peak`` NaN for whole-image ``new_crater`` ones).
    change : ChangeResult
        What :func:`detect` found (written to ``OUTDIR/change``).
    pre_craters, post_craters : Catalog
        Every crater segmented in pre and in post (post on pre's grid).
    chips : list of ndarray, uint8, shape (3, s, s)
        Pre | post | difference around each candidate.
    types : ndarray of str, shape (n,), optional
        Each candidate's type: ``new_crater`` (a new crater segmented in post) or ``change``
        (a changed patch located at its change peak, no crater segmented); all ``new_crater`` when None.
    overview : bytes
        PNG of pre, decimated; ``overview_shape`` gives its ``(rows, cols)``.
    overview_post : bytes, optional
        The same of post on pre's grid (the page switches between the two).
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
    types: np.ndarray | None = None
    overview_post: bytes | None = None

    def __len__(self) -> int:
        return len(self.candidates)

    def table(self) -> dict[str, np.ndarray]:
        """The ranked candidate table: ``rank``, ``type``, the catalog's columns, then the scores."""
        cat = self.candidates
        types = self.types if self.types is not None else np.full(len(self), "new_crater", dtype=object)
        table = {"rank": np.arange(1, len(self) + 1), "type": np.asarray(types, dtype=object), "x_px": cat.x_px,
                 "y_px": cat.y_px, "radius_px": cat.radius_px}
        table.update(cat.table())  # confidence, map and planetocentric coordinates, diameter
        for name in SCORE_COLUMNS:
            if name in self.scores:
                table[name] = self.scores[name]
        return table

    def write(self, outdir: str | os.PathLike, overwrite: bool = False) -> list[Path]:
        """Write every output into ``outdir``; ``monitor.json`` last, so its presence marks a complete run.

        Raises :class:`~planetcd.errors.OutputExistsError` before writing
        anything when an output exists and ``overwrite`` is false. Each file
        is written whole or not at all; when the writing fails or is
        interrupted (Ctrl-C), the files and folders this call created are
        removed again, so that the same command works again without
        ``overwrite`` (files it was replacing stay, without ``monitor.json``).
        """
        from .change.outputs import output_names

        outdir = Path(outdir)
        chip_dir = outdir / CHIP_DIR
        chip_names = [chip_dir / f"candidate_{k:04d}.png" for k in range(1, len(self) + 1)]
        existing_chips = sorted(chip_dir.glob("candidate_*.png")) if chip_dir.is_dir() else []
        change_names = [outdir / CHANGE_DIR / n for n in output_names(self.change.pixelwise is not None)]
        check_writable([outdir / n for n in OUTPUTS] + change_names + existing_chips, overwrite)
        targets = [outdir / n for n in OUTPUTS] + change_names + chip_names
        with removed_on_failure(targets, [outdir, outdir / CHANGE_DIR, chip_dir]):
            return self._write(outdir, chip_names, existing_chips, overwrite)

    def _write(self, outdir: Path, chip_names: list[Path], existing_chips: list[Path], overwrite: bool) -> list[Path]:
        outdir.mkdir(parents=True, exist_ok=True)
        chip_dir = outdir / CHIP_DIR
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
        write_json(marker, self.record())  # standard JSON: a NaN score column is null
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
        from .runtime import library_versions

        table = self.table()
        top = min(10, len(self))
        return {
            "planetcd_version": __version__,
            "versions": library_versions(),
            "parameters": self.params,
            "image_shape": list(self.shape),
            # the grid every pixel column refers to (pre's), as change/run.json records it
            "crs": _crs_wkt(self.candidates.crs),
            "transform": list(self.candidates.transform)[:6] if self.candidates.transform is not None else None,
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


# ----------------------------------------------------------------------------- a written result, read back


def _crs_wkt(crs) -> str | None:
    if crs is None:
        return None
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


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


# ----------------------------------------------------------------------------- chips and overview


def gray8(data: np.ndarray, stats, band: int = 0) -> np.ndarray:
    """Raw intensities → uint8 0..255 with an image's robust range (``stats``: :class:`planetcd.raster.IntensityStats`)."""
    low, high = float(stats.low[band]), float(stats.high[band])
    scaled = (data - low) / (high - low)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def chip_panels(pre_ds, post_reader, crater: np.ndarray, pre_stats, post_stats, min_size: int = 64) -> np.ndarray:
    """Pre, registered post and their difference around one crater.

    Parameters
    ----------
    pre_ds : rasterio dataset
    post_reader : planetcd.change.register.AlignedReader
        Post on pre's grid.
    crater : ndarray, shape (>=3,)
        ``x_px, y_px, radius_px`` on pre's grid.
    pre_stats, post_stats : IntensityStats
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
    pre8 = gray8(pre[0], pre_stats)
    post8 = gray8(post[0], post_stats)
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


def overview_png(pre_ds, stats, max_pixels: int = 640_000) -> tuple[bytes, tuple[int, int]]:
    """A decimated gray PNG of pre (bytes) and its ``(rows, cols)``."""
    from PIL import Image

    shape = overview_shape(pre_ds.height, pre_ds.width, max_pixels)
    data, valid = read_window(pre_ds, bands=[1], out_shape=shape)
    gray = gray8(data[0], stats)
    gray[~valid] = 0
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), shape


# ----------------------------------------------------------------------------- the page


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_json(path: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` as :func:`json_text`, atomically."""
    text = json_text(record)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_value(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else round(float(value), 8)
    return value


def craters_where(catalogues: str) -> str:
    """What follows a count of pre / post craters: ``" near the changes"`` when ``monitor`` segmented only the
    changed neighbourhoods (``catalogues="near-change"``), nothing when it segmented both whole images."""
    return "" if catalogues == "all" else " near the changes"


def page_data(result) -> dict:
    """What the page shows: candidates (with their chips) and the overview, as plain JSON types."""
    table = result.table()
    names = [n for n in PAGE_COLUMNS if n in table]
    candidates = []
    for k in range(len(result)):
        row = {n: _json_value(table[n][k]) for n in names}
        row["chip"] = _png_base64(chip_image(result.chips[k], result.candidates.pixels[k])) if k < len(result.chips) else None
        candidates.append(row)
    dy, dx = result.change.displacement
    return {
        "title": f"{Path(str(result.params.get('pre', 'pre'))).name} → {Path(str(result.params.get('post', 'post'))).name}",
        "pre": str(result.params.get("pre", "")),
        "post": str(result.params.get("post", "")),
        "shape": list(result.shape),
        "overview": base64.b64encode(result.overview).decode("ascii"),
        "overview_post": base64.b64encode(result.overview_post).decode("ascii") if result.overview_post else None,
        "overview_shape": list(result.overview_shape),
        "displacement": [round(float(dy), 3), round(float(dx), 3)],
        "tau": _json_value(result.change.tau),
        "n_changed": int(result.change.changed.sum()),
        "changed_patches": result.change.patches[result.change.changed].tolist(),
        "n_pre": len(result.pre_craters),
        "n_post": len(result.post_craters),
        "craters_where": craters_where(result.params.get("catalogues", "all")),
        "columns": names,
        "candidates": candidates,
        "score_rule": result.params.get("score", ""),
    }


def render_report(data: dict) -> str:
    """The HTML text of the vetting page for :func:`page_data`'s dict."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _TEMPLATE.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)


def write_report(result, path: str | os.PathLike) -> Path:
    """Write ``report.html`` for a :class:`~planetcd.monitor.MonitorResult` (atomically)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(render_report(page_data(result)), encoding="utf-8")
    return path


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>New craters: __TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2430; background: #f4f5f7; }
  header { background: #1d2430; color: #fff; padding: 10px 18px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { color: #c6ccd6; font-size: 13px; }
  main { display: grid; grid-template-columns: minmax(320px, 1fr) minmax(420px, 1.3fr); gap: 16px; padding: 16px; }
  section { background: #fff; border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.12); padding: 12px 14px; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  #overview-wrap { position: relative; width: 100%; }
  #overview-wrap img { width: 100%; display: block; image-rendering: auto; }
  #overview-wrap svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
  svg circle { fill: none; stroke: #ffcc00; stroke-width: 2; vector-effect: non-scaling-stroke; cursor: pointer; }
  svg circle.accepted { stroke: #2fbf71; } svg circle.rejected { stroke: #e5484d; }
  svg circle.current { stroke: #36a3ff; stroke-width: 4; }
  svg rect { fill: rgba(229, 72, 77, .12); stroke: #e5484d; stroke-width: 1; stroke-dasharray: 4 3; vector-effect: non-scaling-stroke; }
  svg text { fill: #ffcc00; font: bold 11px sans-serif; paint-order: stroke; stroke: #000; stroke-width: 2px; vector-effect: non-scaling-stroke; }
  #chip { max-width: 100%; border: 1px solid #ccd; display: block; margin: 6px 0; }
  .labels { display: grid; grid-template-columns: repeat(3, 1fr); text-align: center; color: #556; font-size: 12px; }
  .buttons { display: flex; gap: 8px; margin: 10px 0; flex-wrap: wrap; }
  button { font: inherit; padding: 6px 14px; border-radius: 4px; border: 1px solid #aab; background: #fff; cursor: pointer; }
  button.accept { background: #2fbf71; border-color: #2fbf71; color: #fff; }
  button.reject { background: #e5484d; border-color: #e5484d; color: #fff; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
  dt { color: #556; } dd { margin: 0; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; font-size: 12.5px; font-variant-numeric: tabular-nums; }
  th, td { padding: 3px 6px; border-bottom: 1px solid #e3e5ea; text-align: right; }
  th { position: sticky; top: 0; background: #eef0f4; }
  tr.candidate { cursor: pointer; } tr.candidate:hover { background: #f0f6ff; }
  tr.current { background: #dcebff !important; }
  td.status-accepted { color: #1a8f50; font-weight: 600; } td.status-rejected { color: #c62f34; font-weight: 600; }
  #list-wrap { max-height: 360px; overflow: auto; }
  .keys { color: #667; font-size: 12px; }
  .empty { color: #667; font-style: italic; }
  .hidden { display: none; }
  button.on { background: #1d2430; color: #fff; }
</style>
</head>
<body>
<header><h1>New-impact candidates</h1><span class="meta" id="meta"></span></header>
<main>
  <section>
    <h2>Overview (<span id="ov-name">pre</span>) — <span id="count"></span></h2>
    <div class="buttons">
      <button id="show-pre" title="overview of pre (p)">pre</button>
      <button id="show-post" title="overview of post on pre's grid (o)">post</button>
      <label>type <select id="type-filter"><option value="">all</option></select></label>
    </div>
    <div id="overview-wrap"><img id="overview" alt="pre image overview"><svg id="marks" preserveAspectRatio="none"></svg></div>
    <p class="keys">Circles: candidates (yellow; green accepted, red rejected, blue current). Dashed red boxes: changed patches. Click a circle or a row to open a candidate.</p>
  </section>
  <section id="vet">
    <h2 id="cand-title">Candidate</h2>
    <div id="cand-body"></div>
    <div class="buttons">
      <button id="prev" title="previous (← or k)">← previous</button>
      <button id="accept" class="accept" title="accept (a)">accept (a)</button>
      <button id="reject" class="reject" title="reject (r)">reject (r)</button>
      <button id="clear" title="undecided (u)">undecided (u)</button>
      <button id="next" title="next (→ or j)">next →</button>
      <button id="download" title="decisions as CSV">download decisions (CSV)</button>
    </div>
    <p class="keys">Keys: a accept · r reject · u undecided · → / j next · ← / k previous. Decisions stay in this browser until downloaded.</p>
  </section>
  <section style="grid-column: 1 / -1">
    <h2>All candidates, ranked</h2>
    <div id="list-wrap"><table id="list"><thead></thead><tbody></tbody></table></div>
  </section>
</main>
<script id="report-data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const STORE = "planetcd-vet:" + DATA.pre + "|" + DATA.post;
let decisions = {};
try { decisions = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch (e) { decisions = {}; }
let current = 0;
let typeFilter = "";
const LABELS = {rank: "rank", type: "type", x_px: "x px", y_px: "y px", radius_px: "radius px", x_map: "x map", y_map: "y map",
  lon_deg: "lon °E", lat_deg: "lat °", diameter_km: "diameter m", score: "score", change_ratio: "ρ/τ",
  confidence: "confidence", pre_support: "pre support"};
function fmt(col, v) {
  if (v === null || v === undefined) return "–";
  if (col === "rank" || typeof v === "string") return String(v);
  if (col === "diameter_km") return (v * 1000).toFixed(1);
  if (col === "lon_deg" || col === "lat_deg") return v.toFixed(5);
  if (col === "x_map" || col === "y_map") return v.toFixed(1);
  if (col.endsWith("_px")) return v.toFixed(1);
  return v.toFixed(3);
}
function save() { try { localStorage.setItem(STORE, JSON.stringify(decisions)); } catch (e) {} }
function status(c) { return decisions[c.rank] || ""; }
function buildList() {
  const head = document.querySelector("#list thead");
  const cols = DATA.columns;
  head.innerHTML = "<tr>" + cols.map(c => "<th>" + (LABELS[c] || c) + "</th>").join("") + "<th>decision</th></tr>";
  const body = document.querySelector("#list tbody");
  body.innerHTML = "";
  DATA.candidates.forEach((c, i) => {
    const tr = document.createElement("tr");
    tr.className = "candidate";
    tr.dataset.rank = c.rank;
    tr.dataset.type = c.type || "";
    tr.innerHTML = cols.map(col => "<td>" + fmt(col, c[col]) + "</td>").join("") +
      '<td class="status-' + status(c) + '">' + (status(c) || "–") + "</td>";
    tr.addEventListener("click", () => show(i));
    body.appendChild(tr);
  });
}
function buildMarks() {
  const svg = document.getElementById("marks");
  const [h, w] = DATA.shape;
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.innerHTML = "";
  DATA.changed_patches.forEach(([r, c, ph, pw]) => {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", c); rect.setAttribute("y", r); rect.setAttribute("width", pw); rect.setAttribute("height", ph);
    svg.appendChild(rect);
  });
  DATA.candidates.forEach((c, i) => {
    const r = Math.max(c.radius_px * 1.8, w / 120);
    const circle = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    circle.setAttribute("cx", c.x_px + 0.5); circle.setAttribute("cy", c.y_px + 0.5); circle.setAttribute("r", r);
    circle.dataset.rank = c.rank;
    circle.dataset.type = c.type || "";
    circle.addEventListener("click", () => show(i));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = "#" + c.rank + " " + (c.type || "") + " score " + c.score.toFixed(3);
    circle.appendChild(title);
    svg.appendChild(circle);
    const text = document.createElementNS("http://www.w3.org/2000/svg", "text");
    text.setAttribute("x", c.x_px + r + w / 300); text.setAttribute("y", c.y_px - r);
    text.setAttribute("font-size", Math.max(w / 60, 10));
    text.textContent = c.rank;
    text.dataset.type = c.type || "";
    svg.appendChild(text);
  });
}
function visible(c) { return !typeFilter || c.type === typeFilter; }
function refresh() {
  document.querySelectorAll("#list tbody tr").forEach((tr, i) => {
    const c = DATA.candidates[i];
    tr.classList.toggle("current", i === current);
    tr.classList.toggle("hidden", !visible(c));
    const cell = tr.lastElementChild;
    cell.className = "status-" + status(c);
    cell.textContent = status(c) || "–";
  });
  document.querySelectorAll("#marks circle").forEach((el, i) => {
    const s = status(DATA.candidates[i]);
    el.setAttribute("class", (s || "") + (i === current ? " current" : "") + (visible(DATA.candidates[i]) ? "" : " hidden"));
  });
  document.querySelectorAll("#marks text").forEach(el => el.classList.toggle("hidden", !!typeFilter && el.dataset.type !== typeFilter));
  const done = Object.keys(decisions).length;
  const shown = DATA.candidates.filter(visible).length;
  document.getElementById("count").textContent = DATA.candidates.length + " candidates, " + done + " vetted" +
    (typeFilter ? ", " + shown + " shown (" + typeFilter + ")" : "");
}
function show(i) {
  const n = DATA.candidates.length;
  const body = document.getElementById("cand-body");
  if (n === 0) {
    document.getElementById("cand-title").textContent = "No candidates";
    body.innerHTML = '<p class="empty">No post crater without a pre crater lies in or next to a changed patch.</p>';
    refresh();
    return;
  }
  const step = i < current ? -1 : 1;
  i = (i + n) % n;
  for (let k = 0; k < n && !visible(DATA.candidates[i]); k++) i = (i + step + n) % n;  // skip filtered-out types
  current = i;
  const c = DATA.candidates[current];
  document.getElementById("cand-title").textContent = "Candidate #" + c.rank + " of " + n + (status(c) ? " — " + status(c) : "");
  const rows = DATA.columns.filter(col => col !== "rank")
    .map(col => "<dt>" + (LABELS[col] || col) + "</dt><dd>" + fmt(col, c[col]) + "</dd>").join("");
  body.innerHTML = (c.chip ? '<img id="chip" alt="pre | post | difference" src="data:image/png;base64,' + c.chip + '">' : "") +
    '<div class="labels"><span>pre</span><span>post (registered)</span><span>post − pre</span></div>' +
    "<dl>" + rows + "</dl>";
  refresh();
  const row = document.querySelector('#list tbody tr[data-rank="' + c.rank + '"]');
  if (row) row.scrollIntoView({block: "nearest"});
}
function decide(value) {
  const c = DATA.candidates[current];
  if (!c) return;
  if (value) decisions[c.rank] = value; else delete decisions[c.rank];
  save();
  if (value) show(current + 1); else show(current);
}
function download() {
  const cols = DATA.columns.filter(c => c !== "rank");
  const lines = [["rank", ...cols, "decision"].join(",")];
  DATA.candidates.forEach(c => lines.push([c.rank, ...cols.map(col => c[col] === null ? "" : c[col]), status(c)].join(",")));
  const blob = new Blob([lines.join("\n") + "\n"], {type: "text/csv"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "vetted_new_craters.csv";
  document.body.appendChild(a); a.click(); a.remove();
}
document.getElementById("meta").textContent = DATA.title + " · " + DATA.shape[1] + "×" + DATA.shape[0] + " px · shift dy=" +
  DATA.displacement[0] + " dx=" + DATA.displacement[1] + " px · " + DATA.n_changed + " changed patches · " +
  DATA.n_pre + " pre / " + DATA.n_post + " post craters" + (DATA.craters_where || "") + " · score = " + DATA.score_rule;
function showOverview(which) {
  const data = which === "post" && DATA.overview_post ? DATA.overview_post : DATA.overview;
  const name = data === DATA.overview ? "pre" : "post";
  document.getElementById("overview").src = "data:image/png;base64," + data;
  document.getElementById("ov-name").textContent = name;
  document.getElementById("show-pre").classList.toggle("on", name === "pre");
  document.getElementById("show-post").classList.toggle("on", name === "post");
}
showOverview("pre");
if (!DATA.overview_post) document.getElementById("show-post").disabled = true;
document.getElementById("show-pre").onclick = () => showOverview("pre");
document.getElementById("show-post").onclick = () => showOverview("post");
const filterEl = document.getElementById("type-filter");
[...new Set(DATA.candidates.map(c => c.type).filter(t => t))].forEach(t => {
  const opt = document.createElement("option");
  opt.value = t; opt.textContent = t + " (" + DATA.candidates.filter(c => c.type === t).length + ")";
  filterEl.appendChild(opt);
});
function setFilter(value) {
  typeFilter = value;
  filterEl.value = value;
  const first = DATA.candidates.findIndex(visible);
  show(first >= 0 ? first : 0);
}
filterEl.onchange = () => setFilter(filterEl.value);
// the filter can be set from the address too (report.html#type=change)
const hashType = (location.hash.match(/type=([a-z_]+)/) || [])[1];
document.getElementById("prev").onclick = () => show(current - 1);
document.getElementById("next").onclick = () => show(current + 1);
document.getElementById("accept").onclick = () => decide("accepted");
document.getElementById("reject").onclick = () => decide("rejected");
document.getElementById("clear").onclick = () => decide("");
document.getElementById("download").onclick = download;
document.addEventListener("keydown", ev => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (k === "ArrowRight" || k === "j") show(current + 1);
  else if (k === "ArrowLeft" || k === "k") show(current - 1);
  else if (k === "a") decide("accepted");
  else if (k === "r") decide("rejected");
  else if (k === "u") decide("");
  else if (k === "p") showOverview("pre");
  else if (k === "o") showOverview("post");
  else return;
  ev.preventDefault();
});
buildList();
buildMarks();
if (hashType && DATA.candidates.some(c => c.type === hashType)) setFilter(hashType); else show(0);
</script>
</body>
</html>
"""
