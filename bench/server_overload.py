"""Overload benchmark: requests arrive at twice what the server can classify, with the
queue bound (MAX_QUEUE, the default) and without it (MAX_QUEUE=0), side by side in one run.

Arrivals are open-loop (Poisson, like independent users): nobody waits for an answer before
the next request comes, so a server without a bound builds a backlog that only grows.
Everything runs on loopback and stops by itself. Writes its section of docs/benchmarks.md.

Run: python bench/server_overload.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from report import write_section
from server_load import (
    PHOTOS_DIR,
    drive,
    multipart,
    start,
    stop,
    write_seeded_resnet50_weights,
)
from serving import free_port  # tests/support: on sys.path once server_load is imported

OVERLOAD = 2.0
LIVENESS_TIMEOUT_S = 3  # the operator's livenessProbe timeoutSeconds


@dataclass
class OverloadResult:
    label: str
    offered_per_s: float
    served_per_s: float
    shed_share: float
    served_p50_ms: float
    served_p99_ms: float
    shed_p99_ms: float
    healthz_max_ms: float
    healthz_misses: int
    healthz_probes: int
    other_errors: int
    requests: int


def probe(url: str, done: threading.Event, latencies: list[float]) -> None:
    """What the kubelet sees: /healthz twice a second with its 3 s timeout (a miss: inf)."""
    while not done.is_set():
        started = time.perf_counter()
        try:
            requests.get(url, timeout=LIVENESS_TIMEOUT_S)
            latencies.append(time.perf_counter() - started)
        except requests.RequestException:
            latencies.append(float("inf"))
        done.wait(0.5)


def open_loop(
    url: str, photos: list[bytes], rate: float, seconds: float
) -> list[tuple[int, float]]:
    """Send requests at Poisson arrival times for `seconds`; (status, latency s) of each."""
    bodies = [multipart(photo) for photo in photos]
    rng = np.random.default_rng(7)
    answers: list[tuple[int, float]] = []
    lock = threading.Lock()

    def one(body: bytes, content_type: str) -> None:
        started = time.perf_counter()
        try:
            status = requests.post(
                url, data=body, headers={"Content-Type": content_type}, timeout=300
            ).status_code
        except requests.RequestException:
            status = 0
        with lock:
            answers.append((status, time.perf_counter() - started))

    threads: list[threading.Thread] = []
    next_at, stop_at = time.monotonic(), time.monotonic() + seconds
    while next_at < stop_at:
        time.sleep(max(0.0, next_at - time.monotonic()))
        body, content_type = bodies[len(threads) % len(bodies)]
        thread = threading.Thread(target=one, args=(body, content_type))
        thread.start()
        threads.append(thread)
        next_at += rng.exponential(1 / rate)
    for thread in threads:
        thread.join()
    return answers


def summarize(
    label: str, answers: list[tuple[int, float]], rate: float, seconds: float, probes: list[float]
) -> OverloadResult:
    served = [latency for status, latency in answers if status == 200]
    shed = [latency for status, latency in answers if status == 503]

    def ms(latencies: list[float], q: float) -> float:
        return float(np.percentile(latencies, q) * 1000) if latencies else 0.0

    return OverloadResult(
        label=label,
        offered_per_s=rate,
        served_per_s=len(served) / seconds,
        shed_share=len(shed) / max(1, len(answers)),
        served_p50_ms=ms(served, 50),
        served_p99_ms=ms(served, 99),
        shed_p99_ms=ms(shed, 99),
        healthz_max_ms=max(p for p in probes if p != float("inf")) * 1000,
        healthz_misses=probes.count(float("inf")),
        healthz_probes=len(probes),
        other_errors=len(answers) - len(served) - len(shed),
        requests=len(answers),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="of overload per server")
    args = parser.parse_args()

    photos = [p.read_bytes() for p in sorted(PHOTOS_DIR.iterdir()) if p.suffix != ".md"]
    work = Path(tempfile.mkdtemp(prefix="kubeclassify-overload-"))
    weights = work / "resnet50_seeded.h5"
    write_seeded_resnet50_weights(weights, seed=1)
    results: list[OverloadResult] = []
    capacity = 0.0
    for label, max_queue in (("MAX_QUEUE default (24)", None), ("MAX_QUEUE=0 (no bound)", "0")):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "modelserver", "serve", "--weights", str(weights),
                   "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        if max_queue is not None:
            command += ["--max-queue", max_queue]
        server = start(command, base + "/readyz", work / f"server-{max_queue}.log")
        try:
            drive(base + "/predict", photos, 16, 5.0)  # warm up
            if not capacity:  # measured once, on the default server: both get the same load
                capacity = drive(base + "/predict", photos, 16, 20.0).images_per_s
                print(f"capacity: {capacity:.2f} images/s", flush=True)
            rate = OVERLOAD * capacity
            probes: list[float] = []
            done = threading.Event()
            prober = threading.Thread(target=probe, args=(base + "/healthz", done, probes))
            prober.start()
            started = time.monotonic()
            answers = open_loop(base + "/predict", photos, rate, args.seconds)
            elapsed = time.monotonic() - started
            done.set()
            prober.join()
            results.append(summarize(label, answers, rate, elapsed, probes))
            print(results[-1], flush=True)
        finally:
            stop(server)

    report = render(results, capacity, args.seconds)
    print(report)
    write_section("server_overload", report)


def render(results: list[OverloadResult], capacity: float, seconds: float) -> str:
    rows = "\n".join(
        f"| {r.label} | {r.offered_per_s:.1f} | {r.served_per_s:.2f} | {r.shed_share:.0%} "
        f"| {r.served_p50_ms:.0f} | {r.served_p99_ms:.0f} | {r.shed_p99_ms:.0f} "
        f"| {r.healthz_misses} / {r.healthz_probes} | {r.healthz_max_ms:.0f} "
        f"| {r.other_errors} / {r.requests} |"
        for r in results
    )
    bounded, unbounded = results
    header = (
        "| server | offered req/s | served req/s | shed (503) | served p50 ms | served p99 ms "
        "| 503 p99 ms | /healthz over 3 s | /healthz max ms (others) | other errors / requests |"
    )
    ratio = unbounded.served_p99_ms / max(1.0, bounded.served_p99_ms)
    return f"""## Model server: 2 x overload, with and without the queue bound

Produced by `python bench/server_overload.py --seconds {seconds:g}` (`make bench`), one run on
this machine ({os.cpu_count()} CPUs). ResNet50 with seeded weights under gunicorn (1 worker,
32 threads). Capacity, measured first with 16 closed-loop clients: {capacity:.2f} images/s.
Then {seconds:g} s of open-loop Poisson arrivals at {OVERLOAD:g} x that rate against each
server; no client retries; latencies count until the last answer, however late, and served
req/s is over the time until that last answer. Meanwhile `/healthz` is polled twice a second
with the liveness probe's 3 s timeout.

{header}
|---|---|---|---|---|---|---|---|---|---|
{rows}

- p99 latency of served requests: {bounded.served_p99_ms / 1000:.1f} s with the bound,
  {unbounded.served_p99_ms / 1000:.1f} s without it ({ratio:.1f} x); without a bound it grows
  with the length of the overload, since the backlog does.
- Shed requests are answered in {bounded.shed_p99_ms:.0f} ms at p99 with `Retry-After: 1`, so a
  client or a load balancer can go elsewhere at once instead of waiting in a queue.
- Liveness: with the bound, {bounded.healthz_misses} of {bounded.healthz_probes} probes missed
  the 3 s timeout; without it, {unbounded.healthz_misses} of {unbounded.healthz_probes} (three
  misses in a row and the kubelet restarts the pod, losing everything queued).
"""


if __name__ == "__main__":
    main()
