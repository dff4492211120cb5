"""The page at `/` over HTTP: what it is made of and the policy it is served with, its live
figures (`/stats`) summed over gunicorn's workers, and the setting that turns it off. What a
person sees in a browser is tests/modelserver/test_page_browser.py's."""

from __future__ import annotations

import argparse
import html.parser
import itertools
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from modelserver.config import Settings, add_flags, flags_to_env
from modelserver.stats import INFERENCE_ENDPOINTS
from serving import PAGE_MODEL_STEM, RunningServer, app_without_model

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class PageParts(html.parser.HTMLParser):
    """Every tag of a page with its attributes, and the text inside its scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._inside = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside and data.strip():
            self.inline.append(data)


def test_the_page_loads_nothing_but_its_own_files_under_a_strict_policy(
    page_server: RunningServer,
) -> None:
    answer = requests.get(page_server.url + "/", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "style-src 'self'" in policy and "unsafe" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    parts = PageParts()
    parts.feed(answer.text)
    assert not parts.inline, "inline script or style"
    handlers = [(tag, name) for tag, attrs in parts.tags for name in attrs if name[:2] == "on"]
    assert not handlers and not any("style" in attrs for _, attrs in parts.tags)
    links = [
        value
        for _, attrs in parts.tags
        for name, value in attrs.items()
        if name in ("src", "href") and value
    ]
    assert not [link for link in links if ":" in link or link.startswith("/")], links  # relative
    kinds = {"page/page.js": "text/javascript", "page/page.css": "text/css"}
    for path in {link for link in links if link.startswith("page/")}:
        asset = requests.get(f"{page_server.url}/{path}", timeout=10)
        assert asset.status_code == 200, path
        assert asset.headers["Content-Type"].startswith(kinds.get(path, "image/svg+xml"))
        assert asset.headers["Content-Security-Policy"] == policy
    assert set(kinds) <= set(links)


def test_the_model_name_is_escaped_into_the_page(page_server: RunningServer) -> None:
    """The served name is the model file's name: anyone's text."""
    page = requests.get(page_server.url + "/", timeout=10).text
    assert PAGE_MODEL_STEM not in page
    parts = PageParts()
    parts.feed(page)
    meta = next(attrs for tag, attrs in parts.tags if attrs.get("name") == "kubeclassify-model")
    assert meta["content"] == PAGE_MODEL_STEM


def test_the_script_writes_no_html_and_evaluates_nothing(repo_root: Path) -> None:
    """Labels and filenames reach the page as data: the script writes text (the browser tests
    show it for a label and a filename that are HTML); nothing it has may parse HTML or code."""
    script = (repo_root / "modelserver" / "modelserver" / "page" / "page.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert not re.search(r"new\s+Function|setTimeout\(\s*['\"`]", script)


@pytest.mark.parametrize("path", ["/page/nothing.js", "/page/..%2Fconfig.py", "/page/"])
def test_only_the_pages_own_files_are_served(page_server: RunningServer, path: str) -> None:
    assert requests.get(page_server.url + path, timeout=10).status_code == 404


def test_a_browser_opening_status_url_is_shown_the_page(page_server: RunningServer) -> None:
    """`status.url` names `/predict`: a person opening it gets the page, clients the 405."""
    opened = requests.get(
        page_server.url + "/predict",
        headers={"Accept": BROWSER_ACCEPT},
        allow_redirects=False,
        timeout=10,
    )
    assert (opened.status_code, opened.headers["Location"]) == (303, "./")  # from /predict: /
    for accept in ("application/json", "*/*"):
        called = requests.get(page_server.url + "/predict", headers={"Accept": accept}, timeout=10)
        assert called.status_code == 405 and called.json()["success"] is False


def test_every_answer_says_the_servers_share_of_its_latency(
    page_server: RunningServer, images_dir: Path
) -> None:
    started = time.perf_counter()
    answer = page_server.predict(images_dir / "dog.jpg")
    elapsed_ms = (time.perf_counter() - started) * 1000
    timing = re.fullmatch(r"app;dur=([\d.]+)", answer.headers["Server-Timing"])
    assert timing and 0 < float(timing.group(1)) <= elapsed_ms


def inference_requests(metrics_text: str) -> tuple[float, float]:
    """(answered, of which errors) of the classifications in /metrics' text: POSTs (and gRPC
    calls) to the classification endpoints, not a browser's GET sent on to the page."""
    answered = errors = 0.0
    for labels, value in re.findall(
        r"^modelserver_requests_total\{(.*)\} (\S+)$", metrics_text, re.M
    ):
        endpoint = re.search(r'endpoint="([^"]*)"', labels)
        method = re.search(r'method="([^"]*)"', labels)
        code = re.search(r'code="([^"]*)"', labels)
        assert endpoint and method and code
        if endpoint.group(1) in INFERENCE_ENDPOINTS and method.group(1) in ("POST", "grpc"):
            answered += float(value)
            errors += float(value) * (code.group(1) not in ("200", "OK"))
    return answered, errors


def stats(server: RunningServer) -> dict[str, Any]:
    """/stats on a connection of its own, so that any worker may answer."""
    answer = requests.get(server.url + "/stats", timeout=10, headers={"Connection": "close"})
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-cache"
    figures: dict[str, Any] = answer.json()
    return figures


def test_the_live_figures_are_the_whole_servers_whichever_worker_answers(
    page_server: RunningServer, images_dir: Path
) -> None:
    before = stats(page_server)["now"]
    for _ in range(100):  # a tick after anything earlier tests sent: the requests start after it
        points = stats(page_server)["points"]
        start = points[-1]["t"] if points else 0.0
        if start > before["t"]:
            break
        time.sleep(0.2)
    for _ in range(6):
        assert page_server.predict(images_dir / "dog.jpg").status_code == 200
    for _ in range(2):
        broken = requests.post(
            page_server.url + "/predict", files={"image": ("x.jpg", b"\xff\xd8 no")}, timeout=10
        )
        assert broken.status_code == 400
    sent_at = time.time()

    answered, errors = inference_requests(
        requests.get(page_server.url + "/metrics", timeout=10).text
    )
    by_worker: dict[int, dict[str, Any]] = {}
    for _ in range(200):
        figures = stats(page_server)
        now = figures["now"]
        assert (now["requests"], now["errors"]) == (answered, errors)
        assert (now["requests"] - before["requests"], now["errors"] - before["errors"]) == (8, 2)
        assert now["images"] - before["images"] == 6
        by_worker[figures["worker"]] = figures
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2, "one worker answered 200 requests in a row"

    # Once both have sampled past the requests, both hold the same points for them.
    step = next(iter(by_worker.values()))["step_s"]
    for _ in range(100):
        # A worker's points start with its first sample: none yet is not past the requests.
        if all(f["points"] and f["points"][-1]["t"] > sent_at + step for f in by_worker.values()):
            break
        time.sleep(0.2)
        figures = stats(page_server)
        by_worker[figures["worker"]] = figures
    first, second = ({p["t"]: p for p in f["points"]} for f in by_worker.values())
    assert max(first) > sent_at + step and max(second) > sent_at + step, "no sample since"
    common = sorted(set(first) & set(second))
    assert [first[t] for t in common] == [second[t] for t in common]

    # Each point is the interval since the one before it: together they count the requests.
    times = sorted(first)
    assert start in first, "the window no longer reaches back before the requests"
    counted = sum(
        first[t]["requests_per_s"] * (t - earlier)
        for earlier, t in itertools.pairwise(times)
        if earlier >= start
    )
    assert counted == pytest.approx(8, abs=0.1)
    after = [first[t] for t in times if t > start]
    assert any(p["latency_p50_ms"] for p in after) and any(p["batch_mean"] for p in after)


def test_the_page_can_be_turned_off() -> None:
    client = app_without_model(Settings(page=False)).test_client()
    for path in ("/", "/stats", "/page/page.js"):
        assert client.get(path).status_code == 404, path
    assert client.get("/predict", headers={"Accept": BROWSER_ACCEPT}).status_code == 405
    assert app_without_model(Settings()).test_client().get("/").status_code == 200


@pytest.mark.parametrize(
    ("flags", "page"), [([], None), (["--no-page"], "False"), (["--page"], "True")]
)
def test_the_page_setting_is_a_pair_of_flags(flags: list[str], page: str | None) -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    env = flags_to_env(parser.parse_args(flags))
    assert env.get("PAGE") == page
    assert Settings.from_env(env).page is (page != "False")


@pytest.mark.parametrize(("raw", "page"), [("false", False), ("0", False), ("True", True)])
def test_page_reads_as_people_write_true_and_false(raw: str, page: bool) -> None:
    assert Settings.from_env({"PAGE": raw}).page is page


def test_a_bad_page_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="PAGE='maybe': expected true or false"):
        Settings.from_env({"PAGE": "maybe"})


def test_the_wheel_ships_the_page(repo_root: Path, tmp_path: Path) -> None:
    """The image installs the server as a wheel: the page's files must be in it."""
    source = tmp_path / "modelserver"
    shutil.copytree(
        repo_root / "modelserver",
        source,
        ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    page = repo_root / "modelserver" / "modelserver" / "page"
    assert {f"modelserver/page/{f.name}" for f in page.iterdir()} <= names
