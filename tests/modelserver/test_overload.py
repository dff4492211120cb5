"""Overload: past MAX_QUEUE requests a worker answers 503 with Retry-After at once, says so
on /readyz, and serves again as soon as its queue drains."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from serving import RunningServer, start_server, wait_ready

MAX_QUEUE = 2
IMAGES_PER_HOLD = 48  # ResNet50 on a CPU: several seconds of work per holding request


@pytest.fixture(scope="module")
def small_queue_server(server_logs: Path, resnet_weights: Path) -> Iterator[RunningServer]:
    server = start_server(
        server_logs, "--weights", str(resnet_weights), "--threads", "8", "--max-queue", "2"
    )
    wait_ready(server)
    yield server
    server.stop()


def in_flight(server: RunningServer) -> int:
    described = requests.get(server.url + "/v1/models/resnet50", timeout=10).json()
    count: int = described["in_flight"]
    return count


def test_requests_over_the_bound_are_shed_and_readiness_says_so(
    small_queue_server: RunningServer, images_dir: Path
) -> None:
    server = small_queue_server
    dog = (images_dir / "dog.jpg").read_bytes()
    heavy = [("image", (f"dog{i}.jpg", dog)) for i in range(IMAGES_PER_HOLD)]
    shed_before = server.metric("modelserver_requests_shed_total")
    with ThreadPoolExecutor(MAX_QUEUE) as pool:
        holds = [
            pool.submit(requests.post, server.url + "/predict", files=heavy, timeout=300)
            for _ in range(MAX_QUEUE)
        ]
        deadline = time.monotonic() + 60
        while in_flight(server) < MAX_QUEUE:
            assert time.monotonic() < deadline, "the holding requests never arrived"
            time.sleep(0.02)

        refused = server.predict(images_dir / "dog.jpg")
        instance = {"b64": base64.b64encode(dog).decode()}
        refused_v1 = requests.post(
            server.url + "/v1/models/resnet50:predict", json={"instances": [instance]}, timeout=30
        )
        readiness = requests.get(server.url + "/readyz", timeout=30)
        alive = requests.get(server.url + "/healthz", timeout=30)
        held = [hold.result() for hold in holds]

    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {
        "success": False,
        "error": "over capacity: 2 requests are already queued (MAX_QUEUE=2); retry later",
    }
    assert refused_v1.status_code == 503
    assert (readiness.status_code, readiness.json()["status"]) == (503, "overloaded")
    assert alive.status_code == 200
    assert [answer.status_code for answer in held] == [200, 200]
    assert all(len(answer.json()["results"]) == IMAGES_PER_HOLD for answer in held)
    assert server.metric("modelserver_requests_shed_total") == shed_before + 2

    assert requests.get(server.url + "/readyz", timeout=30).status_code == 200
    again = server.predict(images_dir / "dog.jpg")
    assert again.status_code == 200 and again.json()["success"] is True
