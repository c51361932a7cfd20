"""Exceptions that the command line turns into a one-line message and an exit code."""

from __future__ import annotations


class PlanetcdError(Exception):
    """Base class of every error planetcd reports to a user (exit code 1)."""

    exit_code = 1


class InputError(PlanetcdError):
    """An input file or array cannot be used (missing, wrong format, empty, too small, mismatched)."""


class OutputExistsError(PlanetcdError):
    """An output exists and ``overwrite`` was not given."""


class WeightsNotFoundError(PlanetcdError):
    """No usable weights file could be found or downloaded (exit code 2)."""

    exit_code = 2


class WeightsError(PlanetcdError):
    """A weights file exists but does not hold what the model needs."""
