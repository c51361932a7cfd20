"""The ``planetcd`` command line: a click group, one module per command."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings

import click

from .. import __version__
from ..errors import PlanetcdError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of the command line: one log line, no source line."""
    logging.getLogger("planetcd").warning("warning: %s", _one_line(message))


@contextlib.contextmanager
def warnings_as_log_lines():
    """Send every Python warning (rasterio's NotGeoreferencedWarning, UserWarnings...) to the
    ``planetcd`` logger as one line while a command runs."""
    saved = warnings.showwarning
    warnings.showwarning = _warning_to_log
    try:
        yield
    finally:
        warnings.showwarning = saved


class PlanetcdGroup(click.Group):
    """A group that turns planetcd errors into one line on stderr and an exit code.

    A command's usage error (a bad option value, a missing argument) is one line too, naming the command's
    ``--help``, with click's exit code 2.

    Python warnings become one log line each; a GDAL error that escapes a command
    is reported in one line too (exit code 1), never as a traceback.
    """

    def invoke(self, ctx):
        from ..runtime import tune_allocator_from_env

        tune_allocator_from_env()  # PLANETCD_MALLOC_TUNING=on: freed memory kept for reuse (planetcd.runtime)
        try:
            with warnings_as_log_lines():
                return super().invoke(ctx)
        except PlanetcdError as exc:
            click.echo(f"planetcd: error: {_one_line(exc.cli_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # a bad option value or a missing argument: one line, not click's usage block
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"planetcd: error: {_one_line(exc.format_message())}{where}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("planetcd: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            from ..raster import is_gdal_error  # a rasterio / GDAL error that escaped the library's own checks

            if not is_gdal_error(exc):
                raise
            detail = exc.__cause__ if exc.__cause__ is not None and "previous exception" in str(exc) else exc
            click.echo(f"planetcd: error: {_one_line(detail) or type(exc).__name__}", err=True)
            sys.exit(1)


@click.group(cls=PlanetcdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="planetcd")
def main() -> None:
    """Find what changed between two orbital images, and find, count and date craters."""


# One line per command module; each module defines a click command of the same name.
from .age import age  # noqa: E402
from .benchmark import benchmark  # noqa: E402
from .demo import demo  # noqa: E402
from .detect import detect  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .match import match  # noqa: E402
from .monitor import monitor  # noqa: E402
from .segment import segment  # noqa: E402
from .train import train  # noqa: E402

_COMMANDS: tuple = (detect, demo, age, match, segment, train, evaluate, benchmark, monitor)

for _command in _COMMANDS:
    main.add_command(_command)
