"""A stand-in for the harness in tests/test_lifecycle.py: under a guard it starts a cheap "server" through the same
registry the vLLM servers go through (a shell with a child in its process group, as vLLM's engine, and one in a
session of its own, as torchrun's workers), writes the server's pid, and waits to be stopped; the CLI's way out.

    python -m tests.lifecycle_child PID_FILE [--ignore-term]

`--ignore-term`: the server and its children ignore SIGTERM, so stopping it waits out the grace period."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from harness import lifecycle

WORKER = "import os, time; os.setsid(); time.sleep(300)"


def main() -> None:
    pid_file = Path(sys.argv[1])
    ignore = "trap '' TERM; " if "--ignore-term" in sys.argv else ""
    script = f"{ignore}sleep 300 & {sys.executable} -c '{WORKER}' & wait"
    try:
        with lifecycle.guard():
            server = lifecycle.start(["sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pid_file.write_text(f"{server.pid}\n")
            while True:
                time.sleep(0.1)
    except lifecycle.Interrupted as exc:
        exc.exit()


if __name__ == "__main__":
    main()
