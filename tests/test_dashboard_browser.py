"""`harness dashboard` for real: the server starts on 127.0.0.1 and the scorecard renders in headless
Chromium (Debian's). The screenshot is kept in test-artifacts/ for people to look at."""

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_browser
from tests.test_dashboard import own_results, results  # noqa: F401 (the run fixtures)

CHROMIUM = require_browser()
pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dashboard(folder: Path) -> Iterator[int]:
    """`harness dashboard` on a free port of 127.0.0.1, stopped afterwards; yields the port."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "dashboard", "--results", str(folder),
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
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
    with socket.socket() as s:  # the server is gone with the command (nothing left listening)
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_scorecard_renders_in_chromium(results, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    with dashboard(results) as port:
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


SETTLED = ("() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]') "
           "&& !document.querySelector('[data-stale=\"true\"]')")


def _settle(page) -> None:
    """Waits until the script's rerun is over: no running icon, no element left over from the run before."""
    page.wait_for_timeout(300)  # the rerun a click starts may not have begun yet
    page.wait_for_function(SETTLED, timeout=60000)


def _review(port: int, token: str, name: str, out: dict) -> None:
    """One reviewer in a browser of their own: rates what the plan gives them until it has nothing left,
    signing each comment with their name; records the page's text before and after each save, and what each
    save said. Runs in its own thread, with its own Playwright."""
    try:
        out[name] = _work_through(port, token, name)
    except Exception as exc:  # a thread's failure, for the test to raise
        out[name] = exc


def _work_through(port: int, token: str, name: str) -> tuple[list[str], list[str]]:
    from playwright.sync_api import sync_playwright

    shown_before: list[str] = []
    revealed: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"http://127.0.0.1:{port}/?page=Review&token={token}")
        for n in range(30):
            page.get_by_text("Nothing is left for you").or_(page.get_by_role(
                "button", name="Save rating")).first.wait_for(timeout=60000)
            _settle(page)
            if page.get_by_text("Nothing is left for you").count():
                break
            shown_before.append(page.inner_text("[data-testid='stMain']"))
            comment = page.get_by_label("Comment")
            comment.fill(f"by {name} #{n}")
            comment.press("Tab")  # the text area hands its value to the form when it loses focus
            page.get_by_role("button", name="Save rating").click()
            _settle(page)
            message = page.get_by_text("Your rating of example")  # in a plan, never whose output it was
            message.wait_for(timeout=60000)
            revealed.append(message.inner_text())
            shown_before.append(page.inner_text("[data-testid='stMain']"))  # nor after saving
        browser.close()
    return shown_before, revealed


def test_two_reviewers_work_through_one_plan_at_once(own_results, tmp_path):  # noqa: F811
    """Two browsers signed in as two reviewers, at once, on a plan of overlap 1: every item ends with exactly one
    rating, each under the name of who saved it; neither sees a candidate's name before saving (nor after, in a
    plan); a browser without a valid sign-in writes nothing."""
    import threading
    from collections import Counter

    import yaml
    from playwright.sync_api import sync_playwright

    from harness.ratings import RatingStore
    from harness.reviewing import plan_review
    from tests.test_dashboard import CANDIDATES

    store = RatingStore.beside(own_results)
    tokens = {name: store.add_reviewer(name) for name in ("ada", "bob")}
    plan = tmp_path / "review.yaml"
    plan.write_text(yaml.safe_dump({"overlap": 1, "tasks": ["qa"], "items": 5, "seed": 3}))
    progress = plan_review(own_results / "run-1", plan)
    assert progress.planned == 10  # 5 examples × both candidates
    found: dict = {}
    with dashboard(own_results) as port:
        workers = [threading.Thread(target=_review, args=(port, tokens[n], n, found)) for n in tokens]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=600)
        with sync_playwright() as p:  # a stranger, and a sign-in link one character off
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for token in ("", tokens["ada"][:-1]):
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/?page=Review&token={token}")
                page.get_by_text("Sign in with your personal link").wait_for(timeout=60000)
                assert page.get_by_role("button", name="Save rating").count() == 0
            browser.close()
    for outcome in found.values():
        if isinstance(outcome, Exception):
            raise outcome
    assert set(found) == {"ada", "bob"}, "a reviewer's browser did not finish"
    scores = store.scores("run-1")
    assert Counter((s.example_id, s.candidate) for s in scores) == Counter(
        {(p.item.example_id, p.item.candidates[0]): 1 for p in progress.items}), "exactly one rating per item"
    for s in scores:
        assert s.comment.startswith(f"by {s.reviewer} #"), f"{s.comment!r} saved under {s.reviewer}"
    for name, (shown, revealed) in found.items():
        assert len(shown) == 2 * len(revealed) and len(revealed) == sum(s.reviewer == name for s in scores)
        assert all(name not in text for text in shown for name in CANDIDATES), "a name shown before or after saving"
        assert {r.split("example ")[1].split(" (")[0] for r in revealed} == {
            s.example_id for s in scores if s.reviewer == name}
    assert min(len(found["ada"][1]), len(found["bob"][1])) >= 2, "both worked through the plan, not one alone"
