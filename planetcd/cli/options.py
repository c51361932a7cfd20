"""Options and behaviour shared by every ``planetcd`` command (one place, as in rio)."""

from __future__ import annotations

import contextlib
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
precision_opt = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="Network precision for the whole run: bf16 (bfloat16 autocast), fp32, or auto: bf16 where the CPU "
         "(AVX512-BF16/AMX) or GPU runs it natively, else fp32. Recorded in the run's json.",
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

scheduler_opt = click.option(
    "--scheduler", default=None, help="Address of a Dask scheduler to run on (e.g. tcp://host:8786)."
)
workers_opt = click.option(
    "--workers", type=click.IntRange(1), default=None, help="Start a local Dask cluster of N worker processes."
)


def dask_options(func):
    """Attach --scheduler/--workers (a Dask cluster for the per-tile work) to a command."""
    return scheduler_opt(workers_opt(func))


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None):
    """A Dask client for ``--scheduler`` / ``--workers`` (``None``: a single-process run), closed on exit.

    A local cluster started for ``--workers`` is closed with it; a remote scheduler keeps running.
    """
    from ..errors import InputError

    if scheduler is None and workers is None:
        yield None
        return
    if scheduler is not None and workers is not None:
        raise InputError("give --scheduler or --workers, not both")
    from ..distributed import make_client

    client = make_client(scheduler=scheduler, workers=workers)
    try:
        yield client
    finally:
        cluster = getattr(client, "cluster", None) if workers is not None else None
        client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def dask_runner(scheduler: str | None, workers: int | None):
    """A :class:`planetcd.distributed.DaskRunner` for ``--scheduler`` / ``--workers``, or ``None`` (a local run)."""
    with dask_client(scheduler, workers) as client:
        if client is None:
            yield None
        else:
            from ..distributed import DaskRunner

            yield DaskRunner(client)


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
