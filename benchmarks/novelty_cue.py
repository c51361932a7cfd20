"""Does a feature-energy novelty cue separate changed from relit-unchanged pairs? (development sets only)

    planetcd benchmark make DEV --preset real-nuisance --n-pairs 60 --seed 1234 --images MC11E-H,MC11E-I,hrsc-holdout
    python benchmarks/novelty_cue.py DEV

Runs the default ``nn`` method of ``planetcd evaluate`` on the set (registration, relighting, the worst-cell
score), keeps the registered and relit pairs it scores, and ranks the pairs by variants of the score that add
a cue the nearest-neighbour distance lacks: whether one date has feature energy (``|f|²`` of conv3_2, 2 x 2
cell average) the other lacks anywhere within the search radius,
``novelty = max(0, (E_a - max_near(E_b)) / (E_a + max_near(E_b) + eps))`` either way. The idea: relighting
turns the shading of ground that is there on both dates (similar energy), a new crater or blast zone puts
structure where there was little. Prints the ROC AUC of each variant against the set's labels.

Exploratory: for the development seed (1234), never for the reporting seeds.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F


def main(argv=None) -> int:
    import planetcd.change.patch_pairs as patch_pairs
    from planetcd.change.nn import match_resolution, nn_change_map, overlap_cells, patch_features
    from planetcd.datasets.changeset import read_changeset
    from planetcd.evaluate import roc_auc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a set written by `planetcd benchmark make`")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    changeset = read_changeset(args.folder)
    labels = np.asarray(changeset.labels)

    seen: dict = {}
    nn_scores = patch_pairs.nn_scores

    def keep_first(trunk, pre, post, overlap=None, **options):  # the real pairs come first, then the pseudo pairs
        seen.setdefault("pairs", (trunk, pre, post, overlap, options.get("precision")))
        return nn_scores(trunk, pre, post, overlap=overlap, **options)

    patch_pairs.nn_scores = keep_first
    try:
        result = patch_pairs.score_pairs(changeset.pre, changeset.post, method="nn", seed=0)
    finally:
        patch_pairs.nn_scores = nn_scores
    print(f"nn (evaluate's default): ROC AUC {roc_auc(labels, result.scores):.4f}, tau {result.tau:.4f}")

    trunk, pre, post, overlap, precision = seen["pairs"]
    f_pre = torch.from_numpy(patch_features(trunk, match_resolution(pre), precision=precision))
    f_post = torch.from_numpy(patch_features(trunk, match_resolution(post), precision=precision))
    distance = nn_change_map(f_pre, f_post, 2)
    keep = torch.from_numpy(overlap_cells(overlap, trunk.stride, distance.shape[1:], 1))

    def worst(cells: torch.Tensor) -> np.ndarray:
        return torch.where(keep, cells, torch.zeros_like(cells)).flatten(1).max(1).values.numpy()

    def near(energy: torch.Tensor, radius: int = 2) -> torch.Tensor:
        return F.max_pool2d(energy[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]

    def cell_average(energy: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(energy[:, None], (0, 1, 0, 1), mode="replicate"), 2, stride=1)[:, 0]

    e_pre, e_post = cell_average((f_pre * f_pre).sum(1)), cell_average((f_post * f_post).sum(1))
    rows = {"nn distance (recomputed)": worst(distance)}
    for eps in (100.0, 1000.0):
        gained = (e_post - near(e_pre)) / (e_post + near(e_pre) + eps)
        lost = (e_pre - near(e_post)) / (e_pre + near(e_post) + eps)
        novelty = torch.maximum(gained, lost).clamp(min=0)
        rows[f"novelty, eps {eps:g}"] = worst(novelty)
        rows[f"energy gained only, eps {eps:g}"] = worst(gained.clamp(min=0))
        rows[f"distance x novelty, eps {eps:g}"] = worst(distance * novelty)
        rows[f"distance x sqrt(novelty), eps {eps:g}"] = worst(distance * novelty.sqrt())
    for name, scores in rows.items():
        print(f"{name:40s} ROC AUC {roc_auc(labels, scores):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
