"""Processes the harness starts never outlive it: servers and torchrun launches, stopped on every way out.

Each is started by `start`, in a session of its own (its process group is its pid, so a Ctrl-C at the terminal
reaches the harness alone), and stays registered here until `stop` has seen its group gone, with the groups of its
descendants (torchrun gives each worker a session of its own; they are read from /proc where there is one).
`guard()` (around a run, a bench, each vLLM server pool and each torchrun launch) turns SIGTERM, SIGINT and SIGHUP
into `Interrupted`, so every `finally` and context manager on the way out runs and stops what it started; each guard
stops what was started inside it and not stopped, the outermost one after a signal everything still registered, and
it puts back the handlers it replaced (a signal already ignored, as under `nohup`, stays ignored).

A signal that arrives while a process is being started or stopped is held until that is done, so no process is left
started but unregistered or half-stopped; a second signal SIGKILLs every registered group at once, rather than
cutting the stopping short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from harness.errors import redact

TERM_GRACE_S = 30.0  # SIGTERM, then this long before SIGKILL (vLLM and torchrun shut their workers down meanwhile)
KILL_WAIT_S = 10.0
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
_PROC = Path("/proc")


class Interrupted(BaseException):
    """The harness was stopped by a signal. A BaseException, as KeyboardInterrupt is, so `except Exception` never
    swallows it; `message` is the one line the CLI prints (the pipeline adds where the run is and how to resume it)."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.message = message

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number (130 for SIGINT)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return self.message or f"interrupted by {self.name}; every process the harness started is stopped"

    def exit(self) -> NoReturn:
        """The CLI's way out: the line on stderr (none where the terminal hung up) and the exit code."""
        with contextlib.suppress(OSError):
            print(redact(str(self)), file=sys.stderr)
        sys.exit(self.exit_code)


@dataclass
class _State:
    running: dict[int, subprocess.Popen[Any]] = field(default_factory=dict)  # leader pid -> process, until stopped
    groups: dict[int, set[int]] = field(default_factory=dict)  # leader pid -> its groups and its descendants' seen
    frames: list[list[int]] = field(default_factory=list)  # per open guard (main thread), the pids started in it
    previous: dict[int, Any] = field(default_factory=dict)  # the handlers the outermost guard replaced
    received: list[int] = field(default_factory=list)  # signals since the outermost guard opened
    raised: bool = False  # the first of them has been raised as Interrupted
    holding: int = 0  # > 0: a signal is held until the start or stop under way is done


_S = _State()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_signal(signum: int, frame: object) -> None:
    _S.received.append(signum)
    if len(_S.received) > 1:
        # Asked again: whatever is still running is killed now, and the unwinding under way goes on undisturbed.
        for process in list(_S.running.values()):
            _send(_groups(process), signal.SIGKILL)
        return
    if not _S.holding:
        _S.raised = True
        raise Interrupted(signum)


@contextlib.contextmanager
def _held() -> Iterator[None]:
    """No Interrupted in the middle of this block; a signal it held is raised when it ends (without an error)."""
    if not _main_thread():  # signals reach the main thread only
        yield
        return
    _S.holding += 1
    try:
        yield
    finally:
        _S.holding -= 1
    if not _S.holding and _S.received and not _S.raised and _S.frames:
        _S.raised = True
        raise Interrupted(_S.received[0])


def _install() -> dict[int, Any]:
    previous = {}
    for sig in SIGNALS:
        current = signal.getsignal(sig)
        if current is not signal.SIG_IGN:  # ignored on purpose (nohup, a background job): left so
            previous[sig] = current
            signal.signal(sig, _on_signal)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """While open, SIGTERM, SIGINT and SIGHUP raise `Interrupted`; on the way out, what was started inside and not
    stopped is stopped (after a signal, at the outermost guard, everything registered). Nests; a no-op outside the
    main thread, where no signal arrives (whoever starts a process there still stops it on the way out)."""
    if not _main_thread():
        yield
        return
    outer = not _S.frames
    if outer:
        _S.received.clear()
        _S.raised = False
        _S.previous = _install()
    _S.frames.append([])
    try:
        yield
    finally:
        mine = _S.frames.pop()
        try:
            left = list(_S.running) if outer and _S.received else [pid for pid in mine if pid in _S.running]
            stop(*[_S.running[pid] for pid in left])
        finally:
            if outer:
                _restore(_S.previous)
    if outer and _S.received and not _S.raised:  # a signal held by the last stop, the block having ended well
        _S.raised = True
        raise Interrupted(_S.received[0])


def start(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """`cmd` in a session of its own, registered (in the innermost guard too) until `stop` sees it gone."""
    with _held():
        process = subprocess.Popen(cmd, start_new_session=True, **popen)
        _S.running[process.pid] = process
        if _S.frames and _main_thread():
            _S.frames[-1].append(process.pid)
    return process


def stop(*processes: subprocess.Popen[Any], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM to each process's group and its descendants' groups, SIGKILL to what is left after `grace_s`; returns
    once they are gone (or KILL_WAIT_S after the SIGKILL) and deregisters them. Signals meanwhile are held."""
    # One already stopped is left alone: its group number may be another's by now.
    processes = tuple(p for p in processes if p.pid in _S.running or p.poll() is None)
    if not processes:
        return
    with _held():
        for p in processes:
            _send(_groups(p), signal.SIGTERM)
        if not _wait_gone(processes, time.monotonic() + grace_s):
            for p in processes:
                _send(_groups(p), signal.SIGKILL)
            _wait_gone(processes, time.monotonic() + KILL_WAIT_S)
        for p in processes:
            _S.running.pop(p.pid, None)
            _S.groups.pop(p.pid, None)


def running() -> list[int]:
    """The pids (= process groups) of the processes started and not yet stopped."""
    return list(_S.running)


def _groups(process: subprocess.Popen[Any]) -> set[int]:
    """The groups of a process and of its descendants, as far as seen: read again while it runs (its children are
    found through it), kept once it is gone (its pid may be another process's by then)."""
    seen = _S.groups.setdefault(process.pid, {process.pid})
    if process.poll() is None:
        seen |= _groups_of(process.pid)
    return seen


def _wait_gone(processes: Sequence[subprocess.Popen[Any]], deadline: float) -> bool:
    while True:
        groups = set().union(*(_groups(p) for p in processes))  # a live leader may have started more since
        if all(p.poll() is not None for p in processes) and not _live_groups(groups):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _send(groups: set[int], sig: int) -> None:
    for group in groups - {os.getpgrp()}:  # never the harness's own
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def _table() -> list[tuple[int, int, int, str]] | None:
    """(pid, parent, process group, state) of every process, from /proc; None where there is none."""
    if not (_PROC / "self" / "stat").is_file():
        return None
    rows = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last one.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        rows.append((int(entry.name), int(fields[1]), int(fields[2]), fields[0]))
    return rows


def _groups_of(pid: int) -> set[int]:
    """The process group led by `pid` and those of its live descendants (torchrun's workers have their own)."""
    table = _table() or []
    children: dict[int, list[tuple[int, int]]] = {}
    for child, parent, group, _ in table:
        children.setdefault(parent, []).append((child, group))
    groups, todo = {pid}, [pid]
    while todo:
        for child, group in children.get(todo.pop(), []):
            groups.add(group)
            todo.append(child)
    return groups


def _live_groups(groups: set[int]) -> set[int]:
    """Those of `groups` where a process still runs (a zombie waiting for its parent to reap it does not)."""
    table = _table()
    if table is not None:
        return {g for _, _, g, state in table if g in groups and state not in "ZX"}
    live = set()
    for group in groups:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        live.add(group)
    return live
