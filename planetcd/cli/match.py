"""``planetcd match``: score detected craters against true craters."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import click

from ..errors import InputError
from .options import common_options, overwrite_opt, setup_logging

log = logging.getLogger("planetcd.match")

CATALOG_SUFFIXES = (".csv", ".gpkg", ".xml", ".scc")


def _catalog_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in CATALOG_SUFFIXES and path.is_file():
            stem = path.stem[: -len("_labels")] if path.stem.endswith("_labels") else path.stem
            files.setdefault(stem, path)
    return files


def _pairs(detections: Path, truth: Path) -> list[tuple[str, Path, Path]]:
    """(name, detection file, truth file) pairs: two files, or two folders paired by file stem."""
    if detections.is_dir() != truth.is_dir():
        raise InputError("DETECTIONS and TRUTH must both be files or both be folders")
    if not detections.is_dir():
        return [(detections.stem, detections, truth)]
    det_files, truth_files = _catalog_files(detections), _catalog_files(truth)
    common = sorted(set(det_files) & set(truth_files))
    if not common:
        raise InputError(f"no file names in common between {detections} and {truth}")
    for stem in sorted(set(truth_files) - set(det_files)):
        log.warning("%s: no detections file; skipped", stem)
    return [(stem, det_files[stem], truth_files[stem]) for stem in common]


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(results, pooled, unit: str) -> str:
    lines = [f"{'image':<24} {'detected':>8} {'truth':>7} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>7} {'F1':>6}"]
    rows = list(results) + ([pooled] if len(results) > 1 else [])
    for r in rows:
        lines.append(
            f"{r.name[:24]:<24} {r.n_detected:>8d} {r.n_truth:>7d} {r.tp:>6d} {r.fp:>6d} {r.fn:>6d} "
            f"{_fmt(r.precision):>9} {_fmt(r.recall):>7} {_fmt(r.f1):>6}"
        )
    p, pr, d = pooled.position_error, pooled.position_error_rel, pooled.diameter_error_rel
    lines.append("")
    lines.append(
        f"centre error: median {_fmt(p['median'], 3)} {unit} (IQR {_fmt(p['iqr'], 3)}), "
        f"{_fmt(pr['median'], 3)} radii (IQR {_fmt(pr['iqr'], 3)})"
    )
    lines.append(f"diameter error (D_det - D_true) / D_true: median {_fmt(d['median'], 3)} (IQR {_fmt(d['iqr'], 3)})")
    lines.append("")
    lines.append(f"{'diameter bin (' + unit + ')':<22} {'truth':>7} {'detected':>8} {'precision':>9} {'recall':>7} {'F1':>6}")
    for b in pooled.bins:
        if b["n_truth"] == 0 and b["n_detected"] == 0:
            continue
        label = f"{b['d_lo']:.3g}-{b['d_hi']:.3g}"
        lines.append(f"{label:<22} {b['n_truth']:>7d} {b['n_detected']:>8d} {_fmt(b['precision']):>9} {_fmt(b['recall']):>7} {_fmt(b['f1']):>6}")
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@click.command("match")
@click.argument("detections", type=click.Path())
@click.argument("truth", type=click.Path())
@click.option("--mode", type=click.Choice(["deepmoon", "strict", "iou"]), default="deepmoon", show_default=True, help="deepmoon: d²/r² < 1.8 and |Δr|/r < 1; strict: 0.5 and 0.25 (geodesic); iou: Hungarian on circle IoU.")
@click.option("--iou-threshold", type=float, default=0.5, show_default=True, help="Smallest IoU of a match (--mode iou).")
@click.option("--min-diameter", type=float, default=None, help="Ignore unmatched craters smaller than this (pixels, or km in geographic space).")
@click.option("--space", type=click.Choice(["auto", "pixels", "geographic"]), default="auto", show_default=True, help="Match on pixel positions or great-circle distances (auto: geographic for strict or when pixels are missing).")
@click.option("--pixel-size", type=float, default=None, help="Pixel size in metres (diameters in km for pixel-only lists).")
@click.option("--body", type=click.Choice(["mars", "moon", "mercury"]), default=None, help="Body of lon/lat lists that name none (plain lon, lat, diameter CSVs) [default: the other list's body, else the Moon].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), default=None, help="Write the scores as JSON to this file ('-': to stdout, instead of the table).")
@overwrite_opt
@common_options
def match(detections, truth, mode, iou_threshold, min_diameter, space, pixel_size, body, json_path, overwrite, verbose, quiet):
    """Match DETECTIONS to TRUTH crater lists and report precision, recall and F1.

    DETECTIONS and TRUTH are crater lists (planetcd CSV/GeoPackage, Pascal-VOC
    XML, PyCDA or Robbins CSV, lunar catalogs, craterstats .scc), or two
    folders whose files are paired by name. Prints a table per image and pooled,
    per √2-diameter bin, with median and interquartile centre and diameter
    errors; --json writes the same for scripts.
    """
    from ..craters.catalog import BODY_RADII_M
    from ..craters.match import match_catalogs, pool_results
    from ..inputs import check_crater_table
    from ..raster import atomic_output, check_writable

    setup_logging(verbose, quiet)
    if pixel_size is not None and not pixel_size > 0:
        raise InputError("--pixel-size must be positive (metres)")
    if not 0 < iou_threshold <= 1:
        raise InputError(f"--iou-threshold must lie in (0, 1], got {iou_threshold:g}")
    if json_path and json_path != "-":
        check_writable([json_path], overwrite)
    options = {"pixel_size_m": pixel_size} if pixel_size else {}
    results = []
    used_space = None
    for name, det_path, truth_path in _pairs(Path(detections), Path(truth)):
        det = check_crater_table(det_path, **(options if det_path.suffix.lower() in (".xml", ".csv") else {}))
        ref = check_crater_table(truth_path, **(options if truth_path.suffix.lower() in (".xml", ".csv") else {}))
        if body is not None:
            det, ref = (c.on_body(BODY_RADII_M[body]) if c.body_assumed else c for c in (det, ref))
        result, used = match_catalogs(det, ref, mode, space=space, min_diameter=min_diameter,
                                      iou_threshold=iou_threshold, name=name)
        if used == "geographic" and det.body_assumed and ref.body_assumed:
            log.warning("%s: neither list names its body; matched on the Moon (pass --body)", name)
        if used_space not in (None, used):
            raise InputError("the pairs of files cannot all be matched in the same space; pass --space")
        used_space = used
        results.append(result)
        log.debug("%s: %d detected, %d true", name, len(det), len(ref))
    pooled = pool_results(results) if len(results) > 1 else results[0]
    unit = results[0].unit
    report = {
        "mode": mode,
        "space": used_space,
        "unit": unit,
        "pooled": _json_safe(pooled.to_dict()),
        "images": [_json_safe(r.to_dict()) for r in results],
    }
    if json_path == "-":
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(_table(results, pooled, unit))
    if json_path:
        with atomic_output(json_path) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
        log.info("wrote %s", json_path)
