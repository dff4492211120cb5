"""The page for people, as a person reaches it on a real node: the classifier's `status.url`
opened in headless Chromium (Debian's) is the page, served by the pod through its Service, and
a photo chosen there is classified. Seeded weights give random labels: the test checks that
ImageNet labels come back, never which.

The browser goes only to the node IP (the Service's load-balancer address, as a bare-metal
provider would give it), which kube-proxy serves; its screenshot goes to build/artifacts/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser import Page, chromium
from control_plane import REPO_ROOT
from node import NODE_IP, NodeCluster

NAME = "page"
DOG = REPO_ROOT / "examples" / "images" / "dog.jpg"
CLASS_INDEX = REPO_ROOT / "modelserver" / "modelserver" / "data" / "imagenet_class_index.json"
LABELS = {label for _, label in json.loads(CLASS_INDEX.read_text()).values()}


@pytest.fixture(scope="module")
def status_url(node_cluster: NodeCluster, operator_installed: None) -> Iterator[str]:
    """examples/minimal.yaml (image swapped) under another name, Ready, its `status.url`."""
    with node_cluster.namespace() as namespace:
        manifest = node_cluster.example("minimal")
        manifest["metadata"]["name"] = NAME
        node_cluster.apply(manifest, namespace)
        node_cluster.wait_condition(
            NAME, namespace, status="False", reason="LoadBalancerPending", timeout=600
        )
        node_cluster.assign_load_balancer(NAME, namespace)
        classifier = node_cluster.wait_condition(NAME, namespace, timeout=60)
        yield classifier["status"]["url"]


def test_the_status_url_opens_the_page_and_classifies_a_photo(
    status_url: str, tmp_path: Path
) -> None:
    assert status_url.startswith(f"http://{NODE_IP}") and status_url.endswith("/predict")
    base = status_url.removesuffix("/predict")
    artifacts = REPO_ROOT / "build" / "artifacts" / "browser"
    artifacts.mkdir(parents=True, exist_ok=True)
    driver = chromium(tmp_path / "profile")
    page = Page(driver, base, artifacts / "e2e-status-url.png")
    try:
        driver.get(status_url)
        page.wait(lambda: page.text("#state") == "ready", "the page never said ready")
        opened = urlsplit(driver.current_url)  # the browser drops the URL's explicit :80
        assert (opened.hostname, opened.path) == (NODE_IP, "/")
        page.choose(DOG)
        (card,) = page.results(1)
        assert card.filename == "dog.jpg" and not card.error
        assert len(card.labels) == 5 and set(card.labels) <= LABELS
        assert not page.console_problems()
    finally:
        driver.save_screenshot(str(page.screenshot))
        driver.quit()
