"""Behaviour check for refactorings: the same commands give the same outputs before and after.

Cuts one fixed pair from the CTX tile MC11E-H of ``../shared`` (a tile the
shipped segmenter was *validated* on, so this is a plumbing check, not an
accuracy number), runs ``planetcd detect`` (paper and nn), ``segment`` and
``monitor``, each in one process and with ``--workers 2``, and stores every
output. ``compare`` then checks two such runs file by file: rasters and CSV
numbers to 1e-6, text columns exactly.

Record the reference with the code of a base commit, then the current code::

    git worktree add /tmp/base b2d13c4
    PYTHONPATH=/tmp/base python benchmarks/check_equivalence.py record /tmp/eq_base
    python benchmarks/check_equivalence.py record /tmp/eq_head
    python benchmarks/check_equivalence.py compare /tmp/eq_base /tmp/eq_head

``record`` runs the package that ``python -c "import planetcd"`` imports
(``PYTHONPATH`` chooses it), always through ``python -m planetcd``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PLANETCD_SHARED", REPO.parent / "shared"))
TILE = "MC11E-H.png"
SIZE = 640
MARS_EQC = ("+proj=eqc +lat_ts=0 +lat_0=0 +lon_0=0 +x_0=0 +y_0=0 "
            "+a=3396190 +b=3396190 +units=m +no_defs")

#: name -> planetcd arguments (PRE, POST, IMAGE and OUT are replaced)
RUNS = {
    "detect_paper": ["detect", "PRE", "POST", "-o", "OUT", "--method", "paper", "--patch-size", "64"],
    "detect_nn": ["detect", "PRE", "POST", "-o", "OUT", "--method", "nn", "--patch-size", "64"],
    "segment": ["segment", "POST", "-o", "OUT", "--no-tta"],
    "monitor": ["monitor", "PRE", "POST", "-o", "OUT", "--patch-size", "64", "--no-tta", "--block-size", "384"],
}
WORKER_RUNS = ("detect_nn", "segment", "monitor")
#: outputs that hold timings, paths or versions rather than results
SKIP = {"run.json", "monitor.json", "report.html", "quicklook.png", "overview.png"}


def make_pair(folder: Path) -> tuple[Path, Path]:
    """Pre: a 640² crop of MC11E-H; post: the same ground displaced by (3, -5) px, 10 % brighter,
    with noise and one dark bowl of radius 9 px (a new crater). Mars equirectangular, 6 m/px."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    image = np.asarray(Image.open(SHARED / "data" / "ctx-mc11e" / "images" / TILE).convert("L"), np.float32)
    r0, c0 = 400, 600
    pre = image[r0 : r0 + SIZE, c0 : c0 + SIZE]
    post = image[r0 + 3 : r0 + 3 + SIZE, c0 - 5 : c0 - 5 + SIZE] * 1.1
    rng = np.random.default_rng(20261130)
    post = post + rng.normal(0, 3, post.shape)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    d = np.hypot(yy - 300.0, xx - 420.0) / 9.0
    post = np.where(d < 1, post * (0.45 + 0.4 * d**2), post)
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="float32", crs=MARS_EQC,
                   transform=from_origin(1_000_000.0, 500_000.0, 6.0, 6.0))
    paths = []
    for name, data in (("pre", pre), ("post", post)):
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.clip(data, 1, 255).astype(np.float32)[None])
        paths.append(path)
    return paths[0], paths[1]


def record(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    pre, post = make_pair(outdir)
    jobs = [(name, args) for name, args in RUNS.items()]
    jobs += [(f"{name}_workers2", RUNS[name] + ["--workers", "2"]) for name in WORKER_RUNS]
    for name, args in jobs:
        out = outdir / name
        argv = [str(pre) if a == "PRE" else str(post) if a in ("POST", "IMAGE") else str(out) if a == "OUT" else a
                for a in args]
        print("planetcd", " ".join(argv), flush=True)
        subprocess.run([sys.executable, "-m", "planetcd", *argv, "-q", "--overwrite"], check=True)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def compare_csv(a: Path, b: Path, tol: float) -> list[str]:
    rows_a, rows_b = _csv_rows(a), _csv_rows(b)
    if len(rows_a) != len(rows_b):
        return [f"{a.name}: {len(rows_a)} rows vs {len(rows_b)}"]
    problems = []
    for k, (ra, rb) in enumerate(zip(rows_a, rows_b)):
        for key in ra:
            va, vb = ra[key], rb.get(key)
            try:
                fa, fb = float(va), float(vb)
            except (TypeError, ValueError):
                if va != vb and key not in ("path", "outdir"):
                    problems.append(f"{a.name} row {k} {key}: {va!r} vs {vb!r}")
                continue
            if not (np.isnan(fa) and np.isnan(fb)) and abs(fa - fb) > tol * max(1.0, abs(fa)):
                problems.append(f"{a.name} row {k} {key}: {va} vs {vb}")
    return problems


def compare_raster(a: Path, b: Path, tol: float) -> list[str]:
    import rasterio

    with rasterio.open(a) as da, rasterio.open(b) as db:
        if (da.shape, da.count, da.crs, da.transform) != (db.shape, db.count, db.crs, db.transform):
            return [f"{a.name}: grids differ"]
        xa, xb = da.read().astype(np.float64), db.read().astype(np.float64)
    same_nan = np.isnan(xa) == np.isnan(xb)
    diff = np.abs(np.nan_to_num(xa) - np.nan_to_num(xb))
    if not same_nan.all() or diff.max(initial=0) > tol:
        return [f"{a.name}: max difference {diff.max(initial=0):.3g}, NaN mismatches {int((~same_nan).sum())}"]
    return []


def compare(base: Path, head: Path, tol: float = 1e-6) -> int:
    problems, checked = [], 0
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base)
        if not path.is_file() or path.name in SKIP or rel.parts[0] in ("pre.tif", "post.tif") or "chips" in rel.parts:
            continue
        other = head / rel
        if not other.exists():
            problems.append(f"{rel}: missing")
            continue
        checked += 1
        if path.suffix == ".csv":
            problems += [f"{rel.parent}/{p}" for p in compare_csv(path, other, tol)]
        elif path.suffix == ".tif":
            problems += [f"{rel.parent}/{p}" for p in compare_raster(path, other, tol)]
    for p in problems:
        print("DIFF", p)
    print(f"{checked} files compared, {len(problems)} differences")
    return 1 if problems or checked == 0 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("record").add_argument("outdir", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("base", type=Path)
    cmp.add_argument("head", type=Path)
    cmp.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    if args.cmd == "record":
        record(args.outdir)
        return 0
    return compare(args.base, args.head, args.tol)


if __name__ == "__main__":
    sys.exit(main())
