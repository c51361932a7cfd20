"""``planetcd evaluate DIR``: every change method on one labelled set, one table."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .options import common_options, device_opt, overwrite_opt, precision_opt, seed_opt, setup_logging, weights_opt

log = logging.getLogger("planetcd")

LAYOUTS = ("auto", "canonical", "marsbench", "saha")


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--methods", default=None,
              help="Comma-separated methods [default: all, then paper-oracle and nn-oracle]. "
                   "A name ending in -oracle uses a τ tuned on the labels.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the metrics as JSON.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None,
              help="Write the table as Markdown.")
@click.option("--scores", "scores_path", type=click.Path(dir_okay=False), default=None,
              help="Write every pair's score and decision per method as CSV.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True,
              help="canonical (pre/, post/, labels.csv), marsbench (annotation.csv) or saha (change/, no_change/).")
@click.option("--split", default=None, help="Evaluate only this split (train/val/test).")
@click.option("--labels", "labels_dir", type=click.Path(file_okay=False), default=None,
              help="saha layout: folder holding change/ and no_change/ [default: DIR].")
@click.option("--title", default=None, help="Heading of the Markdown table.")
@click.option("--n-pseudo", type=click.IntRange(2), default=None,
              help="Pseudo-unchanged pairs per method [default: the method's own, at least 100].")
@click.option("--max-shift", type=click.FloatRange(0), default=None,
              help="Largest misregistration expected between pre and post, px per axis: pseudo-unchanged pairs "
                   "are shifted up to it [default: found from the pairs' own displacements, at least 4 px for nn "
                   "and 10 (the paper's) for the others].")
@weights_opt
@device_opt
@precision_opt
@seed_opt
@overwrite_opt
@common_options
def evaluate(directory, methods, json_path, markdown_path, scores_path, layout, split, labels_dir, title, n_pseudo, max_shift, weights, device,
             precision, seed, overwrite, verbose, quiet):
    """Score every change method on the labelled pairs in DIR and print one table.

    Columns: accuracy, precision, recall, F1, balanced accuracy, ROC AUC and τ.
    τ is chosen without labels, except for methods named *-oracle (marked †). A progress bar per
    method goes to stderr (-q hides it).
    """
    from ..datasets.published import detect_layout, load_any
    from ..evaluate import evaluate as run_evaluate
    from ..evaluate import parse_methods
    from ..raster import check_writable
    from ..raster import check_output_places, removed_on_failure

    show_progress = setup_logging(verbose, quiet)
    names = parse_methods(methods)
    outputs = [Path(p) for p in (json_path, markdown_path, scores_path) if p]
    check_writable(outputs, overwrite)
    check_output_places(files=outputs)  # before the work, not at its end
    changeset = load_any(directory, layout=layout, split=split, labels_dir=labels_dir)
    log.info("%s: %d pairs (%d changed), %s", changeset.name, len(changeset), int(changeset.labels.sum()),
             "x".join(map(str, changeset.pre.shape[1:])))
    result = run_evaluate(changeset, names, seed=seed, weights=weights, device=device, n_pseudo=n_pseudo,
                          max_shift=max_shift, progress=show_progress, precision=precision)
    for name, method in result.results.items():
        log.debug("%s scored in %.1f s", name, method.seconds)
    # which pairs were scored: the set as read (the JSON's "dataset" is only the folder's name)
    used_layout = layout if layout != "auto" else ("saha" if labels_dir is not None else detect_layout(directory))
    result.params["set"] = {"path": str(Path(directory).resolve()), "layout": used_layout, "split": split,
                            "labels": None if labels_dir is None else str(Path(labels_dir).resolve())}
    table = result.to_markdown(title)
    with removed_on_failure(outputs):  # all of this run's outputs or none: the same command works again
        if json_path:
            result.to_json(json_path)
        if markdown_path:
            result.write_markdown(markdown_path, title)
        if scores_path:
            result.write_scores(scores_path, changeset.ids, changeset.labels)
    click.echo(table, nl=False)
