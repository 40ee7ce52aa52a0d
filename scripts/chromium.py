"""Headless Chromium for the dashboard's browser tests and screenshot script, driven by
Selenium through Debian's packages (``chromium``, ``chromium-driver``).

The driver is the one at ``/usr/bin/chromedriver``, named explicitly so Selenium never
downloads a driver or a browser of its own; the flags keep the browser from reaching the
network on its own (updates, sync, field trials) and give it a fresh profile each time.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def missing() -> str | None:
    """Why no browser can be started here, or None when one can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return (f"{path} is not installed (apt-get install chromium chromium-driver; "
                    ".ci/run does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make setup installs the dev group)"
    return None


class Browser:
    """One Chromium with its own profile directory, removed on ``quit``."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="coordinator-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}",
                     f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver: Any = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                                            options=options)

    def console_errors(self) -> list[dict[str, Any]]:
        """The console's entries at level SEVERE since the last call."""
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def sign_in(self, base_url: str, token: str) -> None:
        """Sign in to the dashboard through its form, as a person would."""
        from selenium.webdriver.common.by import By

        self.driver.get(base_url + "/ui/login")
        self.driver.find_element(By.ID, "token").send_keys(token)
        self.driver.find_element(By.ID, "sign-in").click()

    def sign_out(self) -> None:
        self.driver.delete_all_cookies()

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
