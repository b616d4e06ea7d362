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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread wherever Ctrl-C raises KeyboardInterrupt, so both
    stop the work the same way (temporary files removed, run.json marked interrupted); only
    the exit code differs: 143 instead of 130, as a shell reports a signal 15."""


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or Terminated) behind an exception: a signal that lands inside a library turns
    into that library's error (Typer's silent `Exit(130)`, transformers' lazy import reporting a
    ModuleNotFoundError), with the interrupt as its cause or context."""
    seen: BaseException | None = exc
    for _ in range(8):
        if isinstance(seen, KeyboardInterrupt):
            return seen
        if seen is None:
            return None
        seen = seen.__cause__ or seen.__context__
    return None


def interrupt_exit_code(exc: BaseException) -> int:
    return 143 if isinstance(exc, Terminated) else 130


class Interrupted(SpecialistError):
    """Work stopped by Ctrl-C or SIGTERM. The message starts with "interrupted" and says what
    was kept; the exit code is 130 (Ctrl-C) or 143 (SIGTERM)."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message, exit_code=interrupt_exit_code(cause))
