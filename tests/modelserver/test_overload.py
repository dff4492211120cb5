"""Overload: past MAX_QUEUE requests a worker answers 503 with Retry-After at once, says so
on /readyz, and serves again as soon as its queue drains."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from serving import HeldServer, RunningServer, start_held_server, wait_ready, wait_until

MAX_QUEUE = 2


@pytest.fixture(scope="module")
def small_queue_server(server_logs: Path, resnet_weights: Path) -> Iterator[HeldServer]:
    server = start_held_server(
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
    small_queue_server: HeldServer, images_dir: Path
) -> None:
    """Two requests fill the queue, the model held until the test is done with the others
    (however fast the CPU): those are refused, readiness says why, liveness does not."""
    server = small_queue_server
    dog = (images_dir / "dog.jpg").read_bytes()
    shed_before = server.metric("modelserver_requests_shed_total")
    server.hold.hold()
    with ThreadPoolExecutor(MAX_QUEUE) as pool:
        try:
            holding = [
                pool.submit(server.predict, images_dir / "dog.jpg") for _ in range(MAX_QUEUE)
            ]
            wait_until(lambda: in_flight(server) == MAX_QUEUE, "the holding requests never came")
            refused = server.predict(images_dir / "dog.jpg")
            instance = {"b64": base64.b64encode(dog).decode()}
            refused_v1 = requests.post(
                server.url + "/v1/models/resnet50:predict",
                json={"instances": [instance]},
                timeout=30,
            )
            readiness = requests.get(server.url + "/readyz", timeout=30)
            alive = requests.get(server.url + "/healthz", timeout=30)
        finally:
            server.hold.release()
        held = [request.result() for request in holding]

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
    assert all(answer.json()["success"] for answer in held)
    assert server.metric("modelserver_requests_shed_total") == shed_before + 2

    assert requests.get(server.url + "/readyz", timeout=30).status_code == 200
    again = server.predict(images_dir / "dog.jpg")
    assert again.status_code == 200 and again.json()["success"] is True
