"""The web console in a real headless Chromium against a real
``polaris-twin --world-model statistical --demo-load 200`` process.

Screenshots go to ``$POLARIS_TEST_ARTIFACTS/console`` (default: the temp dir's
``polaris-test-artifacts/console``); the path is printed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gateway.browser import (
    TwinProcess,
    anomaly_messages,
    artifacts_dir,
    browser_available,
    chromium,
    full_page_screenshot,
    publish,
    severe_logs,
)

if not browser_available():
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI needs Debian's chromium and chromium-driver (scripts/test.sh installs them)"
        )
    pytest.skip(
        "chromium / chromedriver not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(300)


def wait_js(driver: Any, script: str, timeout: float = 30.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what or script}")


@pytest.fixture(scope="module")
def twin() -> Iterator[TwinProcess]:
    proc = TwinProcess(demo_load=200)
    try:
        proc.wait_ready()
        time.sleep(4)  # some demo telemetry first
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def page(twin: TwinProcess) -> Iterator[Any]:
    out = artifacts_dir()
    print(f"\nconsole screenshots: {out}")
    with chromium() as driver:
        driver.get(twin.url + "/")
        yield driver


# Pixels of a canvas drawn in a given colour (the history line is #2563eb).
COUNT_BLUE = """
const c = document.querySelector(arguments[0] + ' canvas');
if (!c) return -1;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] < 90 && d[i + 1] < 140 && d[i + 2] > 200) n++;
return n;
"""


def test_page_loads_without_errors_and_charts_draw_live_series(
    page: Any, twin: TwinProcess
) -> None:
    wait_js(
        page, "return window.polarisConsole && window.polarisConsole.ready", what="overview loaded"
    )
    wait_js(
        page,
        "return document.querySelector('#live').dataset.state === 'live'",
        what="event stream connected",
    )
    names = wait_js(
        page,
        "return [...document.querySelectorAll('#systems li[data-system]')].map(e => "
        "e.dataset.system)",
    )
    assert {"swim", "web_cluster"} <= set(names)
    assert page.find_element("id", "health").text in ("healthy", "degraded")
    assert float(page.find_element("id", "rate").text) > 0
    wait_js(
        page,
        "return (window.polarisConsole.timings.charts_points || 0) > 100",
        what="chart data loaded",
    )
    cards = page.execute_script("return document.querySelectorAll('#charts .chart-card').length")
    assert cards >= 14  # every swim metric has a chart
    blue = page.execute_script(COUNT_BLUE, '[data-metric="arrival.rate"]')
    assert blue > 200, f"arrival.rate chart has {blue} history pixels"
    # the detail view: up to 10 k points of one series, with scores and forecast
    page.find_element("css selector", '#charts [data-metric="average.response.time"]').click()
    wait_js(
        page,
        "return (window.polarisConsole.timings.detail_points || 0) > 0",
        what="detail chart drawn",
    )
    assert page.execute_script(COUNT_BLUE, "#detail-chart") > 200
    time.sleep(1)
    full_page_screenshot(page, artifacts_dir() / "01-metrics.png")
    assert severe_logs(page) == []


def test_what_if_from_the_form_shows_its_result(page: Any) -> None:
    page.find_element("css selector", '[data-tab="whatif"]').click()
    wait_js(
        page,
        "return document.querySelector('#wi-system').value === 'swim'",
        what="system select filled",
    )
    page.find_element("id", "add-plan").click()  # Plan B: SET_DIMMER 0.5
    page.find_element("id", "wi-run").click()
    results = wait_js(
        page,
        "const r = document.querySelectorAll('.plan-result'); return r.length === 2 && "
        "[...r].map(e => e.dataset.success)",
        what="two plan results",
    )
    assert results == ["true", "true"]
    text = page.find_element("css selector", '.plan-result[data-plan="Plan A"]').text
    assert "ADD_SERVER" in text and "confidence" in text
    charts = wait_js(
        page,
        "return [...document.querySelectorAll('.whatif-chart')].map(e => e.dataset.metric)",
        what="what-if charts",
    )
    assert "average.response.time" in charts
    # plan A (orange, #ea580c) is drawn against the baseline
    orange = page.execute_script(
        """const c = document.querySelector('.whatif-chart[data-metric="average.response.time"] canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i+1] > 60 && d[i+1] < 120 && d[i+2] < 60) n++; return n;"""
    )
    assert orange > 50
    time.sleep(0.5)
    full_page_screenshot(page, artifacts_dir() / "02-whatif.png")
    assert severe_logs(page) == []


def test_injected_anomaly_appears_without_reloading(page: Any, twin: TwinProcess) -> None:
    page.find_element("css selector", '[data-tab="events"]').click()
    page.execute_script("window.__notReloaded = 42")
    assert twin.nats_url, "the twin's embedded NATS URL"
    publish(twin.nats_url, anomaly_messages("probe", "latency"))
    wait_js(
        page,
        "return document.querySelector('#anomalies [data-anomaly=\"probe/latency\"]')",
        what="anomaly in the sidebar",
    )
    row = wait_js(
        page,
        "return [...document.querySelectorAll('#events tr[data-kind=\"anomaly_started\"]')]"
        ".map(r => r.textContent).find(t => t.includes('probe') && t.includes('latency'))",
        what="the probe anomaly in the event log",
    )
    assert "900" in row  # the injected value
    assert page.execute_script("return window.__notReloaded") == 42
    full_page_screenshot(page, artifacts_dir() / "03-events.png")
    # and on the metrics tab of that system, the chart marks it
    page.find_element("css selector", '[data-tab="metrics"]').click()
    page.find_element("css selector", '#anomalies [data-anomaly="probe/latency"]').click()
    wait_js(
        page,
        "return document.querySelector('#detail-title').textContent === 'probe / latency' && "
        "window.polarisConsole.timings.detail_points > 100",
        what="detail of the anomalous series",
    )
    red = page.execute_script(
        """const c = document.querySelector('#detail-chart canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i+1] < 80 && d[i+2] < 80) n++; return n;"""
    )
    assert red > 20, "the anomaly is marked on the chart"
    full_page_screenshot(page, artifacts_dir() / "04-anomaly.png")
    assert severe_logs(page) == []


def test_diagnosis_view_ranks_hypotheses(page: Any) -> None:
    page.find_element("css selector", '[data-tab="diagnosis"]').click()
    page.find_element("id", "dg-run").click()
    ranks = wait_js(
        page,
        "const h = document.querySelectorAll('.hypothesis'); return h.length && [...h].map(e => "
        "e.dataset.rank)",
        what="hypotheses",
    )
    assert ranks[0] == "1" and ranks == sorted(ranks, key=int)
    assert page.find_element("css selector", ".chain .chip").text
    full_page_screenshot(page, artifacts_dir() / "05-diagnosis.png")
    assert severe_logs(page) == []
