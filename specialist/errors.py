"""Errors the command line reports as one located line and an exit code, never a traceback."""

from __future__ import annotations


class SpecialistError(Exception):
    """A problem the user can fix. exit_code follows the CLI contract: 1 = the input has
    errors the command found and reported, 2 = usage or unreadable input."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ModelNotFound(SpecialistError):
    """A model reference that resolves to nothing loadable."""


class ConfigError(SpecialistError):
    """Invalid settings (YAML file or command-line overrides)."""
