"""A running studio and a headless Chromium for the browser tests and docs/screenshots.py.

Uses the system's Chromium and chromedriver (Debian: apt-get install chromium chromium-driver;
`make browser` does it): nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def browser_binaries() -> tuple[str, str] | None:
    chrome = next((shutil.which(n) for n in CHROMIUM if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (chrome, driver) if chrome and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_studio(runs: Path, api_key: str | None = None, **settings: Any) -> Iterator[str]:
    """The studio served by uvicorn in a thread of this process, as `specialist studio` serves
    it; yields its base URL. `settings`: more StudioSettings."""
    import uvicorn

    from specialist.studio.app import create_app, uvicorn_config
    from specialist.studio.state import StudioSettings

    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(StudioSettings(runs=runs, api_key=api_key, **settings)),
                                           port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the studio did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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
