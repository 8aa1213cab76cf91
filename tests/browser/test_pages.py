"""The redress and self-service pages in a real browser with JavaScript
switched off: a subscriber changes their settings through a signed link,
a blocked caller files a dispute."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from proxy.subscribers.links import LinkSigner
from tests.test_server import free_port
from tests.test_subscriber_api import LINK_SECRET, TOKEN, LiveWorker, worker_config

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorker]:
    tmp: Path = tmp_path_factory.mktemp("pages")
    with LiveWorker(worker_config(tmp, free_port(), subscribers={"disputes_per_hour": 100})) as w:
        yield w


def api(live: LiveWorker, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = Request(f"{live.url}/api/v1{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urlopen(req, timeout=5) as r:
        return json.load(r)


def submit(driver: WebDriver, button: str) -> None:
    """Click a form's button and wait for the next page: a click returns
    before the browser has navigated, so the old page could be read."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(old))


def text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_javascript_is_off(browser: WebDriver) -> None:
    browser.get(
        "data:text/html,<title>before</title><p id=p>static</p>"
        "<script>document.title='after';document.getElementById('p').textContent='ran'</script>"
    )
    assert browser.title == "before"
    assert browser.find_element(By.ID, "p").text == "static"


def test_subscriber_turns_blocking_on_through_the_link(
    browser: WebDriver, live: LiveWorker
) -> None:
    api(live, "PUT", "/subscribers/+13125550187", {"allow": ["+1800*"]})
    url = api(live, "POST", "/subscribers/+13125550187/self-service-link")["url"]
    browser.get(url)
    assert "Free robocall blocking for +13125550187" in text(browser)
    opted_in = browser.find_element(By.ID, "opted_in")
    assert not opted_in.is_selected()
    assert browser.find_element(By.ID, "allow").get_attribute("value") == "+1800*"

    opted_in.click()
    Select(browser.find_element(By.ID, "policy")).select_by_value("block-all-suspected")
    browser.find_element(By.ID, "allow").send_keys("\n212-555-0142")
    browser.find_element(By.ID, "block").send_keys("+12125550166")
    submit(browser, "save")

    assert browser.find_element(By.ID, "saved").text == "Saved."
    assert browser.find_element(By.ID, "opted_in").is_selected()
    policy = Select(browser.find_element(By.ID, "policy")).first_selected_option
    assert policy.get_attribute("value") == "block-all-suspected"
    assert browser.find_element(By.ID, "allow").get_attribute("value") == "+12125550142\n+1800*"
    assert browser.find_element(By.ID, "block").get_attribute("value") == "+12125550166"
    assert api(live, "GET", "/subscribers/+13125550187") == {
        "number": "+13125550187",
        "opted_in": True,
        "policy": "block-all-suspected",
        "reject_anonymous": False,
        "allow": ["+12125550142", "+1800*"],
        "block": ["+12125550166"],
    }
    changes = api(live, "GET", "/subscribers/+13125550187/audit")["changes"]
    assert {c["field"] for c in changes if c["actor"] == "self-service"} == {
        "opted_in", "policy", "allow", "block",
    }  # fmt: skip


def test_an_expired_link_shows_the_error(browser: WebDriver, live: LiveWorker) -> None:
    api(live, "PUT", "/subscribers/+16465550199", {})
    signer = LinkSigner(LINK_SECRET.encode(), live.url, 3600)
    token = signer.token(16465550199, int(time.time()) - 60)
    browser.get(f"{live.url}/self-service?t={token}")
    assert "this link has expired" in text(browser)
    assert browser.find_elements(By.ID, "save") == []
    assert api(live, "GET", "/subscribers/+16465550199")["opted_in"] is False


def test_a_caller_files_a_dispute(browser: WebDriver, live: LiveWorker) -> None:
    browser.get(f"{live.url}/redress")
    browser.find_element(By.ID, "number").send_keys("(212) 555-0177")
    browser.find_element(By.ID, "called").send_keys("+13125550187")
    browser.find_element(By.ID, "contact").send_keys("pharmacy@example.com")
    browser.find_element(By.ID, "description").send_keys("Refill reminders to our patients.")
    submit(browser, "submit")

    assert browser.title == "Dispute received"
    number = browser.find_element(By.CSS_SELECTOR, "p.ok strong").text
    dispute = api(live, "GET", f"/disputes/{int(number)}")
    assert dispute["number"] == "+12125550177" and dispute["status"] == "open"
    assert dispute["contact"] == "pharmacy@example.com"
    assert dispute["description"] == "[called +13125550187] Refill reminders to our patients."


def test_html_in_the_redress_form_is_refused_and_kept(browser: WebDriver, live: LiveWorker) -> None:
    before = len(api(live, "GET", "/disputes")["disputes"])
    browser.get(f"{live.url}/redress")
    browser.find_element(By.ID, "number").send_keys("+12125550188")
    browser.find_element(By.ID, "contact").send_keys("<b>me</b>@example.com")
    browser.find_element(By.ID, "description").send_keys("It's <i>urgent</i> & odd")
    submit(browser, "submit")

    problem = browser.find_element(By.ID, "problem")
    assert "remove the characters < and >" in problem.text
    assert problem.get_attribute("data-field") == "contact"
    # what the caller typed is still there, as text, not as markup
    assert browser.find_element(By.ID, "number").get_attribute("value") == "+12125550188"
    assert browser.find_element(By.ID, "contact").get_attribute("value") == "<b>me</b>@example.com"
    assert (
        browser.find_element(By.ID, "description").get_attribute("value")
        == "It's <i>urgent</i> & odd"
    )
    assert browser.find_elements(By.TAG_NAME, "b") == []
    assert browser.find_elements(By.TAG_NAME, "i") == []
    assert len(api(live, "GET", "/disputes")["disputes"]) == before
