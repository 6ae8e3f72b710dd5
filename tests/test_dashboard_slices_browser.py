"""The Slices page in headless Chromium (Debian's), on the run `test_dashboard_slices` scores: the metric by slice
(chart and table) with the flagged slice first, and a grown confusion's link followed to the Examples page showing
those examples. The screenshots are kept in test-artifacts/ for people to look at."""

import shutil

import pytest

from tests.conftest import require_browser
from tests.test_dashboard_browser import ARTIFACTS, FLAGS, dashboard
from tests.test_dashboard_slices import results  # noqa: F401 (the run fixture)

CHROMIUM = require_browser()
pytestmark = pytest.mark.slow


def test_slices_page_shows_the_flagged_slice_and_its_confusions_open_their_examples(results, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    folder, _ = results
    with dashboard(folder) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(f"http://127.0.0.1:{port}/?page=Slices")
        page.get_by_text("B: ft is worse than its base base here").wait_for(timeout=60000)
        page.locator(".vega-embed").first.wait_for(timeout=30000)
        page.wait_for_timeout(2000)  # let the chart and the table draw
        slices_shot = tmp_path / "slices.png"
        page.screenshot(path=str(slices_shot), full_page=True)
        heading, body = page.inner_text("h1"), page.inner_text("body")
        chart = page.locator(".vega-embed").first.bounding_box()
        rows = [[cell.inner_text().strip() for cell in row.locator("th, td").all()]
                for row in page.locator("[data-testid='stTable'] tr").all()]
        link = page.get_by_role("link", name="examples").first
        href = link.get_attribute("href")
        with page.context.expect_page() if link.get_attribute("target") == "_blank" else _same(page) as opened:
            link.click()
        examples = opened.value
        examples.get_by_text("6 of 40 examples").wait_for(timeout=60000)
        examples.wait_for_timeout(1000)
        examples_shot = tmp_path / "examples.png"
        examples.screenshot(path=str(examples_shot), full_page=True)
        shown = examples.inner_text("body")
        browser.close()
    assert heading == "Slices"
    assert "b1 read as b2: 1 → 6" in body
    assert chart is not None and chart["width"] > 200 and chart["height"] > 50
    # The table by slice: the flagged slice first, both candidates' values with their intervals.
    assert rows[0] == ["slice", "n", "base", "ft"] or rows[0] == ["", "n", "base", "ft"], rows
    assert rows[1][:2] == ["B ⚑", "20"] and rows[1][2].startswith("0.900 [") and rows[1][3].startswith("0.600 ["), rows
    assert rows[2][:2] == ["A", "20"], rows
    assert href is not None and "page=Examples" in href and "reference=b1" in href and "predicted=b2" in href
    assert "6 of 40 examples" in shown
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(slices_shot, ARTIFACTS / "dashboard-slices.png")
    shutil.copy(examples_shot, ARTIFACTS / "dashboard-slices-examples.png")


class _same:
    """Stands in for `expect_page` where a link opens in the same tab: the page itself, once it has navigated."""

    def __init__(self, page):
        self.value = page

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.value.wait_for_url("**page=Examples**", timeout=60000)
        return False
