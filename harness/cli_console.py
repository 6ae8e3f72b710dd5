"""The command line's two consoles: errors and notes on stderr, tables on stdout."""

from __future__ import annotations

import sys

from rich.console import Console

err = Console(stderr=True)
# Result tables stay readable when piped to a file or CI log (rich would squeeze them to 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)
