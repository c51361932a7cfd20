"""The ``planetcd`` command line: a click group, one module per command."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import PlanetcdError


class PlanetcdGroup(click.Group):
    """A group that turns planetcd errors into one line on stderr and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PlanetcdError as exc:
            click.echo(f"planetcd: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("planetcd: interrupted", err=True)
            sys.exit(130)


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
