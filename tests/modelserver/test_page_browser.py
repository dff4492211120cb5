"""The page at `/` in a real browser (headless Chromium from Debian, driven by Selenium) against
a real server: what a person drops, chooses or pastes is classified and shown; a bad file shows
the server's own error; a label or filename that is HTML stays text; the live panel moves; and
the console shows no error and no Content-Security-Policy violation.

Screenshots go to build/artifacts/browser/ (one per test, taken at its end)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import browser
import pytest
import requests
from browser import DROP, PASTE, Page, as_dropped, chromium
from selenium.webdriver.common.keys import Keys
from serving import EXPECTED_TOP1, PAGE_MODEL_STEM, SCRIPT_LABEL, RunningServer

T = TypeVar("T")
PHONE = (390, 844)  # CSS pixels of a common phone, portrait
# What Chromium logs for a request the server refused, as a corrupt upload is.
REFUSED_UPLOAD = "/predict - Failed to load resource: the server responded with a status of 400"


@pytest.fixture(scope="session")
def artifacts(repo_root: Path) -> Path:
    folder = repo_root / "build" / "artifacts" / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(
    page_server: RunningServer,
    tmp_path: Path,
    artifacts: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Page]:
    """A fresh browser on the page; its screenshot is kept whatever the outcome."""
    phone = "phone" in request.node.name
    driver = chromium(tmp_path / "profile", *(PHONE if phone else (1280, 1000)), mobile=phone)
    name = re.sub(r"\W+", "-", request.node.name).strip("-")
    opened = Page(driver, page_server.url, artifacts / f"{name}.png")
    try:
        opened.open()
        yield opened
    finally:
        driver.save_screenshot(str(opened.screenshot))
        driver.quit()


@pytest.fixture(scope="session")
def labels(mobilenet_labels: Path) -> list[str]:
    """MobileNetV2's labels (the page server's, but for its script label)."""
    return mobilenet_labels.read_text().splitlines()


def expected_label(labels: list[str], photo: str) -> str:
    """The photo's top-1 in the labels file, which starts with 'background'."""
    return labels[EXPECTED_TOP1[photo] + 1]


def percent(probability: float) -> str:
    return f"{probability * 100:.1f}%"


def test_a_dropped_photo_shows_its_labels_probabilities_and_latency(
    page: Page, images_dir: Path, page_server: RunningServer
) -> None:
    dog = images_dir / "dog.jpg"
    page.driver.execute_script(DROP, page.find("#drop")[0], [as_dropped(dog)])
    (card,) = page.results(1)
    server_says = page_server.predict(dog).json()["predictions"]
    assert card.filename == "dog.jpg"
    assert card.labels == [p["label"] for p in server_says]
    assert card.labels[0] == "beagle"
    assert card.probabilities == [percent(p["probability"]) for p in server_says]
    assert re.fullmatch(r"\d+ ms \(server \d+ ms\)", card.meta), card.meta
    full = float(page.find(".bar")[0].value_of_css_property("width").removesuffix("px"))
    top = float(card.bar_widths[0].removesuffix("px"))
    assert top / full == pytest.approx(server_says[0]["probability"], abs=0.02)
    assert not page.console_problems()


def test_status_url_opens_the_page(page: Page) -> None:
    """An ImageClassifier's status.url names /predict: opened in a browser, it is the page."""
    page.driver.get(page.url + "/predict")
    page.wait(lambda: page.text("#state") == "ready", "the page never said ready")
    assert page.driver.current_url == page.url + "/"
    assert not page.console_problems()


def test_several_chosen_photos_each_get_their_own_labels(
    page: Page, images_dir: Path, labels: list[str]
) -> None:
    photos = ["dog.jpg", "parrot.jpg", "cat_720p.jpg", "bmw.png", "bird.bmp", "mountain_bike.jpeg"]
    page.choose(*(images_dir / photo for photo in photos))
    cards = page.results(len(photos))
    assert [card.filename for card in cards] == photos  # in the order chosen
    assert [card.labels[0] for card in cards] == [expected_label(labels, p) for p in photos]
    assert all(len(card.labels) == 5 and not card.error for card in cards)
    assert not page.console_problems()


def test_a_pasted_image_is_classified(page: Page, images_dir: Path) -> None:
    page.driver.execute_script(PASTE, [as_dropped(images_dir / "jemma.png", mime="image/png")])
    (card,) = page.results(1)
    assert (card.filename, card.labels[0]) == ("jemma.png", "beagle")
    assert not page.console_problems()


def test_a_bad_file_shows_the_servers_own_error(
    page: Page, images_dir: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((images_dir / "dog.jpg").read_bytes()[:2000])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image at all\n")
    page.expected_console.append(REFUSED_UPLOAD)
    page.choose(truncated, images_dir / "dog.jpg", notes)
    bad, good, text = page.results(3)
    for card, path in ((bad, truncated), (text, notes)):
        answer = requests.post(
            page.url + "/predict",
            files={"image": (path.name, path.read_bytes())},
            timeout=30,
        )
        assert answer.status_code == 400
        assert card.error == answer.json()["error"] and not card.labels
    assert good.labels[0] == "beagle" and not good.error
    assert not page.console_problems()


def test_html_in_labels_filenames_and_the_model_name_stays_text(
    page: Page, images_dir: Path, tmp_path: Path
) -> None:
    """soccer_ball.jpg's top-1 label on this server is a script, its model file's name is
    HTML, and so is this file's name."""
    hostile = tmp_path / "<img src=x onerror=window.pwned=2>.jpg"
    hostile.write_bytes((images_dir / "soccer_ball.jpg").read_bytes())
    page.choose(hostile)
    page.driver.execute_script(DROP, page.find("#drop")[0], [as_dropped(hostile)])
    cards = page.results(2)
    for card in cards:
        assert card.filename == hostile.name
        assert card.labels[0] == SCRIPT_LABEL
    assert page.text("#model-name") == PAGE_MODEL_STEM
    assert PAGE_MODEL_STEM in page.driver.title
    assert page.text("#served dd") == PAGE_MODEL_STEM
    assert page.driver.execute_script("return [window.pwned, document.scripts.length]") == [
        None,
        1,  # page.js alone
    ]
    assert not page.find("#results script, #results img:not(.thumb), #results i")
    assert not page.console_problems()


def test_the_page_says_what_serves(page: Page) -> None:
    model = requests.get(
        f"{page.url}/v1/models/{quote(PAGE_MODEL_STEM, safe='')}", timeout=10
    ).json()
    names = [e.text for e in page.find("#served dt")]
    values = [e.text for e in page.find("#served dd")]
    shown = dict(zip(names, values, strict=True))
    for name, key in (
        ("Model", "name"),
        ("Backend", "backend"),
        ("Precision", "precision"),
        ("Float precision", "float_precision"),
        ("Device", "device"),
        ("Labels", "labels"),
    ):
        assert shown[name] == str(model[key]), name
    batching = model["batching"]
    assert f"up to {batching['max_size']} images" in shown["Batching"]
    assert f"{batching['max_delay_ms']:g} ms" in shown["Batching"]
    assert not page.console_problems()


def answered(page: Page) -> int:
    found = re.search(r"(\d+) answered", page.text("#s-requests"))
    return int(found.group(1)) if found else -1


def test_the_live_panel_moves_after_requests(
    page: Page, images_dir: Path, page_server: RunningServer
) -> None:
    before = page.wait(lambda: answered(page) if answered(page) >= 0 else None, "no figures")
    photos = [images_dir / name for name in ("dog.jpg", "parrot.jpg", "bmw.png")] * 4
    with ThreadPoolExecutor(4) as clients:  # anyone's requests, not the page's
        assert all(a.status_code == 200 for a in clients.map(page_server.predict, photos))
    page.wait(lambda: answered(page) == before + len(photos), "the answered count stood still")
    requests_per_s = float(page.text("#v-requests"))
    assert requests_per_s > 0
    assert re.fullmatch(r"\d+ / \d+ ms", page.text("#v-latency")), page.text("#v-latency")
    assert float(page.text("#v-batch")) >= 1
    page.wait(lambda: page.find("#c-requests polyline.series"), "no line in the requests chart")
    assert not page.console_problems()


def test_the_keyboard_reaches_everything(page: Page, images_dir: Path) -> None:
    driver = page.driver
    driver.execute_script(
        """document.getElementById("files").addEventListener("click", (event) => {
             event.preventDefault();  // a headless browser has no dialog to show
             window.chooserOpened = true;
           });"""
    )
    body = page.find("body")[0]
    body.send_keys(Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.get_attribute("id") == "choose"
    assert focused.value_of_css_property("outline-style") != "none"  # it shows where it is
    focused.send_keys(Keys.ENTER)
    assert driver.execute_script("return window.chooserOpened") is True
    focused.send_keys(Keys.TAB)
    top_k = driver.switch_to.active_element
    assert top_k.get_attribute("id") == "top-k"
    top_k.send_keys("3")
    page.choose(images_dir / "dog.jpg", images_dir / "parrot.jpg")
    assert [len(card.labels) for card in page.results(2)] == [3, 3]
    top_k.send_keys(Keys.TAB)
    clear = driver.switch_to.active_element
    assert clear.get_attribute("id") == "clear"
    clear.send_keys(Keys.ENTER)
    assert not page.find("#results > li")
    assert driver.switch_to.active_element.get_attribute("id") == "choose"
    assert not page.console_problems()


def test_the_layout_at_desktop_width(page: Page, images_dir: Path) -> None:
    page.choose(*(images_dir / name for name in ("dog.jpg", "parrot.jpg")))
    page.results(2)
    tried, live = (page.find(css)[0].rect for css in (".try", ".live"))
    assert live["x"] >= tried["x"] + tried["width"]  # side by side
    assert not page.console_problems()


def test_the_layout_at_phone_width(page: Page, images_dir: Path) -> None:
    page.choose(*(images_dir / name for name in ("dog.jpg", "parrot.jpg")))
    page.results(2)
    width = page.driver.execute_script("return document.documentElement.clientWidth")
    scrolls = page.driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= PHONE[0] and scrolls <= width, "the page scrolls sideways"
    tried, live = (page.find(css)[0].rect for css in (".try", ".live"))
    assert live["y"] >= tried["y"] + tried["height"]  # one column
    for element in page.find("#choose, #top-k, .card, .tile"):
        assert element.rect["x"] >= 0 and element.rect["x"] + element.rect["width"] <= width
    assert not page.console_problems()


def test_the_policy_is_enforced_and_a_violation_would_be_seen(page: Page) -> None:
    """What the other tests' "no CSP violation" rests on: an inline script, as an unescaped
    label would make one, is refused, and the refusal is seen."""
    page.driver.execute_script(
        """const injected = document.createElement("script");
           injected.textContent = "window.pwned = 3";
           document.body.append(injected);"""
    )
    assert page.driver.execute_script("return window.pwned") is None
    problems = page.wait(page.console_problems, "the refused script was not reported")
    assert any("script-src" in problem for problem in problems), problems


def test_a_missing_browser_fails_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not a skip: CI must install Debian's Chromium, or say it did not."""
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "chromium")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium chromium-driver"):
        chromium(tmp_path / "profile")
