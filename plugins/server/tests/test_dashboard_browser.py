"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Selenium
against the live session server. One browser for the module; each test a few seconds.

Skipped, saying why, where Chromium, its driver or Selenium is missing (``.ci/run`` installs
Chromium with apt-get before ``make test``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scripts import chromium

from .conftest import Live, cli
from .dashboard_world import World, execute, world

EMPTY = "\u2013"  # what a tile shows before it has a figure
WAIT = 10.0  # seconds any one thing on the page may take to appear


@pytest.fixture(scope="module")
def browser() -> Iterator[chromium.Browser]:
    why = chromium.missing()
    if why is not None:
        pytest.skip(f"no browser for the dashboard tests: {why}")
    started = chromium.Browser()
    yield started
    started.quit()


@pytest.fixture(scope="module")
def hybrid(live: Live) -> World:
    return world(live)


@pytest.fixture(scope="module")
def looker(live: Live) -> str:
    made = cli(live.data_dir, "keys", "create", "looker", "--scope", "view", "--json")
    live.tokens["looker"] = json.loads(made.stdout)["token"]
    return "looker"


def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:  # an element not there yet, or replaced while read
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"the dashboard did not show {what} within {timeout} s")
        time.sleep(0.1)


def text(b: chromium.Browser, element_id: str) -> str:
    return str(b.driver.find_element("id", element_id).text)


def signed_in(b: chromium.Browser, live: Live, key: str) -> None:
    b.sign_out()
    b.sign_in(live.url, live.tokens[key])
    until(lambda: b.driver.current_url.endswith("/ui") and text(b, "viewer"), "the page")


def test_an_unauthenticated_visit_is_refused(browser: chromium.Browser, live: Live) -> None:
    browser.sign_out()
    browser.driver.get(live.url + "/ui")
    assert browser.driver.find_elements("id", "tiles") == []
    assert "view or admin scope" in text(browser, "notice")
    assert browser.driver.find_element("id", "token").get_attribute("type") == "password"
    browser.console_errors()  # the refused document's 401: not a fault of the page


def test_the_page_loads_without_console_errors(browser: chromium.Browser, live: Live,
                                               hybrid: World) -> None:
    signed_in(browser, live, "root")
    until(lambda: text(browser, "tile-total") not in ("", EMPTY), "the tiles")
    until(lambda: browser.driver.find_elements("css selector", "#chart-throughput .uplot"),
          "the throughput chart")
    until(lambda: browser.driver.find_elements("css selector", "#executions tbody tr"),
          "recent executions")
    assert "wasmtime" in text(browser, "engines") and "onnxruntime" in text(browser, "engines")
    assert "quota-rate" in text(browser, "quota")
    assert "no model reports batch sizes" in text(browser, "chart-batch") or \
        browser.driver.find_elements("css selector", "#chart-batch .uplot")
    time.sleep(1.5)  # a couple of refreshes
    assert browser.console_errors() == []


def test_tiles_change_while_a_workload_runs(browser: chromium.Browser, live: Live,
                                            hybrid: World) -> None:
    signed_in(browser, live, "root")
    before = until(lambda: text(browser, "tile-total") if text(browser, "tile-total") != EMPTY
                   else None, "the executions tile")
    stop = threading.Event()

    def workload() -> None:
        while not stop.is_set():
            execute(live, "alice", hybrid.hybrid, "transfer",
                    (1).to_bytes(8, "little") + b"treasury")

    runner = threading.Thread(target=workload)
    runner.start()
    try:
        until(lambda: text(browser, "tile-total") != before, "a new executions count")
        until(lambda: text(browser, "tile-rate") not in (EMPTY, "0.0"), "a rate above zero")
    finally:
        stop.set()
        runner.join()
    assert browser.console_errors() == []


def test_a_filter_narrows_the_table(browser: chromium.Browser, live: Live,
                                    hybrid: World) -> None:
    for _ in range(3):  # the newest executions: treasury's among alice's
        execute(live, "treasury", hybrid.hybrid, "mint", (1).to_bytes(8, "little") + b"bob")
    signed_in(browser, live, "root")

    def callers() -> list[str]:
        return list(browser.driver.execute_script(  # in one call: the rows are redrawn often
            "return [...document.querySelectorAll('#executions tbody tr')]"
            ".map((row) => row.cells[2].textContent)"))

    every = until(lambda: callers() if len(set(callers())) > 1 else None,
                  "executions of several callers")
    field = browser.driver.find_element("id", "filter-caller")
    field.clear()
    field.send_keys("treasury")
    browser.driver.find_element("id", "apply-filters").click()
    narrowed = until(lambda: callers() if callers() and set(callers()) == {"treasury"}
                     else None, "only treasury's executions")
    assert len(narrowed) < len(every)
    field.clear()
    browser.driver.find_element("id", "apply-filters").click()
    assert browser.console_errors() == []


def test_a_drill_down_shows_the_audit_record(browser: chromium.Browser, live: Live,
                                             hybrid: World) -> None:
    signed_in(browser, live, "root")
    child = until(lambda: browser.driver.execute_script(
        "const row = [...document.querySelectorAll('#executions tbody tr')]"
        ".find((r) => r.textContent.includes('(nested)')); return row && row.dataset.id;"),
        "a nested execution's row")

    def opened() -> bool:
        browser.driver.find_element("css selector", f'tr[data-id="{child}"]').click()
        return True

    until(opened, "a clickable row")
    until(lambda: child in text(browser, "drill-record"), "the child's record")
    detail = live.request("GET", f"/ui/api/executions/{child}", "root").json()
    shown = text(browser, "drill-record")
    assert detail["record"]["chain_hash"] in shown and detail["record"]["leaf_hash"] in shown
    parent_id = detail["parent"]["execution_id"]
    browser.driver.find_element("link text", f"{parent_id} (succeeded)").click()
    until(lambda: parent_id in text(browser, "drill-record"), "the parent's record")
    body = text(browser, "drill-body")
    assert "transfer" in body and "alice" in body and f"{child} (succeeded)" in body
    browser.driver.find_element("id", "drill-close").click()
    assert browser.console_errors() == []


def test_a_view_key_sees_but_cannot_verify(browser: chromium.Browser, live: Live,
                                           looker: str) -> None:
    signed_in(browser, live, looker)
    assert "(view)" in text(browser, "viewer")
    button = browser.driver.find_element("id", "verify-now")
    until(lambda: not button.is_enabled(), "a disabled verify button")
    signed_in(browser, live, "root")
    button = browser.driver.find_element("id", "verify-now")
    until(button.is_enabled, "an enabled verify button")
    button.click()
    until(lambda: "intact" in text(browser, "audit-verified"), "the verification's result")
    assert browser.console_errors() == []
