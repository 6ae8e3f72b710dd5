"""The one error type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class HarnessError(Exception):
    """Bad input or an unusable environment: a message a user can act on, naming the file or field."""


class ConfigError(HarnessError):
    def __init__(self, path: object, field: str | None, message: str):
        where = f"{path}" + (f": {field}" if field else "")
        super().__init__(f"{where}: {message}")
        self.path = path
        self.field = field
        self.message = message


def first_line(exc: BaseException) -> str:
    """An exception as one line for an error message (third-party errors span many), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
