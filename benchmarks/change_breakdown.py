"""Where the change methods succeed and fail on a generated set: recall per implant kind, false alarms per source.

Reads a set written by ``planetcd benchmark make`` (its ``pairs.csv``) and the per-pair scores written by
``planetcd evaluate --scores``; prints a Markdown table (label-free τ, as in the main table)::

    python benchmarks/change_breakdown.py bench_out/change/ctx-impacts bench_out/change/ctx-impacts-scores.csv

With ``--visibility-only`` it needs no scores and prints only how many changed pairs have their implant's
centre on ground the pre patch does not show (0 by construction since commit 6f1947f).

With ``--attribution unlit|relit`` it generates its own pairs (development seed 1234 by default) and prints
which real nuisance makes unchanged pairs score high: 30 unchanged ``real-nuisance`` pairs per nuisance
alone, ranked by ``nn``'s score (without or with the relighting of pre to post's sun) against 30 changed
pairs with all of them (docs/benchmarks.md § Development).

With ``--relit-gate`` it needs no scores: it registers the set's pairs as ``nn`` does, fits each pair's
transfer and prints, per group (changed implant kind, unchanged source), how many pairs pass the relighting
gate (``transfer_anisotropy`` above ``RELIT_ANISOTROPY``: ``nn`` then gives that source's pseudo pairs the
real nuisances) and the median anisotropy.

With ``--sun-turns`` (a ``real-nuisance`` set and its scores) it replays each pair's draws
(:func:`planetcd.datasets.benchmark.pair_date_nuisances`: no rendering) and prints, per bin of the angle
between the two dates' suns, the false-alarm rate on unchanged pairs and the recall on changed ones, and,
per method, the Pearson correlation of the unchanged pairs' scores with that angle::

    python benchmarks/change_breakdown.py bench_out/change/real-nuisance bench_out/change/real-nuisance-scores.csv --sun-turns --methods nn,nn-unlit
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


def attribution(variant: str, n: int = 30, seed: int = 1234) -> str:
    """Median unchanged score and ROC AUC against changed ``real-nuisance`` pairs, per nuisance alone."""
    from dataclasses import replace

    import numpy as np

    from planetcd.change.nn import nn_scores, register_pairs, relight_pre
    from planetcd.change.nuisance import REAL_NUISANCE, RealNuisance
    from planetcd.change.patch_pairs import scale_patches
    from planetcd.datasets.benchmark import PRESETS, draw_spec, load_sources, render_pair
    from planetcd.evaluate import roc_auc
    from planetcd.features import cached_trunk

    sources = load_sources(["MC11E-H", "MC11E-I", "hrsc-holdout"], None, False)
    preset = PRESETS["real-nuisance"]
    zero = RealNuisance(p_relight=0, p_streaks=0, p_seam=0, p_haze=0, p_resolution=0)
    groups = {"none": zero, "relighting": replace(zero, p_relight=1), "dust-devil tracks": replace(zero, p_streaks=1),
              "seam": replace(zero, p_seam=1), "haze": replace(zero, p_haze=1),
              "resolution": replace(zero, p_resolution=1), "all (the preset)": REAL_NUISANCE}
    trunk = cached_trunk(6, weights=None, device="cpu")

    def make(nuisance, changed: bool, offset: int):
        pre, post = [], []
        for i in range(n):
            source = sources[i % len(sources)]
            spec = draw_spec(np.random.default_rng([seed, offset + i]), source, preset, changed, 150, 10.0)
            a, b, _ = render_pair(spec, source, 150, 10.0, implant=changed, nuisance=nuisance)
            pre.append(np.round(a * 255))
            post.append(np.round(b * 255))
        return np.stack(pre)[:, None], np.stack(post)[:, None]

    def score(pre, post):
        pre, post = scale_patches(pre), scale_patches(post)
        registered, _, overlap = register_pairs(pre, post, max_shift=10.0)
        if variant == "relit":
            pre, _ = relight_pre(pre, registered, overlap)
        return nn_scores(trunk, pre, registered, overlap=overlap)

    changed = score(*make(REAL_NUISANCE, True, 1000))
    labels = np.r_[np.ones(n), np.zeros(n)]
    lines = [f"nn {variant}, seed {seed}, {n} pairs per row; changed pairs: median {np.median(changed):.3f}", "",
             "| unchanged pairs with | median | ROC AUC |", "|---|---:|---:|"]
    for name, nuisance in groups.items():
        unchanged = score(*make(nuisance, False, 0))
        lines.append(f"| {name} | {np.median(unchanged):.3f} | {roc_auc(labels, np.r_[changed, unchanged]):.3f} |")
    return "\n".join(lines) + "\n"


def relit_gate(set_dir: Path) -> str:
    """Per group of the set: pairs whose fitted transfer passes ``nn``'s relighting gate, and the median anisotropy."""
    import numpy as np

    from planetcd.change.nn import RELIT_ANISOTROPY, register_pairs, relight_pre, transfer_anisotropy
    from planetcd.change.patch_pairs import auto_max_shift, pair_shifts, scale_patches
    from planetcd.datasets.changeset import read_changeset

    changeset = read_changeset(set_dir)
    pairs = {r["id"]: r for r in _rows(set_dir / "pairs.csv")}
    pre, post = scale_patches(changeset.pre), scale_patches(changeset.post)
    shifts = pair_shifts(pre, post)
    registered, _, overlap = register_pairs(pre, post, max_shift=auto_max_shift(shifts, "nn"), shifts=shifts)
    _, transfers = relight_pre(pre, registered, overlap)
    anisotropy = transfer_anisotropy(transfers)
    groups: dict[str, list[float]] = {}
    for pair_id, label, value in zip(changeset.ids, changeset.labels, anisotropy):
        spec = pairs[pair_id]
        key = f"changed: {spec['implant']}" if int(label) == 1 else f"unchanged: {spec['source']}"
        groups.setdefault(key, []).append(float(value))
    lines = [f"| pairs | n | above {RELIT_ANISOTROPY} (relit) | median anisotropy |", "|---|---:|---:|---:|"]
    for key in sorted(groups):
        values = np.asarray(groups[key])
        lines.append(f"| {key} | {len(values)} | {int((values > RELIT_ANISOTROPY).sum())} | {np.median(values):.3f} |")
    return "\n".join(lines) + "\n"


SUN_TURN_BINS = (0.0, 15.0, 30.0, 45.0, 60.0, 180.0)


def sun_turns(set_dir: Path, scores_csv: Path, methods: list[str]) -> str:
    """False alarms and recall per bin of the angle between a ``real-nuisance`` pair's two suns (module docstring)."""
    import json

    import numpy as np

    from planetcd.craters.sun import angle_difference
    from planetcd.datasets.benchmark import pair_date_nuisances

    meta = json.loads((set_dir / "benchmark.json").read_text())
    if not meta.get("real_nuisance"):
        raise SystemExit(f"{set_dir}: not a set with real nuisances (benchmark.json real_nuisance is false)")
    suns = meta.get("source_sun_azimuth_deg") or {}
    pairs = {r["id"]: r for r in _rows(set_dir / "pairs.csv")}
    scores = _rows(scores_csv)
    methods = [m for m in methods if f"{m}_changed" in scores[0]]
    angle = []
    for row in scores:
        spec = pairs[row["id"]]
        pre, post = pair_date_nuisances(int(spec["noise_seed"]), suns.get(spec["source"]))
        angle.append(abs(angle_difference(pre.lit_from, post.lit_from)))
    angle = np.asarray(angle)
    label = np.array([r["label"] == "1" for r in scores])
    flagged = {m: np.array([r[f"{m}_changed"] == "1" for r in scores]) for m in methods}
    lines = ["| angle between the suns | unchanged n | " + " | ".join(f"{m} false alarms" for m in methods)
             + " | changed n | " + " | ".join(f"{m} recall" for m in methods) + " |",
             "|---|---:|" + "---:|" * len(methods) + "---:|" + "---:|" * len(methods)]
    for lo, hi in zip(SUN_TURN_BINS[:-1], SUN_TURN_BINS[1:]):
        inside = (angle >= lo) & (angle < hi)
        u, c = inside & ~label, inside & label
        cells_u = [f"{flagged[m][u].mean():.2f}" if u.any() else "–" for m in methods]
        cells_c = [f"{flagged[m][c].mean():.2f}" if c.any() else "–" for m in methods]
        lines.append(f"| {lo:.0f}–{hi:.0f}° | {int(u.sum())} | " + " | ".join(cells_u) + f" | {int(c.sum())} | "
                     + " | ".join(cells_c) + " |")
    lines.append("")
    for m in methods:
        values = np.array([float(r[m]) for r in scores])
        r = np.corrcoef(angle[~label], values[~label])[0, 1]
        lines.append(f"{m}: Pearson correlation of the unchanged pairs' scores with the angle {r:.2f}; mean angle of "
                     f"the unchanged pairs flagged {angle[~label & flagged[m]].mean():.1f}°, not flagged "
                     f"{angle[~label & ~flagged[m]].mean():.1f}°.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", type=Path, nargs="?")
    parser.add_argument("scores_csv", type=Path, nargs="?")
    parser.add_argument("--visibility-only", action="store_true", help="only count implants outside pre's view")
    parser.add_argument("--methods", default="paper,paper-layer7,rcva,nn")
    parser.add_argument("--attribution", choices=["unlit", "relit"], help="which nuisance drives nn's scores")
    parser.add_argument("--seed", type=int, default=1234, help="with --attribution (development seed)")
    parser.add_argument("--relit-gate", action="store_true", help="which pairs pass nn's relighting gate")
    parser.add_argument("--sun-turns", action="store_true", help="false alarms by the angle between the suns")
    args = parser.parse_args()
    if args.sun_turns:
        if args.set_dir is None or args.scores_csv is None:
            parser.error("set_dir and scores_csv are required with --sun-turns")
        print(sun_turns(args.set_dir, args.scores_csv, args.methods.split(",")), end="")
        return
    if args.relit_gate:
        if args.set_dir is None:
            parser.error("set_dir is required with --relit-gate")
        print(relit_gate(args.set_dir), end="")
        return
    if args.attribution:
        print(attribution(args.attribution, seed=args.seed), end="")
        return
    if args.set_dir is None:
        parser.error("set_dir is required (or --attribution)")
    if args.visibility_only or args.scores_csv is None:
        outside, changed = outside_pre_view(args.set_dir)
        print(f"{args.set_dir}: {outside} of {changed} changed pairs have the implant centre outside pre's view")
        return
    print(breakdown(args.set_dir, args.scores_csv, args.methods.split(",")), end="")
    outside, changed = outside_pre_view(args.set_dir)
    print(f"\nChanged pairs whose implant centre lies outside the ground pre's patch shows: {outside} of {changed}.")


if __name__ == "__main__":
    main()
