"""Evaluate change detectors on a labelled set of patch pairs: every method, one table.

All methods score the same pairs (:func:`planetcd.change.patch_pairs.score_pairs`)
and choose their threshold τ without labels. A method name ending in
``-oracle`` (``paper-oracle``, ``nn-oracle``) re-uses its base method's scores
with the τ that maximises accuracy *on the labels*: an upper bound on what a
threshold could do, never a result, and marked as such in every table.

Metrics are small functions of a score vector, the labels and τ (a pair is
changed when ``score > tau``), so they can be checked by hand.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets.changeset import ChangeSet
from .errors import InputError
from .raster import atomic_output

__all__ = [
    "default_methods",
    "ORACLE_SUFFIX",
    "confusion",
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "balanced_accuracy",
    "roc_auc",
    "oracle_threshold",
    "metrics",
    "MethodResult",
    "Evaluation",
    "evaluate",
    "parse_methods",
]

ORACLE_SUFFIX = "-oracle"
#: Metric names in table order.
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc", "tau")
_HEADERS = ("accuracy", "precision", "recall", "F1", "balanced acc.", "ROC AUC", "τ")


def _method_names() -> tuple[str, ...]:
    from .change.patch_pairs import METHOD_NAMES

    return tuple(METHOD_NAMES)


def default_methods() -> tuple[str, ...]:
    """Every label-free method, then the oracle-threshold versions of ``paper`` and ``nn``."""
    names = _method_names()
    return names + tuple(f"{base}{ORACLE_SUFFIX}" for base in ("paper", "nn") if base in names)


def parse_methods(text: str | None) -> list[str]:
    """``"paper,nn,nn-oracle"`` -> a checked list (``None``: every method).

    Raises
    ------
    InputError
        An unknown or repeated name, or a text naming no method at all (``""``, ``","``: an unset
        shell variable, say), which used to run every method (a quarter of an hour on 200 pairs).
    """
    if text is None:
        return list(default_methods())
    known = _method_names()
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError(f"--methods {text!r} names no method; leave it out to run every method")
    for name in names:
        base = name[: -len(ORACLE_SUFFIX)] if name.endswith(ORACLE_SUFFIX) else name
        if base not in known:
            choices = ", ".join(known)
            raise InputError(f"unknown method {name!r}; choose from {choices} (add -oracle for a label-tuned τ)")
    if len(set(names)) != len(names):
        raise InputError("a method is listed twice in --methods")
    return names


# --------------------------------------------------------------------------- metrics


def _check(labels: np.ndarray, predicted: np.ndarray | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.all(np.isin(labels, (0, 1))):
        raise ValueError("labels must be a 1-D array of 0 and 1")
    if predicted is not None and np.shape(predicted) != labels.shape:
        raise ValueError("predictions and labels differ in length")
    return labels.astype(bool)


def confusion(labels: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int, int]:
    """``tp, fp, tn, fn`` of boolean predictions against 0/1 labels (1 = changed)."""
    truth = _check(labels, predicted)
    pred = np.asarray(predicted, bool)
    return (int(np.sum(pred & truth)), int(np.sum(pred & ~truth)), int(np.sum(~pred & ~truth)),
            int(np.sum(~pred & truth)))


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def accuracy(labels, predicted) -> float:
    """(tp + tn) / n."""
    tp, fp, tn, fn = confusion(labels, predicted)
    return _ratio(tp + tn, tp + fp + tn + fn)


def precision(labels, predicted) -> float:
    """tp / (tp + fp); 0 when nothing is predicted changed."""
    tp, fp, _, _ = confusion(labels, predicted)
    return _ratio(tp, tp + fp)


def recall(labels, predicted) -> float:
    """tp / (tp + fn); 0 when no pair is changed."""
    tp, _, _, fn = confusion(labels, predicted)
    return _ratio(tp, tp + fn)


def f1_score(labels, predicted) -> float:
    """2 tp / (2 tp + fp + fn) (the harmonic mean of precision and recall)."""
    tp, fp, _, fn = confusion(labels, predicted)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def balanced_accuracy(labels, predicted) -> float:
    """Mean of the true-positive and true-negative rates (each over the classes present)."""
    tp, fp, tn, fn = confusion(labels, predicted)
    rates = [tp / (tp + fn)] if tp + fn else []
    rates += [tn / (tn + fp)] if tn + fp else []
    return float(np.mean(rates)) if rates else 0.0


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of the scores (threshold-free); NaN when only one class is present."""
    truth = _check(labels, scores)
    if truth.all() or not truth.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth.astype(int), np.asarray(scores, np.float64)))


def oracle_threshold(labels, scores) -> float:
    """The τ that maximises accuracy of ``score > tau`` on the labels (an upper bound; uses the labels).

    Candidates are midpoints between consecutive distinct scores and the two
    ends; ties go to the lowest τ.
    """
    _check(labels, scores)
    values = np.unique(np.asarray(scores, np.float64))
    candidates = np.r_[values[0] - 1.0, (values[:-1] + values[1:]) / 2.0, values[-1]]
    best = max(candidates, key=lambda t: (accuracy(labels, np.asarray(scores) > t), -t))
    return float(best)


def metrics(labels, scores, tau: float) -> dict[str, float]:
    """Every metric of ``score > tau`` against the labels, and τ."""
    predicted = np.asarray(scores, np.float64) > tau
    return {
        "accuracy": accuracy(labels, predicted),
        "precision": precision(labels, predicted),
        "recall": recall(labels, predicted),
        "f1": f1_score(labels, predicted),
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "roc_auc": roc_auc(labels, scores),
        "tau": float(tau),
    }


# --------------------------------------------------------------------------- evaluation


@dataclass
class MethodResult:
    """One method's scores, τ and metrics."""

    name: str
    scores: np.ndarray
    tau: float
    metrics: dict[str, float]
    oracle: bool = False
    seconds: float = 0.0


@dataclass
class Evaluation:
    """Every method on one set."""

    dataset: str
    n_pairs: int
    n_changed: int
    results: dict[str, MethodResult]
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """``{"dataset", "n_pairs", "methods": {name: {accuracy, precision, recall, f1, balanced_accuracy, roc_auc, tau}}}``.

        NaN (ROC AUC of a one-class set) is written as ``null``. Also ``params`` (settings asked and used,
        ``n_pseudo_used`` per method), ``timings_s`` (seconds each method scored its pairs and pseudo pairs;
        an oracle row reuses its method's scores) and the versions.
        """
        from . import __version__
        from .runtime import library_versions

        return {
            "dataset": self.dataset,
            "n_pairs": self.n_pairs,
            "n_changed": self.n_changed,
            "methods": {
                name: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.metrics.items()}
                for name, r in self.results.items()
            },
            "oracle_methods": [name for name, r in self.results.items() if r.oracle],
            "params": self.params,
            "timings_s": {name: round(r.seconds, 3) for name, r in self.results.items() if not r.oracle},
            "planetcd_version": __version__,
            "versions": library_versions(),
        }

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as standard JSON (any non-finite number as ``null``), atomically."""
        from .report import write_json

        return write_json(path, self.to_dict())

    def scores_csv(self, ids: list[str], labels: np.ndarray) -> str:
        """Per-pair table: ``id,label`` then each method's score and 0/1 decision (``NAME``, ``NAME_changed``)."""
        names = list(self.results)
        header = ["id", "label"] + [c for n in names for c in (n, f"{n}_changed")]
        lines = [",".join(header)]
        for k, pair_id in enumerate(ids):
            row = [str(pair_id), str(int(labels[k]))]
            for n in names:
                r = self.results[n]
                row += [f"{r.scores[k]:.6g}", str(int(r.scores[k] > r.tau))]
            lines.append(",".join(row))
        return "\n".join(lines) + "\n"

    def write_scores(self, path: str | os.PathLike, ids: list[str], labels: np.ndarray) -> Path:
        path = Path(path)
        with atomic_output(path) as tmp:
            tmp.write_text(self.scores_csv(ids, labels), encoding="utf-8")
        return path

    def to_markdown(self, title: str | None = None) -> str:
        """The table: one row per method, oracle rows marked † with a footnote."""
        lines = []
        if title:
            lines += [f"### {title}", ""]
        lines.append(f"{self.n_pairs} pairs ({self.n_changed} changed) from `{self.dataset}`.")
        lines.append("")
        lines.append("| method | " + " | ".join(_HEADERS) + " |")
        lines.append("|---|" + "---:|" * len(_HEADERS))
        for name, r in self.results.items():
            label = f"{name} †" if r.oracle else name
            cells = [_cell(r.metrics[k], k) for k in METRIC_NAMES]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if any(r.oracle for r in self.results.values()):
            lines += ["", "† oracle: τ chosen on the labels (maximum accuracy) — an upper bound, not a result; "
                      "every other τ is chosen without labels."]
        return "\n".join(lines) + "\n"

    def write_markdown(self, path: str | os.PathLike, title: str | None = None) -> Path:
        path = Path(path)
        with atomic_output(path) as tmp:
            tmp.write_text(self.to_markdown(title), encoding="utf-8")
        return path


def _cell(value: float, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4g}" if key == "tau" else f"{value:.3f}"


def evaluate(
    changeset: ChangeSet,
    methods: list[str] | tuple[str, ...] | None = None,
    *,
    seed: int = 0,
    weights=None,
    device: str = "auto",
    n_pseudo: int | None = None,
    max_shift: float | None = None,
    progress: bool = False,
    precision: str = "auto",
) -> Evaluation:
    """Score every method on the same pairs and compute the metrics.

    Parameters
    ----------
    changeset : ChangeSet
    methods : list of str, optional
        Names from :data:`planetcd.change.patch_pairs.METHOD_NAMES`, or a name
        with ``-oracle`` appended (label-tuned τ); default: all methods, then
        ``paper-oracle`` and ``nn-oracle``.
    seed : int
        Seed of every method's pseudo-pair draw.
    weights, device
        VGG-16 weights and where it runs (see :func:`planetcd.features.resolve_vgg16_weights`); each trunk
        loads once per process (:func:`planetcd.features.cached_trunk`).
    n_pseudo : int, optional
        Pseudo-unchanged pairs per method (default: the method's own, at least 100).
    max_shift : float, optional
        Largest misregistration expected between pre and post, pixels per axis: the
        pseudo-unchanged pairs are shifted up to it. Default: found from the pairs themselves
        (``max_shift="auto"`` of :func:`planetcd.change.patch_pairs.score_pairs`: the 90th percentile of
        the pairs' displacements + 1 px, at least 4 px for ``nn`` and the paper's 10 px for the others);
        the value each method used is in ``params["max_shift_used"]``. Never from the labels.
    progress : bool
        Show a progress bar per method on stderr (pairs and pseudo pairs scored).
    precision : {"auto", "fp32", "bf16"}
        Precision of the VGG trunk, one for every method and its pseudo pairs
        (:func:`planetcd.precision.resolve_precision`); recorded in ``params["precision"]``.

    Returns
    -------
    Evaluation
    """
    from tqdm.auto import tqdm

    from .change.nn import nn_score_record
    from .change.patch_pairs import METHODS, score_pairs
    from .features import pick_device
    from .precision import precision_record, resolve_precision

    asked = precision
    used = resolve_precision(asked, pick_device(device))
    methods = list(methods) if methods else list(default_methods())
    parse_methods(",".join(methods))  # checks names
    if len(changeset) == 0:
        raise InputError(f"{changeset.name}: no pairs")
    labels = np.asarray(changeset.labels, np.int64)
    scored: dict[str, tuple[np.ndarray, float, float]] = {}
    shifts_used: dict[str, float | None] = {}
    sun_turns: dict[str, float] = {}  # nn: the sun turn of the relit pairs' pseudo pairs (matched_sun_turn)
    pseudo_used: dict[str, int | None] = {}  # pseudo-unchanged pairs each method scored (None: k-means τ)
    results: dict[str, MethodResult] = {}
    for name in methods:
        oracle = name.endswith(ORACLE_SUFFIX)
        base = name[: -len(ORACLE_SUFFIX)] if oracle else name
        if base not in scored:
            t0 = time.perf_counter()
            with tqdm(total=None, disable=not progress, desc=base, unit="pair", leave=True,
                      dynamic_ncols=True) as bar:

                def advance(done: int, total: int, bar=bar) -> None:
                    bar.total = total
                    bar.update(done)

                out = score_pairs(changeset.pre, changeset.post, method=base, seed=seed, device=device,
                                  weights=weights, progress=advance, precision=used,
                                  **({} if n_pseudo is None else {"n_pseudo": n_pseudo}),
                                  **({} if max_shift is None else {"max_shift": float(max_shift)}))
            scored[base] = (np.asarray(out.scores, np.float64), float(out.tau), time.perf_counter() - t0)
            shifts_used[base] = out.max_shift
            pseudo_used[base] = None if out.pseudo_scores is None else int(len(out.pseudo_scores))
            if out.pseudo_sun_turn is not None:
                sun_turns[base] = out.pseudo_sun_turn
        scores, tau, seconds = scored[base]
        if oracle:
            tau = oracle_threshold(labels, scores)
        results[name] = MethodResult(name, scores, tau, metrics(labels, scores, tau), oracle, seconds)
    params = {"seed": seed, "methods": methods, "n_pseudo": n_pseudo, "n_pseudo_used": pseudo_used,
              "max_shift": "auto" if max_shift is None else max_shift, "max_shift_used": shifts_used,
              "pseudo_sun_turn": sun_turns, "precision": precision_record(asked, used)}
    if any(METHODS[base].kind == "nn" for base in scored):
        params["nn_score"] = nn_score_record()  # how nn turns a disagreement map into a pair's score
    return Evaluation(changeset.name, len(labels), int(labels.sum()), results, params)
