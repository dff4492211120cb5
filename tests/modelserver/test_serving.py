"""The server as a process: concurrency and batching, readiness, draining on SIGTERM,
and failing loudly when the model cannot be had."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from modelserver.config import Settings
from serving import (
    EXPECTED_TOP1,
    HeldServer,
    RunningServer,
    start_held_server,
    start_server,
    wait_draining,
    wait_ready,
    wait_until,
)


@pytest.fixture(scope="module")
def held_mobilenet_server(
    server_logs: Path, mobilenet_file: Path, mobilenet_labels: Path
) -> Iterator[HeldServer]:
    server = start_held_server(
        server_logs, "--model-file", str(mobilenet_file), "--labels", str(mobilenet_labels)
    )
    wait_ready(server)
    yield server
    server.stop()


def test_concurrent_requests_are_batched_and_all_correct(
    held_mobilenet_server: HeldServer, images_dir: Path, mobilenet_labels: Path
) -> None:
    """As many requests as a worker takes without shedding, all but one queued behind a pass
    held until they are (however fast the CPU): they share full batches, all answered right."""
    server, hold = held_mobilenet_server, held_mobilenet_server.hold
    labels = mobilenet_labels.read_text().splitlines()
    settings = Settings()
    in_bound = settings.queue_limit or 32  # as many at once as a worker takes without shedding
    photos = (sorted(EXPECTED_TOP1) * 3)[:in_bound]

    def classify(photo: str) -> str:
        answer = server.predict(images_dir / photo)
        assert answer.status_code == 200, answer.text
        label: str = answer.json()["predictions"][0]["label"]
        return label

    hold.hold()
    with ThreadPoolExecutor(len(photos)) as pool:
        try:
            first = pool.submit(classify, photos[0])
            hold.wait_passing()
            others = [pool.submit(classify, photo) for photo in photos[1:]]
            queued = len(others)
            wait_until(
                lambda: server.metric("modelserver_queue_depth") == queued,
                f"{queued} images never queued behind the held pass",
            )
        finally:
            hold.release()
        answers = [first.result(), *(other.result() for other in others)]
    assert answers == [labels[EXPECTED_TOP1[photo] + 1] for photo in photos]
    max_size = settings.batch_max_size
    full, rest = divmod(queued, max_size)
    assert hold.batches() == [1, *[max_size] * full, *([rest] if rest else [])]


def test_503_until_the_model_is_warm_then_sigterm_drains(
    server_logs: Path, resnet_weights: Path, images_dir: Path
) -> None:
    """The model is held from the start, then again with 8 requests in it when SIGTERM comes
    (however fast the CPU): answers say it is loading until it is warm, and once the worker
    has taken SIGTERM, the 8 still get their answers and the server exits cleanly."""
    server = start_held_server(
        server_logs, "--weights", str(resnet_weights), "--graceful-timeout", "60", held=True
    )
    try:
        early = first_answer(server, "/predict")
        loading = requests.get(server.url + "/readyz", timeout=30)
        server.hold.release()
        wait_ready(server)
        statuses, exit_code = post_then_sigterm(server, (images_dir / "dog.jpg").read_bytes())
    finally:
        server.hold.release()
        server.process.kill()
    assert (loading.status_code, loading.json()["status"]) == (503, "loading")
    assert early.status_code == 503 and early.headers["Retry-After"]
    assert "still loading" in early.json()["error"]
    assert statuses == [200] * 8
    assert exit_code == 0, server.log_tail()


def first_answer(server: RunningServer, path: str) -> requests.Response:
    """The first answer to a POST of a photo, as soon as the server listens."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return requests.post(server.url + path, files={"image": b"x"}, timeout=60)
        except requests.ConnectionError:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)


def post_then_sigterm(server: HeldServer, photo: bytes) -> tuple[list[int], int]:
    """Send 8 requests with the model held; once all 8 are in the worker, SIGTERM the server,
    and when the worker has taken it, let the model go; their statuses, the exit status."""
    server.hold.hold()
    with ThreadPoolExecutor(8) as pool:
        answers = [
            pool.submit(requests.post, server.url + "/predict", files={"image": photo}, timeout=120)
            for _ in range(8)
        ]
        try:
            server.hold.wait_passing()
            wait_until(
                lambda: server.metric("modelserver_requests_in_flight") == 8,
                "the 8 requests never all reached the worker",
            )
            server.process.send_signal(signal.SIGTERM)
            wait_draining(server)
        finally:
            server.hold.release()
        statuses = [answer.result().status_code for answer in answers]
    return statuses, server.process.wait(timeout=120)


def test_a_bad_weights_file_stops_the_server_with_the_reason(
    server_logs: Path, mobilenet_file: Path
) -> None:
    server = start_server(server_logs, "--weights", str(mobilenet_file))
    assert server.process.wait(timeout=120) != 0
    assert "is not a ResNet50 ImageNet weights file" in server.log_tail()


def test_offline_the_default_weights_fail_with_what_to_set_instead(tmp_path: Path) -> None:
    offline = {
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "no_proxy": "",
        "KERAS_HOME": str(tmp_path),
        "MODEL_WEIGHTS": "imagenet",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "modelserver", "serve"],
        env=offline,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cannot download the official ResNet50 ImageNet weights" in result.stderr
    assert "MODEL_WEIGHTS" in result.stderr and "MODEL_FILE" in result.stderr


def test_the_predict_command_prints_a_table_or_json(
    mobilenet_server: RunningServer, images_dir: Path
) -> None:
    photos = [str(images_dir / "dog.jpg"), str(images_dir / "soccer_ball.jpg")]
    command = [sys.executable, "-m", "modelserver", "predict", *photos]
    url = ["--url", mobilenet_server.url + "/predict"]
    table = subprocess.run(command + url, capture_output=True, text=True, check=True).stdout
    assert re.search(r"dog\.jpg\n  1\. beagle +[01]\.\d{4}\n", table), table
    assert re.search(r"soccer_ball\.jpg\n  1\. soccer ball +[01]\.\d{4}\n", table), table
    as_json = subprocess.run(
        [*command, *url, "--json", "--top-k", "2"], capture_output=True, text=True, check=True
    ).stdout
    answers = json.loads(as_json)
    assert [a["image"] for a in answers] == photos
    assert [len(a["predictions"]) for a in answers] == [2, 2]
    assert answers[0]["predictions"][0]["label"] == "beagle"


def test_the_predict_command_reports_a_server_error(
    mobilenet_server: RunningServer, tmp_path: Path
) -> None:
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("not an image")
    result = subprocess.run(
        [sys.executable, "-m", "modelserver", "predict", str(not_a_photo),
         "--url", mobilenet_server.url + "/predict"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "HTTP 400: not an image" in result.stderr
