"""The page's browser tests: headless Chromium from Debian (`chromium`, `chromium-driver`)
driven by Selenium, offline, and the scripts a test runs to drop and paste files."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# No first-run, sync, component updates or background calls: left alone, Chromium calls
# Google's hosts, which this machine and CI cannot reach.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Records every Content-Security-Policy violation from the page's first moment on. Added through
# the DevTools protocol, which the page's policy does not govern.
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""
# The files a test hands in (see `as_dropped`) as a DataTransfer, what drops and pastes carry.
_TRANSFER = """
const transfer = new DataTransfer();
for (const [name, type, encoded] of files) {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  transfer.items.add(new File([bytes], name, { type }));
}
const how = { bubbles: true, cancelable: true };
"""
# Drops files on an element as a person's drag and drop does.
DROP = f"""
const [target, files] = arguments;
{_TRANSFER}
for (const kind of ["dragenter", "dragover", "drop"]) {{
  target.dispatchEvent(new DragEvent(kind, {{ dataTransfer: transfer, ...how }}));
}}
"""
# Pastes files as the clipboard does.
PASTE = f"""
const [files] = arguments;
{_TRANSFER}
document.dispatchEvent(new ClipboardEvent("paste", {{ clipboardData: transfer, ...how }}));
"""


def chromium(
    profile: Path, width: int = 1280, height: int = 1000, *, mobile: bool = False
) -> WebDriver:
    """A fresh headless Chromium (its profile in `profile`) that keeps its console log and
    records CSP violations; a clear failure, not a skip, where Debian's browser is missing.
    `mobile`: a phone's viewport of `width` x `height` (a headless window is at least 500
    pixels wide)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the page's browser tests need Debian's "
            "Chromium (apt-get install -y chromium chromium-driver)",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_CSP})
    if mobile:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


def as_dropped(path: Path, mime: str = "image/jpeg") -> list[str]:
    """A file as `DROP` and `PASTE` take it: name, type and base64 bytes."""
    return [path.name, mime, base64.b64encode(path.read_bytes()).decode()]


@dataclass
class Page:
    """The page open in a browser, and what a test expects its console to hold."""

    driver: WebDriver
    url: str  # where the server answers, e.g. http://127.0.0.1:5000
    screenshot: Path
    expected_console: list[str] = field(default_factory=list)  # parts of expected errors

    def open(self) -> None:
        """Load the page and wait until it says the model is ready."""
        self.driver.get(self.url + "/")
        self.wait(lambda: self.text("#state") == "ready", "the page never said ready")

    def wait(self, condition: Callable[[], T | None], failure: str, timeout_s: float = 30) -> T:
        """The first truthy value of `condition`, polled every 0.1 s."""
        result = WebDriverWait(self.driver, timeout_s, poll_frequency=0.1).until(
            lambda _: condition(), failure
        )
        assert result is not None  # `until` returns a truthy value or raises
        return result

    def find(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        found = self.find(css)
        return found[0].text if found else ""

    def choose(self, *paths: Path) -> None:
        """What choosing files in the file dialog does."""
        self.find("#files")[0].send_keys("\n".join(str(path) for path in paths))

    def results(self, count: int) -> list[Card]:
        """The first `count` result cards, once every one has its answer."""

        def answered() -> list[Card] | None:
            cards = self.find("#results > li")
            if len(cards) < count or any(c.get_attribute("aria-busy") for c in cards[:count]):
                return None
            return [Card.of(card) for card in cards[:count]]

        found: list[Card] = self.wait(answered, f"fewer than {count} results were answered")
        return found

    def console_problems(self) -> list[str]:
        """Console errors the test did not expect, and every CSP violation."""
        errors = [
            entry["message"]
            for entry in self.driver.get_log("browser")  # type: ignore[no-untyped-call]
            if entry["level"] == "SEVERE"
            and not any(expected in entry["message"] for expected in self.expected_console)
        ]
        violations: list[str] = self.driver.execute_script("return window.cspViolations")
        return errors + [f"CSP violation: {v}" for v in violations]


@dataclass
class Card:
    """One image's result as the page shows it."""

    filename: str
    meta: str
    labels: list[str]
    probabilities: list[str]
    bar_widths: list[str]
    error: str

    @classmethod
    def of(cls, card: WebElement) -> Card:
        def texts(css: str) -> list[str]:
            return [
                e.get_attribute("textContent") or ""
                for e in card.find_elements(By.CSS_SELECTOR, css)
            ]

        widths = [
            e.value_of_css_property("width") for e in card.find_elements(By.CSS_SELECTOR, ".fill")
        ]
        return cls(
            filename=texts(".filename")[0],
            meta=texts(".meta")[0],
            labels=texts(".label"),
            probabilities=texts(".prob"),
            bar_widths=widths,
            error="".join(texts(".error")),
        )
