"""The ``nn`` detector with and without its low-pass and radiometric matching, on one generated set.

A development tool (the sets it is run on must not be the reported seed)::

    planetcd benchmark make /tmp/dev/l8 --preset lroc --n-pairs 200 --seed 8 --images MC11E-H,MC11E-I,hrsc-holdout
    python benchmarks/nn_ablation.py /tmp/dev/l8 --max-shift 40

prints ROC AUC and accuracy at the label-free τ for: the full method, no low-pass (``NN_BLUR = 0``), and no
radiometric matching (``NN_MATCH_RADIOMETRY = False``).
"""

from __future__ import annotations

import argparse

import numpy as np

from planetcd.change import nn, patch_pairs
from planetcd.datasets.changeset import read_changeset
from planetcd.evaluate import roc_auc


def run(set_dir: str, max_shift: float, blur: float, radiometry: bool, seed: int) -> tuple[float, float, float]:
    data = read_changeset(set_dir)
    saved = nn.NN_BLUR, nn.NN_MATCH_RADIOMETRY
    nn.NN_BLUR, nn.NN_MATCH_RADIOMETRY = blur, radiometry
    try:
        result = patch_pairs.score_pairs(np.asarray(data.pre, np.float32), np.asarray(data.post, np.float32), "nn",
                                     max_shift=max_shift, seed=seed)
    finally:
        nn.NN_BLUR, nn.NN_MATCH_RADIOMETRY = saved
    labels = np.asarray(data.labels).astype(bool)
    accuracy = float(np.mean(result.changed == labels))
    return roc_auc(labels, result.scores), accuracy, result.tau


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir")
    parser.add_argument("--max-shift", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = {"full": (nn.NN_BLUR, True), "no low-pass": (0.0, True), "no radiometric matching": (nn.NN_BLUR, False)}
    print("| variant | ROC AUC | accuracy | τ |\n|---|---:|---:|---:|")
    for name, (blur, radiometry) in variants.items():
        auc, accuracy, tau = run(args.set_dir, args.max_shift, blur, radiometry, args.seed)
        print(f"| {name} | {auc:.3f} | {accuracy:.3f} | {tau:.4f} |", flush=True)


if __name__ == "__main__":
    main()
