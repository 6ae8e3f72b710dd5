"""The one error type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

import re
from typing import Any

# user:password@ inside any URL (http, https, postgresql, mysql…); what is shown and stored keeps the rest.
_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


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


def redact(text: str) -> str:
    """Text as shown or stored: any user:password@ inside a URL removed."""
    return _CREDENTIALS.sub(r"\1", text)


def redact_all(value: Any) -> Any:
    """A JSON-like record with every string redacted (run.json holds the suite's URLs)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_all(v) for v in value]
    return value
