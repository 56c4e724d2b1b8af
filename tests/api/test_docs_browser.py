"""The offline docs work in a real browser: headless Chromium loads /docs and /redoc from a live
server with no internet, Swagger UI shows every tag, signs in through the OAuth2 password flow
(the Authorize button) and runs a request with "Try it out". The HTML-level check in
test_docs.py cannot see a bundle that loads but fails to run; this one can.

Screenshots go to reports/browser/ (git-ignored) so a failure can be looked at afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from api.app import create_app
from api.settings import Settings
from pipelines.ingest import IngestReport
from tests.conftest import PASSWORD, sign_up
from tests.live_server import serving_in_thread
from tests.system_packages import require_programs

REPORTS = Path(__file__).resolve().parents[2] / "reports" / "browser"
BROWSER_USER = "docs-browser@example.com"
# The browser reaches the loopback server under this name: Swagger UI treats localhost and
# 127.0.0.1 specially (no online validator badge), so a real hostname shows what users get.
DOCS_HOST = "docs.stockcopilot.test"
WAIT_S = 60  # a deadline for failing, not a speed claim: the shared CI box can be slow
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # no internet here: without these Chromium keeps dialling Google services
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
    f"--host-resolver-rules=MAP {DOCS_HOST} 127.0.0.1",
)


@pytest.fixture(scope="module")
def docs_server(settings: Settings, first_ingest: IngestReport) -> Iterator[str]:
    """The app behind a real uvicorn on loopback; yields its base URL."""
    with serving_in_thread(create_app(settings)) as address:
        yield f"http://{DOCS_HOST}:{address.rsplit(':', 1)[1]}"


@pytest.fixture(scope="module")
async def browser_user(docs_server: str) -> str:
    """An account registered through the API, which the browser signs in as."""
    async with httpx.AsyncClient(base_url=_loopback(docs_server)) as client:
        await sign_up(client, BROWSER_USER)
    return BROWSER_USER


@pytest.fixture(scope="module")
def driver(
    docs_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    """Headless Chromium through chromedriver, both quit at teardown. The docs origin counts as
    secure, as behind the TLS proxy in production (else Chromium ignores COOP and says so)."""
    programs = require_programs({"chromium": "chromium", "chromedriver": "chromium-driver"})
    options = webdriver.ChromeOptions()
    options.binary_location = programs["chromium"]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--unsafely-treat-insecure-origin-as-secure={docs_server}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    browser = webdriver.Chrome(service=Service(programs["chromedriver"]), options=options)
    try:
        yield browser
    finally:
        browser.quit()  # also stops chromedriver


def _loopback(url: str) -> str:
    """`url` with the browser-only hostname replaced by the address Python can resolve."""
    return url.replace(DOCS_HOST, "127.0.0.1")


def _screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save the viewport as reports/browser/<name>.png, the artefact a reviewer opens."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def _wait[T](driver: webdriver.Chrome, condition: Callable[[Any], T], what: str) -> T:
    """Wait for `condition`; on a timeout, fail with the page's console errors and a
    screenshot, which say why a page did not render (a blocked or broken script)."""
    try:
        return WebDriverWait(driver, WAIT_S).until(condition)
    except TimeoutException:
        shot = _screenshot(driver, "docs-failure")
        console = [entry["message"] for entry in driver.get_log("browser")]
        pytest.fail(f"timed out waiting for {what}; screenshot {shot}; console: {console}")


def _visible(
    driver: webdriver.Chrome, css: str, what: str, root: WebElement | None = None
) -> WebElement:
    """The first displayed match of `css` (under `root`), once there is one."""
    scope = root or driver
    found = _wait(
        driver,
        lambda _: [e for e in scope.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()],
        what,
    )
    return found[0]


def _classes(element: WebElement) -> set[str]:
    return set((element.get_attribute("class") or "").split())


def _console_errors(driver: webdriver.Chrome) -> list[str]:
    """SEVERE console entries since the last read: a failed asset or a refused request to a
    CDN would show here even where the page still looks right."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"  # a failed load of anything, from anywhere
    ]


def _operation_tags(spec: dict[str, Any]) -> set[str]:
    """The tags operations use; Swagger UI files untagged operations under "default"."""
    operations = (
        op for item in spec["paths"].values() for op in item.values() if isinstance(op, dict)
    )
    return {tag for op in operations for tag in op.get("tags", ["default"])}


def test_swagger_ui_renders_every_tag_signs_in_and_tries_a_request(
    driver: webdriver.Chrome, docs_server: str, browser_user: str
) -> None:
    spec = httpx.get(f"{_loopback(docs_server)}/openapi.json").json()
    expected = {tag["name"] for tag in spec.get("tags", [])} | _operation_tags(spec)
    driver.get(f"{docs_server}/docs")
    _visible(driver, ".opblock-tag-section", "Swagger UI's tag sections")
    shown = {
        e.get_attribute("data-tag") for e in driver.find_elements(By.CSS_SELECTOR, "h3.opblock-tag")
    }
    assert shown == expected

    authorize = driver.find_element(By.CSS_SELECTOR, ".auth-wrapper .btn.authorize")
    assert "unlocked" in _classes(authorize)  # Swagger UI's open padlock: nobody signed in
    authorize.click()
    dialog = _visible(driver, ".dialog-ux .modal-ux", "the Authorize dialog")
    password_flow = next(
        box
        for box in dialog.find_elements(By.CSS_SELECTOR, ".auth-container")
        if box.find_elements(By.ID, "oauth_username")
    )
    password_flow.find_element(By.ID, "oauth_username").send_keys(browser_user)
    password_flow.find_element(By.ID, "oauth_password").send_keys(PASSWORD)
    password_flow.find_element(By.CSS_SELECTOR, ".btn.modal-btn.authorize").click()
    _wait(
        driver,
        lambda _: "Authorized" in password_flow.text and "Logout" in password_flow.text,
        "the password flow's signed-in state",
    )
    _screenshot(driver, "docs-authorized")
    dialog.find_element(By.CSS_SELECTOR, ".close-modal").click()
    _wait(
        driver,
        ec.invisibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux")),
        "the dialog to close",
    )
    assert "locked" in _classes(authorize)  # the closed padlock: requests carry the token

    operation = _visible(
        driver,
        ".opblock-get:has(.opblock-summary-path[data-path='/api/v1/stocks'])",
        "GET /api/v1/stocks",
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", operation)
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    _visible(driver, ".try-out__btn", "the Try it out button", operation).click()
    _visible(driver, "tr[data-param-name='q'] input", "the q parameter", operation).send_keys(
        "micro"
    )
    _visible(driver, ".btn.execute", "the Execute button", operation).click()
    status = _wait(
        driver,
        lambda _: [
            e.text
            for e in operation.find_elements(
                By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
            )
            if e.text.strip()
        ],
        "the live response",
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", operation)
    _screenshot(driver, "docs-try-it-out")
    assert status[0].strip() == "200"
    body = operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description"
    )
    assert "Advanced Micro Devices" in body.text  # the real search answer, from the ingested data
    assert _console_errors(driver) == []


def test_redoc_renders_its_title_and_tag_sections(
    driver: webdriver.Chrome, docs_server: str
) -> None:
    driver.get(f"{docs_server}/redoc")
    # ReDoc renders the whole spec at once; CSS queries stay cheap where reading the page's
    # text over that DOM on every poll would not
    title = _visible(driver, ".api-info h1", "ReDoc's title")
    assert title.text.startswith("Stock Copilot API")
    stocks = _visible(driver, "[data-section-id='tag/stocks'] h2", "the stocks tag section")
    assert stocks.text.strip().lower() == "stocks"
    _screenshot(driver, "redoc")
    assert _console_errors(driver) == []
