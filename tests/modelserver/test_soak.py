"""A bounded soak of the real ResNet50 server: good, bad and slow clients at once for
SOAK_SECONDS (default 60). Good requests all get their own right answer, bad ones their 4xx,
slow uploads do not hold up anyone else, and the worker's resident memory stays flat."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from serving import EXPECTED_TOP1, RunningServer

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
GOOD_CLIENTS, BAD_CLIENTS, SLOW_CLIENTS = 12, 3, 2  # 17 in flight: under the default MAX_QUEUE
BAD_PAUSE_S = 0.1  # bad requests are cheap: paced so they are a mix, not a flood
SLOW_CHUNK_BYTES, SLOW_PAUSE_S = 1024, 0.1  # dog.jpg in about 7 s
RSS_GROWTH_LIMIT_MB = 64  # allocator noise on a ~1 GB process; a per-request leak shows far more


@dataclass
class Tally:
    good: list[tuple[float, float]] = field(default_factory=list)  # (started, finished)
    slow: list[tuple[float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    bad_answers: int = 0
    rss_mb: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, failure: str | None = None, **spans: tuple[float, float]) -> None:
        with self.lock:
            if failure:
                self.failures.append(failure)
            for kind, span in spans.items():
                getattr(self, kind).append(span)


def worker_rss_mb(server: RunningServer) -> float:
    """Resident memory of gunicorn's (only) worker, the child of the server process."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def slow_post(url: str, photo: bytes) -> tuple[int, bytes]:
    """POST a photo to /predict a few KB at a time, as a client on a bad link does."""
    body, content_type = urllib3.encode_multipart_formdata({"image": ("slow.jpg", photo)})
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        for start in range(0, len(body), SLOW_CHUNK_BYTES):
            connection.send(body[start : start + SLOW_CHUNK_BYTES])
            time.sleep(SLOW_PAUSE_S)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def bad_requests(url: str, photo: bytes) -> list[Callable[[requests.Session], requests.Response]]:
    return [
        lambda s: s.post(url + "/predict", files={"image": photo[: len(photo) // 2]}, timeout=120),
        lambda s: s.post(url + "/predict", files={"image": b"not an image"}, timeout=120),
        lambda s: s.post(url + "/predict", data=photo, timeout=120),
        lambda s: s.post(url + "/v1/models/resnet50:predict", data=b"\xff{", timeout=120),
    ]


def test_soak_good_bad_and_slow_clients(resnet_server: RunningServer, images_dir: Path) -> None:
    server = resnet_server
    photos = {name: (images_dir / name).read_bytes() for name in sorted(EXPECTED_TOP1)}
    expected = {name: top1(server.predict(images_dir / name)) for name in photos}
    tally = Tally()
    stop_at = time.monotonic() + SOAK_SECONDS

    def good_client(offset: int) -> None:
        session, names = requests.Session(), list(photos)
        sent = offset
        while time.monotonic() < stop_at:
            name = names[sent % len(names)]
            sent += 1
            started = time.monotonic()
            answer = session.post(
                server.url + "/predict", files={"image": photos[name]}, timeout=120
            )
            ok = answer.status_code == 200 and top1(answer) == expected[name]
            failure = None if ok else f"{name}: {answer.status_code} {answer.text[:200]}"
            tally.record(failure, good=(started, time.monotonic()))

    def bad_client(offset: int) -> None:
        session, requests_ = requests.Session(), bad_requests(server.url, photos["dog.jpg"])
        sent = offset
        while time.monotonic() < stop_at:
            answer = requests_[sent % len(requests_)](session)
            sent += 1
            ok = 400 <= answer.status_code < 500 and answer.json()["success"] is False
            tally.record(None if ok else f"bad request got {answer.status_code}")
            with tally.lock:
                tally.bad_answers += 1
            time.sleep(BAD_PAUSE_S)

    def slow_client() -> None:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            status, body = slow_post(server.url, photos["dog.jpg"])
            ok = status == 200 and expected["dog.jpg"].encode() in body
            failure = None if ok else f"slow upload: {status} {body[:200]!r}"
            tally.record(failure, slow=(started, time.monotonic()))

    def sample_memory() -> None:
        while time.monotonic() < stop_at:
            tally.rss_mb.append(worker_rss_mb(server))
            time.sleep(1)

    threads = [
        *(threading.Thread(target=good_client, args=(i,)) for i in range(GOOD_CLIENTS)),
        *(threading.Thread(target=bad_client, args=(i,)) for i in range(BAD_CLIENTS)),
        *(threading.Thread(target=slow_client) for _ in range(SLOW_CLIENTS)),
        threading.Thread(target=sample_memory),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert tally.failures == [], tally.failures[:5]
    assert tally.bad_answers > 0 and tally.slow
    # Someone else's request started and finished inside every slow upload (judged while the
    # others were still sending: not the uploads that ran past the end).
    for slow_started, slow_finished in tally.slow:
        overtaken = [1 for s, f in tally.good if s > slow_started and f < slow_finished]
        assert overtaken or slow_finished > stop_at, "a slow upload held up every other client"
    # The allocator grows to its working set in the first minutes at full concurrency; a leak
    # keeps growing after that.
    settled = max(tally.rss_mb[: len(tally.rss_mb) // 3])
    growth = tally.rss_mb[-1] - settled
    print(
        f"{len(tally.good)} good, {tally.bad_answers} bad, {len(tally.slow)} slow requests in "
        f"{SOAK_SECONDS:g} s; worker RSS {settled:.0f} MB -> {tally.rss_mb[-1]:.0f} MB "
        f"(max {max(tally.rss_mb):.0f} MB); every 10 s: {tally.rss_mb[::10]}"
    )
    assert growth < RSS_GROWTH_LIMIT_MB, tally.rss_mb
    assert server.worker_boots() == 1


def top1(answer: requests.Response) -> str:
    assert answer.status_code == 200, answer.text
    label: str = answer.json()["predictions"][0]["label"]
    return label
