"""Where the change methods succeed and fail on a generated set: recall per implant kind, false alarms per source.

Reads a set written by ``planetcd benchmark make`` (its ``pairs.csv``) and the per-pair scores written by
``planetcd evaluate --scores``; prints a Markdown table (label-free τ, as in the main table)::

    python benchmarks/change_breakdown.py bench_out/change/ctx-impacts bench_out/change/ctx-impacts-scores.csv
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", type=Path)
    parser.add_argument("scores_csv", type=Path)
    parser.add_argument("--methods", default="paper,paper-layer7,rcva,nn")
    args = parser.parse_args()
    print(breakdown(args.set_dir, args.scores_csv, args.methods.split(",")), end="")


if __name__ == "__main__":
    main()
