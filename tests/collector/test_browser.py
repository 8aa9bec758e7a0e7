"""The results page in headless Chromium (the system's, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from optitrack.testing import EventsAPI, serve_in_thread
from tests.collector.conftest import GUARD, batch, scenario

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            timeout=GUARD * 3000,
        )
        try:
            yield browser
        finally:
            browser.close()


def test_the_page_shows_the_results_and_loads_nothing_else(browser: Browser) -> None:
    api = EventsAPI(db=":memory:")
    with serve_in_thread(api) as server:
        answer = httpx.post(
            server.url,
            content=batch(scenario()),
            headers={"content-type": "application/json"},
            timeout=GUARD,
        )
        assert answer.status_code == 204
        requested: list[str] = []
        page = browser.new_page()
        page.set_default_timeout(GUARD * 1000)
        page.on("request", lambda request: requested.append(request.url))
        page.goto(server.base_url + "/")

        assert page.title() == "optitrack collector: results"
        assert page.locator("h2").inner_text() == "checkout_test"
        rows = page.locator("table.results tr").all_inner_texts()
        control, treatment = (row.split("\t") for row in rows[1:])
        assert control[:4] == ["control", "2", "1", "1"]  # visitors, purchase: unique, total
        assert control[4] == "50.00%"
        assert treatment[:4] == ["treatment", "2", "1", "2"]
        assert treatment[-4] == "500"  # revenue
        assert treatment[-2] == "+400.0%"  # revenue per visitor's lift: 250 over 50

        # One chart per event key, one bar per variation; an interval and its point for
        # the variation after the baseline where it can be computed (purchase).
        charts = page.locator("svg")
        assert charts.count() == 2
        assert charts.nth(0).locator("rect.bar").count() == 2
        assert charts.nth(0).locator("line.ci").count() == 1
        assert charts.nth(0).locator("circle.point").count() == 1
        widths = [
            float(w or 0)
            for w in charts.nth(0)
            .locator("rect.bar")
            .evaluate_all("bars => bars.map(b => b.getAttribute('width'))")
        ]
        assert widths[0] == widths[1] > 0  # the same purchase rate, 50%
        page.close()
    assert requested
    assert all(url.startswith(server.base_url + "/") for url in requested), requested
