"""Options and behaviour shared by every ``planetcd`` command (one place, as in rio)."""

from __future__ import annotations

import logging

import click

verbose_opt = click.option("-v", "--verbose", count=True, help="More messages (repeat for debug).")
quiet_opt = click.option("-q", "--quiet", count=True, help="Fewer messages; no progress bar.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
device_opt = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where networks run (auto: cuda when available).",
)
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
outdir_opt = click.option(
    "-o",
    "--outdir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (created if missing).",
)
weights_opt = click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="VGG-16 weights file (else $PLANETCD_VGG16_WEIGHTS, the torch hub cache, then download).",
)


def common_options(func):
    """Attach -v/-q to a command."""
    return verbose_opt(quiet_opt(func))


def setup_logging(verbose: int, quiet: int) -> bool:
    """Configure the ``planetcd`` logger on stderr; return whether progress bars are shown."""
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO + 10 * (quiet - verbose)))
    logger = logging.getLogger("planetcd")
    logger.handlers.clear()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return quiet == 0
