"""What the signal tests look at: processes as Linux's /proc shows them, independently of `harness.lifecycle`."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

PROC = Path("/proc")
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]

if not (PROC / "self" / "stat").is_file():
    pytest.skip("the signal tests read processes from /proc (Linux)", allow_module_level=True)


def _stat(pid: int) -> tuple[int, int, str, str, str] | None:
    """(parent, process group, state, start time, command name) of a process, or None once it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    head, rest = text.rsplit(")", 1)
    fields = rest.split()
    return int(fields[1]), int(fields[2]), fields[0], fields[19], head.split("(", 1)[1]


def _all() -> dict[int, tuple[int, int, str, str, str]]:
    out = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            out[int(entry.name)] = stat
    return out


@dataclass(frozen=True)
class Proc:
    started: str  # tells a process from a later one given the same pid
    name: str
    group: int


def descendants(pid: int) -> dict[int, Proc]:
    """Every live descendant of `pid`, whatever its session or process group."""
    table = _all()
    found: dict[int, Proc] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, group, state, started, name) in table.items():
            if ppid == parent and state not in "ZX" and child not in found:
                found[child] = Proc(started, name, group)
                todo.append(child)
    return found


def still_running(processes: dict[int, Proc]) -> list[str]:
    """Those of `processes` (as `descendants` gave them) that still run: the same pid and start time, not a zombie."""
    left = []
    for pid, proc in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] not in "ZX" and stat[3] == proc.started:
            left.append(f"{pid} ({proc.name}, group {proc.group})")
    return left


def kill_left(processes: dict[int, Proc]) -> None:
    """At a test's end, passed or failed: SIGKILL to what still runs of `processes` and of their process groups, so
    that a test showing the harness orphaned its servers does not leave them running."""
    live = {pid for pid, proc in processes.items() if (stat := _stat(pid)) is not None and stat[3] == proc.started}
    for group in {processes[pid].group for pid in live} - {os.getpgrp()}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for pid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def command_line(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def group_members(group: int) -> list[str]:
    """The live processes of a process group."""
    return [f"{pid} ({stat[4]})" for pid, stat in _all().items() if stat[1] == group and stat[2] not in "ZX"]


def default_signals() -> None:
    """For a child process: SIGTERM, SIGINT and SIGHUP at their defaults, whatever the test runner's parent ignores
    (a runner under nohup, or started in the background, passes SIGHUP or SIGINT on ignored)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
