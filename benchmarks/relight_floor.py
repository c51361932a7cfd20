"""What the relighting's noise floor does to ``nn`` on ``real-nuisance`` sets (development seeds only).

    python benchmarks/relight_floor.py OUT [--seeds 1234,7] [--floor off,on] [--n-pairs 200]

Without its noise floor :func:`planetcd.change.nuisance.relight` reads all of an image's contrast as slope;
with it (``noise_floor=True``, the default since 2026-12-04) the power at frequencies perpendicular to the
sun (where shading has none) regularises the integration, so sensor noise is no longer turned into
striations along the sun. The same function makes the benchmark generator's relit dates and ``nn``'s relit
pseudo pairs, so the floor changes both at once. For each seed and setting (``on``: every relighting with
the floor, as the defaults relight a ``real-nuisance`` set and the pseudo pairs of relit pairs; ``off``:
every relighting without it, the rest as it is) this writes the set to ``OUT/<setting>-<seed>`` (``planetcd
benchmark make --preset real-nuisance --images MC11E-H,MC11E-I,hrsc-holdout``), scores it with ``nn``
(``planetcd evaluate --methods nn,nn-oracle --seed 0``) and prints ROC AUC, accuracy, false alarms on the
unchanged pairs, τ and the accuracy at the labels' best τ. Use development seeds: a reporting seed is
spent once (docs/benchmarks.md). About a minute per set and setting on two cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

IMAGES = ("MC11E-H", "MC11E-I", "hrsc-holdout")


def run(out: Path, seed: int, floor: bool, n_pairs: int) -> dict[str, float]:
    """Make one ``real-nuisance`` set with or without the floor in every relighting, and score it with nn."""
    import planetcd.change.nuisance as nuisance
    from planetcd.datasets.benchmark import make_benchmark, write_benchmark
    from planetcd.datasets.changeset import read_changeset
    from planetcd.evaluate import evaluate

    plain = nuisance.relight

    def forced(*args, noise_floor: bool = True, **kwargs):
        return plain(*args, noise_floor=floor, **kwargs)

    # real_nuisance() calls the module's relight: the one place both the generator's dates and nn's pseudo
    # pairs are relit (whatever noise_floor their nuisance ranges ask for).
    nuisance.relight = forced
    try:
        directory = out / f"{'on' if floor else 'off'}-{seed}"
        write_benchmark(directory, make_benchmark("real-nuisance", n_pairs, seed, list(IMAGES)), overwrite=True)
        changeset = read_changeset(directory)
        result = evaluate(changeset, ["nn", "nn-oracle"], seed=0)
    finally:
        nuisance.relight = plain
    labels = np.asarray(changeset.labels)
    nn, oracle = result.results["nn"], result.results["nn-oracle"]
    return {"roc_auc": nn.metrics["roc_auc"], "accuracy": nn.metrics["accuracy"],
            "false_alarms": float(np.mean(nn.scores[labels == 0] > nn.tau)), "tau": nn.tau,
            "oracle_accuracy": oracle.metrics["accuracy"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", default="1234,7")
    ap.add_argument("--floor", default="off,on", help="settings to run: on (every relighting with the noise floor), off (every one without)")
    ap.add_argument("--n-pairs", type=int, default=200)
    args = ap.parse_args(argv)
    settings = [s.strip() for s in args.floor.split(",")]
    if any(s not in ("off", "on") for s in settings):
        ap.error("--floor takes off, on or off,on")
    print("| seed | noise floor | nn ROC AUC | accuracy | false alarms | τ | accuracy at the labels' best τ |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for seed in (int(s) for s in args.seeds.split(",")):
        for setting in settings:
            m = run(args.out, seed, setting == "on", args.n_pairs)
            print(f"| {seed} | {setting} | {m['roc_auc']:.3f} | {m['accuracy']:.3f} | {m['false_alarms']:.0%} | "
                  f"{m['tau']:.4f} | {m['oracle_accuracy']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
