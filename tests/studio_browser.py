"""A running studio and a headless Chromium for the browser tests and docs/screenshots.py.

Uses the system's Chromium and chromedriver (Debian: apt-get install chromium chromium-driver;
`make browser` does it): nothing is downloaded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import free_port, serving

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def browser_binaries() -> tuple[str, str] | None:
    chrome = next((shutil.which(n) for n in CHROMIUM if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (chrome, driver) if chrome and driver else None


@contextmanager
def running_studio(runs: Path, api_key: str | None = None, **settings: Any) -> Iterator[str]:
    """The studio served by uvicorn in a thread of this process, as `specialist studio` serves
    it; yields its base URL. `settings`: more StudioSettings."""

    from specialist.studio.app import create_app, uvicorn_config
    from specialist.studio.state import StudioSettings

    with serving(uvicorn_config(create_app(StudioSettings(runs=runs, api_key=api_key, **settings)),
                                port=free_port())) as url:
        yield url


def chromium(width: int = 1280, height: int = 800):
    """A headless Chromium driven by selenium through the system's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = browser_binaries()
    if found is None:
        raise RuntimeError("headless Chromium not found: apt-get install chromium chromium-driver (make browser)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={width},{height}", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_window_size(width, height)
    return driver


def set_viewport(driver, width: int, height: int) -> None:
    """The window size that gives a `width`×`height` viewport (headless windows have no chrome,
    but be exact anyway)."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(width + (width - inner[0]), height + (height - inner[1]))


# ---------------------------------------------------------------- what the tests and the screenshots do on a page
def css(where, selector: str) -> list:
    """The elements matching `selector` in a page (a driver) or under an element."""
    from selenium.webdriver.common.by import By

    return where.find_elements(By.CSS_SELECTOR, selector)


def wait(driver, condition, seconds: float = 60.0, what: str = ""):
    """condition(driver)'s first truthy value, polled; a TimeoutException saying `what` after `seconds`.

    A live page replaces its elements while the test reads them (the run page swaps its status
    and chart as the training reports). An element found by one poll and gone by its next read is
    a poll that saw nothing yet, not a failure: Chromium says so either as a stale element or as
    "Node with given id does not belong to the document"."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def poll(d):
        try:
            return condition(d)
        except StaleElementReferenceException:
            return False
        except WebDriverException as error:
            if "does not belong to the document" in str(error.msg or ""):
                return False
            raise

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(poll, message=what)


def fill(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def click(driver, selector: str) -> None:
    """Click the first match, scrolled into view first (a phone-sized window hides much)."""
    element = css(driver, selector)[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()
