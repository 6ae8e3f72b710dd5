"""`harness dashboard` for real: the server starts on 127.0.0.1 and the scorecard renders in headless
Chromium (Debian's). The screenshot is kept in test-artifacts/ for people to look at."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_browser
from tests.test_dashboard import results  # noqa: F401 (the module-scoped run fixture)

CHROMIUM = require_browser()
pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scorecard_renders_in_chromium(results, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "dashboard", "--results", str(results),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the dashboard did not start")
        with socket.socket() as s:  # bound to loopback only
            s.settimeout(1)
            lan = socket.gethostbyname(socket.gethostname())
            assert lan.startswith("127.") or s.connect_ex((lan, port)) != 0
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/?page=Scorecard")
            page.get_by_text("Metrics (90% bootstrap intervals)").wait_for(timeout=60000)
            page.get_by_text("Manifest").first.wait_for(timeout=10000)
            page.wait_for_timeout(2000)  # let the tables and charts draw
            shot = tmp_path / "scorecard.png"
            page.screenshot(path=str(shot), full_page=True)
            heading = page.inner_text("h1")
            body = page.inner_text("body")
            browser.close()
        assert heading == "Scorecard"
        assert "tiny-zero" in body or "tiny-fewshot" in body
        assert shot.stat().st_size > 10_000
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "dashboard-scorecard.png")
    finally:
        server.terminate()
        server.wait(timeout=30)
    with socket.socket() as s:  # the server is gone with the command (nothing left listening)
        assert s.connect_ex(("127.0.0.1", port)) != 0
