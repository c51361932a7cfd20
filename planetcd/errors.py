"""Exceptions that the command line turns into a one-line message and an exit code."""

from __future__ import annotations


class PlanetcdError(Exception):
    """Base class of every error planetcd reports to a user (exit code 1)."""

    exit_code = 1

    def cli_message(self) -> str:
        """The message as the command line says it (API arguments named as options where they differ)."""
        return str(self)


class InputError(PlanetcdError):
    """An input file or array cannot be used (missing, wrong format, empty, too small, mismatched)."""


class OutputExistsError(PlanetcdError):
    """An output exists and ``overwrite`` was not given.

    The library names the argument (``overwrite=True``); the command line, its option (``--overwrite``).
    """

    def __init__(self, message: str, *, replaceable: bool = True):
        self.replaceable = replaceable
        super().__init__(f"{message}; pass overwrite=True to replace" if replaceable else message)

    def cli_message(self) -> str:
        text = str(self)
        return text.replace("pass overwrite=True to replace", "use --overwrite to replace") if self.replaceable else text


class WeightsNotFoundError(PlanetcdError):
    """No usable weights file could be found or downloaded (exit code 2)."""

    exit_code = 2


class WeightsError(PlanetcdError):
    """A weights file exists but does not hold what the model needs."""
