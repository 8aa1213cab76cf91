"""A headless Debian Chromium with JavaScript switched off, driven by
Selenium through the Debian chromedriver (`make system-deps` installs both)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed: the browser tests need the Debian "
            "packages chromium and chromium-driver (make system-deps installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1024,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--blink-settings=scriptEnabled=false",
    ):
        options.add_argument(arg)
    # JavaScript off through the content settings as well: the pages must work without it
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()
