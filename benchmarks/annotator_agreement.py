"""How well does one human annotator agree with the six-annotator clustered labels of MC11E A-I?

    python benchmarks/annotator_agreement.py [--tiles ABCDEFGHI] [--min-diameter 8]

The clustered Pascal-VOC labels of the Mars Crater Catalogue are the union of six annotators' craters; each
label's ``<confidence>`` is how many of the six marked it. Scored against that union the way the crater folds
score a model (craters of diameter >= 8 px, every clustered label counts), annotator ``j`` finds the labels
they marked: their recall is ``R_j = n_j / N``, and the mean over the six annotators is exactly
``mean(confidence) / 6``. Every crater an annotator marked is one of the labels, so their precision is at
most 1 (it is below 1 only where their own box misses the cluster's by the DeepMoon rule). Hence an
upper bound on the F1 of an average annotator: ``2 R / (1 + R)`` with ``R = mean(confidence) / 6`` (F1 is
concave in R, so the mean of the six annotators' F1 is at most this). The per-annotator labels are not in
the data, so this bound is what can be computed. It puts the crater folds' F1 in context: a detector
scored this way competes with the union of six people.

Prints per tile: labels >= min diameter, the share marked by only one annotator, recall at each agreement
level (an "annotator" that marks exactly the craters at least k people marked), and the average-annotator
bound. Reads only the labels; runs in a second.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from crater_folds import tile_paths


def agreement(confidence: np.ndarray) -> dict:
    """Recall of the average annotator and of the k-of-six consensus, against all labels (``confidence`` (n,))."""
    conf = np.asarray(confidence, np.float64)
    conf = conf[np.isfinite(conf)]
    recall = float(conf.mean() / 6.0) if len(conf) else float("nan")
    return {
        "n": int(len(conf)),
        "one_annotator_share": float(np.mean(conf == 1)) if len(conf) else float("nan"),
        "annotator_recall": recall,
        "annotator_f1_bound": 2 * recall / (1 + recall) if len(conf) else float("nan"),
        "consensus_recall": {k: float(np.mean(conf >= k)) for k in range(1, 7)},
        "confidence_sum": float(conf.sum()),
    }


def main(argv=None) -> int:
    from planetcd.craters.train import read_labels
    from planetcd.datasets.crater_labels import read_voc_confidence

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", default="ABCDEFGHI")
    ap.add_argument("--min-diameter", type=float, default=8.0, help="labels of smaller diameter (px) are left out")
    args = ap.parse_args(argv)
    print("tile  labels  one-annotator share  average annotator: recall  F1 bound  | consensus k>=2..6 recall")
    total_conf = total_n = 0.0
    for tile in args.tiles:
        _, labels_path = tile_paths(tile)
        truth, conf = read_labels(labels_path), read_voc_confidence(labels_path)
        keep = truth[:, 2] * 2 >= args.min_diameter
        a = agreement(conf[keep])
        total_conf += a["confidence_sum"]
        total_n += a["n"]
        consensus = "  ".join(f"{a['consensus_recall'][k]:.2f}" for k in range(2, 7))
        print(f"{tile}  {a['n']}  {a['one_annotator_share']:.2f}  {a['annotator_recall']:.3f}  "
              f"{a['annotator_f1_bound']:.3f}  | {consensus}")
    recall = total_conf / total_n / 6.0
    print(f"pooled  {int(total_n)}  average annotator recall {recall:.3f}, F1 bound {2 * recall / (1 + recall):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
