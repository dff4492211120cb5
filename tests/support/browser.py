"""The page's browser tests: headless Chromium from Debian (`chromium`, `chromium-driver`)
driven by Selenium, offline, and the scripts a test runs to drop and paste files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

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
