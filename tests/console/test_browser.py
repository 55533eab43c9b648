"""The console in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium, against ``chimeway console`` and ``dramatiq chimeway.worker`` as real processes
on PostgreSQL and Redis.

An operator logs in, finds an exhausted delivery by its recipient, opens it, presses Redrive and
sees it succeed. A screenshot of each page is saved under ``tests/artifacts/console/`` (git-ignored;
the path is printed). Skips, saying why, where Chromium or its driver is missing; CI installs both.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chimeway
from chimeway.wiring import runtime as runtime_mod
from tests.harness.processes import Supervisor
from tests.harness.servers import Reaper, free_port, wait_for_port
from tests.harness.stack import BIN, chimeway_env, dramatiq_argv, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
USER, PASSWORD = "ops", "browser-pass"
#: The flags the closed network needs: no sandbox (root in CI), no GPU, nothing phoning home.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900")


@pytest.fixture
def runtime(pg_runtime: runtime_mod.Runtime) -> runtime_mod.Runtime:
    return pg_runtime


@pytest.fixture
def stack(runtime: runtime_mod.Runtime, tmp_path: Path) -> Iterator[str]:
    """A worker and the console (``chimeway console``) as real processes; yields the console's URL."""
    settings = runtime.settings
    port = free_port()
    env = chimeway_env(settings.database_url, settings.redis_url, redis_namespace=settings.redis_namespace,
                       default_adapter="fake", backoff_min_ms=1, backoff_max_ms=10,
                       console_user=USER, console_password=PASSWORD)
    reaper = Reaper()
    supervisor = Supervisor(tmp_path, reaper, cwd=str(tmp_path))
    supervisor.add("worker", dramatiq_argv("chimeway.worker", processes=1, threads=2), env, keep_alive=False)
    supervisor.add("console", [str(BIN / "chimeway"), "console", "--port", str(port)], env, keep_alive=False)
    try:
        worker = supervisor.start("worker")
        supervisor.start("console")
        wait_until(lambda: "ready for action" in worker.log.read_text() or not worker.alive(), 60, what="worker")
        assert worker.alive(), supervisor.tail("worker")
        wait_for_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        supervisor.stop_all()
        reaper.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("headless Chromium is not installed: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def test_given_an_exhausted_delivery_when_an_operator_redrives_it_in_the_browser_then_it_succeeds(
    runtime, stack, browser
):
    from selenium.webdriver.common.by import By

    exhausted = chimeway.send("email", "ada@example.com", {"fake_outcomes": ["temporary", "ok"], "text": "hi"},
                              max_attempts=1)
    for i in range(3):
        chimeway.send("email", f"reader{i}@example.com", {"fake_outcomes": ["ok"]})
    wait_until(lambda: chimeway.get_delivery(exhausted.id).status == "cancelled", 60, what="exhaustion")

    # Without credentials the console answers 401 and shows nothing.
    browser.get(f"{stack}/deliveries")
    assert "Deliveries" not in browser.page_source

    # Log in: the browser sends the Basic credentials with every request from now on.
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    browser.get(f"{stack}/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    screenshot(browser, "1-overview")

    # Find it by recipient.
    browser.get(f"{stack}/deliveries")
    browser.find_element(By.NAME, "q").send_keys("ada@example.com")
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
    assert len(rows) == 1 and "retries_exhausted" in rows[0].text
    screenshot(browser, "2-search")

    # Open it, press Redrive.
    click_and_load(browser, rows[0].find_element(By.LINK_TEXT, "ada@example.com"))
    assert exhausted.id in browser.find_element(By.TAG_NAME, "h1").text
    assert "hi" not in browser.find_element(By.CSS_SELECTOR, ".documents").text  # payload redacted
    browser.find_element(By.NAME, "why").send_keys("provider outage over")
    screenshot(browser, "3-exhausted")
    click_and_load(browser, browser.find_element(By.XPATH, "//button[text()='Redrive']"))
    assert "Redriven" in browser.find_element(By.CSS_SELECTOR, ".notice").text

    # See it succeed: the worker performs the new attempt; the page shows it once reloaded.
    def succeeded() -> bool:
        browser.refresh()
        return "succeeded" in browser.find_element(By.CSS_SELECTOR, ".facts").text

    wait_until(succeeded, 60, interval=0.5, what="the redriven delivery to succeed")
    timeline = browser.find_element(By.CSS_SELECTOR, ".timeline").text
    assert "redriven by console:ops" in timeline and "provider outage over" in timeline
    assert "1 attempt allowed" in timeline  # the budget it was sent with, not the redriven one
    screenshot(browser, "4-redriven")

    browser.get(f"{stack}/orphans")
    screenshot(browser, "5-orphans")
    assert chimeway.get_delivery(exhausted.id).status == "succeeded"


def click_and_load(browser: Any, element: Any) -> None:
    """Click a link or a submit button and wait for the next page: a click does not always wait for
    the navigation it starts, and reading the old page's rows made this test flaky."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(page))
