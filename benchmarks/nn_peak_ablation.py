"""How ``nn`` turns a patch's disagreement map into one score: ROC AUC of the variants on labelled sets.

The maps are computed once per set, as :func:`planetcd.change.patch_pairs.score_pairs` computes them for
``nn`` (patches scaled, registered within the misregistration found from the pairs, pre relit to post's sun),
then scored by the plain worst cell (``nn``'s score before 2026-12-02) and by
:func:`planetcd.change.nn.nn_patch_scores` with several peak boxes, line lengths and weights, and the shipped
ones with other least shares of valid cells per line (the shipped constants are marked). Labels are used for the ROC AUC only. Run it on development sets only::

    planetcd benchmark make DEV --preset real-nuisance --n-pairs 200 --seed 1234 --images MC11E-H,MC11E-I,hrsc-holdout
    python benchmarks/nn_peak_ablation.py DEV [DEV2 ...]
"""

from __future__ import annotations

import argparse

import numpy as np

from planetcd.change.nn import (
    NN_LINE_CELLS,
    NN_LINE_MIN_SHARE,
    NN_LINE_WEIGHT,
    NN_PEAK_BOX,
    iter_nn_maps,
    nn_patch_scores,
    pair_shifts,
    register_pairs,
    relight_pre,
)
from planetcd.change.patch_pairs import auto_max_shift, scale_patches
from planetcd.datasets.changeset import read_changeset
from planetcd.evaluate import roc_auc
from planetcd.features import cached_trunk
from planetcd.precision import resolve_precision

#: (peak box, line cells, weight, least share of a line's cells valid)
VARIANTS = [(box, length, weight, NN_LINE_MIN_SHARE) for box in (1, 2, 3) for length in (15, 25, 37)
            for weight in (0.5, 0.7, 0.8)]
VARIANTS += [(NN_PEAK_BOX, NN_LINE_CELLS, NN_LINE_WEIGHT, share) for share in (0.0, 0.5)
             if share != NN_LINE_MIN_SHARE]


def set_maps(directory: str, precision: str, weights: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``(n,)``, ``nn`` disagreement maps ``(n, rows, cols)`` and scored cells of one set."""
    pairs = read_changeset(directory)
    pre, post = scale_patches(pairs.pre), scale_patches(pairs.post)
    shifts = pair_shifts(pre, post)
    registered, _, overlap = register_pairs(pre, post, max_shift=auto_max_shift(shifts, "nn"), shifts=shifts)
    lit, _ = relight_pre(pre, registered, overlap)
    trunk = cached_trunk(6, weights=weights, device="cpu")
    maps, keeps = zip(*iter_nn_maps(trunk, lit, registered, overlap=overlap, precision=precision))
    return pairs.labels, np.concatenate(maps), np.concatenate(keeps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", help="labelled set folders (planetcd benchmark make)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--weights", default=None, help="VGG-16 weights (else the usual resolution)")
    args = parser.parse_args()
    precision = resolve_precision(args.precision, "cpu")
    shipped = (NN_PEAK_BOX, NN_LINE_CELLS, NN_LINE_WEIGHT, NN_LINE_MIN_SHARE)
    print(f"precision {precision}; variants: peak box (cells), line (cells), weight, least valid share of a line; "
          "* = shipped")
    header = ["set", "worst cell"] + [f"{b},{n},{w},{m}{'*' if (b, n, w, m) == shipped else ''}"
                                      for b, n, w, m in VARIANTS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for directory in args.sets:
        labels, maps, keep = set_maps(directory, precision, args.weights)
        worst = np.where(keep, maps, 0.0).reshape(len(maps), -1).max(1)
        row = [roc_auc(labels, worst)] + [roc_auc(labels, nn_patch_scores(maps, keep, b, n, w, m))
                                          for b, n, w, m in VARIANTS]
        print(f"| {directory} | " + " | ".join(f"{v:.4f}" for v in row) + " |")


if __name__ == "__main__":
    main()
