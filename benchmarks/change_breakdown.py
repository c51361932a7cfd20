"""Where the change methods succeed and fail on a generated set: recall per implant kind, false alarms per source.

Reads a set written by ``planetcd benchmark make`` (its ``pairs.csv``) and the per-pair scores written by
``planetcd evaluate --scores``; prints a Markdown table (label-free τ, as in the main table)::

    python benchmarks/change_breakdown.py bench_out/change/ctx-impacts bench_out/change/ctx-impacts-scores.csv

With ``--visibility-only`` it needs no scores and prints only how many changed pairs have their implant's
centre on ground the pre patch does not show (0 by construction since commit 6f1947f).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def breakdown(set_dir: Path, scores_csv: Path, methods: list[str]) -> str:
    pairs = {r["id"]: r for r in _rows(set_dir / "pairs.csv")}
    scores = _rows(scores_csv)
    methods = [m for m in methods if f"{m}_changed" in scores[0]]
    groups: dict[str, list[dict[str, str]]] = {}
    for row in scores:
        spec = pairs[row["id"]]
        key = f"changed: {spec['implant']}" if row["label"] == "1" else f"unchanged: {spec['source']}"
        groups.setdefault(key, []).append(row)
    lines = ["| pairs | n | " + " | ".join(f"{m} flagged" for m in methods) + " |",
             "|---|---:|" + "---:|" * len(methods)]
    for key in sorted(groups):
        rows = groups[key]
        cells = [f"{sum(r[f'{m}_changed'] == '1' for r in rows) / len(rows):.2f}" for m in methods]
        lines.append(f"| {key} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nFlagged = fraction with score > τ: recall for changed groups, false-alarm rate for unchanged.\n"


def outside_pre_view(set_dir: Path) -> tuple[int, int]:
    """Changed pairs whose implant centre lies on ground the pre patch does not show, and all changed pairs.

    Post pixel (y, x) shows the ground pre shows at (y - dy, x - dx) (``pairs.csv`` of ``planetcd benchmark
    make``; the patch size is read from ``benchmark.json``).
    """
    import json

    size = json.loads((set_dir / "benchmark.json").read_text())["patch_size"]
    changed = [r for r in _rows(set_dir / "pairs.csv") if r["label"] == "1"]
    outside = sum(not (0 <= float(r["y"]) - float(r["dy"]) < size and 0 <= float(r["x"]) - float(r["dx"]) < size)
                  for r in changed)
    return outside, len(changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", type=Path)
    parser.add_argument("scores_csv", type=Path, nargs="?")
    parser.add_argument("--visibility-only", action="store_true", help="only count implants outside pre's view")
    parser.add_argument("--methods", default="paper,paper-layer7,rcva,nn")
    args = parser.parse_args()
    if args.visibility_only or args.scores_csv is None:
        outside, changed = outside_pre_view(args.set_dir)
        print(f"{args.set_dir}: {outside} of {changed} changed pairs have the implant centre outside pre's view")
        return
    print(breakdown(args.set_dir, args.scores_csv, args.methods.split(",")), end="")
    outside, changed = outside_pre_view(args.set_dir)
    print(f"\nChanged pairs whose implant centre lies outside the ground pre's patch shows: {outside} of {changed}.")


if __name__ == "__main__":
    main()
