"""Extensions from installed packages: a package declares modules under the entry-point groups below, and the
harness imports them when it loads that kind of extension, so their `@register` runs beside the built-in ones.

    [project.entry-points."harness.metrics"]
    answer_words = "my_package.metrics"      # a module that registers one or more metrics

A plugin that fails to import is one line naming its package and entry point (exit 2 through the CLI): an
extension the suite relies on is never skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from harness.errors import HarnessError, first_line

GROUPS = ("harness.metrics", "harness.backends", "harness.detectors", "harness.sources", "harness.signals")


@dataclass(frozen=True)
class Plugin:
    group: str
    name: str
    module: str
    distribution: str | None
    version: str | None


LOADED: list[Plugin] = []


def load(group: str) -> list[Plugin]:
    """Import every module installed packages declare under `group` (once per process)."""
    if group not in GROUPS:
        raise ValueError(f"unknown extension group {group!r}")
    found = []
    for entry in metadata.entry_points(group=group):
        dist = entry.dist.name if entry.dist else None
        plugin = Plugin(group, entry.name, entry.value, dist, entry.dist.version if entry.dist else None)
        if plugin in LOADED:
            continue
        try:
            entry.load()
        except Exception as exc:  # any error of third-party code: named, not a traceback
            raise HarnessError(f"plugin {entry.name!r} ({group} entry point of {dist or 'an unknown package'}, "
                               f"module {entry.value}) failed to load: {first_line(exc)}") from None
        LOADED.append(plugin)
        found.append(plugin)
    return found
