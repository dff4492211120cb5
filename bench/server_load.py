"""Load benchmark of the model server (ResNet50 under gunicorn), side by side with its ceiling
(the raw batched forward pass, in-process) and a baseline (the tutorial's Flask design).

ResNet50's speed does not depend on its weight values, so seeded random weights serve.
Everything runs on loopback and stops by itself. Writes its section of docs/benchmarks.md.

Run: python bench/server_load.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import urllib3
from modelserver.models.base import Runtime
from modelserver.models.cpu import available_cpus
from modelserver.models.keras import ResNet50Classifier, configure_tensorflow_threads
from report import write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # the helpers shared with the tests

from seeded import write_seeded_resnet50_weights as write_seeded_resnet50_weights  # noqa: E402
from serving import free_port  # noqa: E402

PHOTOS_DIR = Path(os.environ.get("KUBECLASSIFY_SHARED", REPO.parent / "shared")) / "images"
CONCURRENCY = (1, 4, 16, 64)


@dataclass
class LoadResult:
    concurrency: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    shed: int
    requests: int
    client_cores: float


def multipart(photo: bytes) -> tuple[bytes, str]:
    """A /predict body, encoded once so that the clients spend little CPU per request."""
    body, content_type = urllib3.encode_multipart_formdata({"image": ("photo", photo)})
    return body, content_type


def drive(url: str, photos: list[bytes], concurrency: int, seconds: float) -> LoadResult:
    """Closed loop: `concurrency` clients post photos back to back for `seconds`.

    A client told 503 (over the server's queue bound) waits its `Retry-After`, as a good
    client does; those answers count as shed, not as errors."""
    bodies = [multipart(photo) for photo in photos]
    latencies: list[float] = []
    errors = shed = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        nonlocal errors, shed
        session = requests.Session()
        sent = offset
        while time.monotonic() < stop_at:
            body, content_type = bodies[sent % len(bodies)]
            sent += 1
            started = time.perf_counter()
            try:
                answer = session.post(
                    url, data=body, headers={"Content-Type": content_type}, timeout=120
                )
                status = answer.status_code
                ok = status == 200 and answer.json().get("success") is True
            except requests.RequestException:
                status, ok = 0, False
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                elif status == 503:
                    shed += 1
                else:
                    errors += 1
            if status == 503:
                time.sleep(float(answer.headers.get("Retry-After", "1")))

    started, cpu_started = time.monotonic(), time.process_time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    client_cores = (time.process_time() - cpu_started) / elapsed
    quantiles = np.percentile(latencies, [50, 95, 99]) * 1000 if latencies else [0.0] * 3
    return LoadResult(
        concurrency,
        len(latencies) / elapsed,
        float(quantiles[0]),
        float(quantiles[1]),
        float(quantiles[2]),
        errors,
        shed,
        len(latencies) + errors + shed,
        client_cores,
    )


def start(command: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log.parent
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=30).status_code in (200, 405):
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command[:4]} never got ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def mean_batch_size(url: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram."""
    text = requests.get(url, timeout=10).text
    total = re.search(r"^modelserver_batch_size_sum (\S+)$", text, re.MULTILINE)
    count = re.search(r"^modelserver_batch_size_count (\S+)$", text, re.MULTILINE)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def raw_images_per_s(
    classifier: ResNet50Classifier, batch_size: int, seconds: float
) -> tuple[float, float]:
    """The ceiling: the compiled forward pass alone (images/s, ms per batch)."""
    batch = np.random.default_rng(0).uniform(-120, 130, (batch_size, 224, 224, 3))
    batch = batch.astype(np.float32)
    classifier.predict_batch(batch)
    timings: list[float] = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at or len(timings) < 3:
        started = time.perf_counter()
        classifier.predict_batch(batch)
        timings.append(time.perf_counter() - started)
    per_batch = statistics.median(timings)
    return batch_size / per_batch, per_batch * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    args = parser.parse_args()

    configure_tensorflow_threads(available_cpus())  # the server's thread pools, for the ceiling
    photos = [p.read_bytes() for p in sorted(PHOTOS_DIR.iterdir()) if p.suffix != ".md"]
    work = Path(tempfile.mkdtemp(prefix="kubeclassify-bench-"))
    weights = work / "resnet50_seeded.h5"
    write_seeded_resnet50_weights(weights, seed=1)
    port, baseline_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"

    server = start(
        [sys.executable, "-m", "modelserver", "serve", "--weights", str(weights),
         "--host", "127.0.0.1", "--port", str(port)],
        base + "/readyz",
        work / "server.log",
    )  # fmt: skip
    results = []
    batch_at_16 = 1.0
    try:
        drive(base + "/predict", photos, 16, min(5.0, args.seconds))  # warm up
        for concurrency in CONCURRENCY:
            before = mean_batch_size(base + "/metrics")
            results.append(drive(base + "/predict", photos, concurrency, args.seconds))
            after = mean_batch_size(base + "/metrics")
            if concurrency == 16:
                batch_at_16 = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            print(results[-1], flush=True)
    finally:
        stop(server)

    used_batch = max(1, round(batch_at_16))
    classifier = ResNet50Classifier(weights, Runtime("tensorflow", "fp32", "CPU", available_cpus()))
    ceiling, _ = raw_images_per_s(classifier, used_batch, args.seconds)
    _, single_ms = raw_images_per_s(classifier, 1, args.seconds)
    print(f"raw ceiling at batch {used_batch}: {ceiling:.2f} images/s; batch 1: {single_ms:.1f} ms")

    baseline_process = start(
        [sys.executable, str(REPO / "bench" / "tutorial_baseline.py"), str(weights),
         str(baseline_port)],
        f"http://127.0.0.1:{baseline_port}/predict",
        work / "baseline.log",
    )  # fmt: skip
    try:
        baseline_url = f"http://127.0.0.1:{baseline_port}/predict"
        drive(baseline_url, photos, 16, min(5.0, args.seconds))
        baseline = [drive(baseline_url, photos, c, args.seconds) for c in (1, 16)]
    finally:
        stop(baseline_process)
    print(baseline)

    report = render(results, baseline, ceiling, used_batch, batch_at_16, single_ms, args.seconds)
    print(report)
    write_section("server_load", report)


def render(
    results: list[LoadResult],
    baseline: list[LoadResult],
    ceiling: float,
    used_batch: int,
    batch_at_16: float,
    single_ms: float,
    seconds: float,
) -> str:
    at = {r.concurrency: r for r in results}
    rows = "\n".join(
        f"| {name} | {r.concurrency} | {r.images_per_s:.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} "
        f"| {r.p99_ms:.0f} | {r.errors} / {r.shed} / {r.requests} | {r.client_cores:.2f} |"
        for name, group in (("server", results), ("tutorial baseline", baseline))
        for r in group
    )
    to_ceiling = at[16].images_per_s / ceiling
    to_baseline = at[16].images_per_s / baseline[1].images_per_s
    p50_gap = at[1].p50_ms - single_ms
    errors = sum(r.errors for r in results)

    def row(target: str, measured: str, ok: bool) -> str:
        return f"| {target} | {measured} | {'met' if ok else 'NOT met'} |"

    c16, c1 = "concurrency 16 throughput", "concurrency 1 p50"
    targets = "\n".join(
        [
            row(f"{c16} >= 0.85 x ceiling", f"{to_ceiling:.2f} x", to_ceiling >= 0.85),
            row(f"{c16} >= 2 x tutorial baseline", f"{to_baseline:.2f} x", to_baseline >= 2),
            row(f"{c1} within 15 ms of a raw batch-1 pass", f"{p50_gap:+.1f} ms", p50_gap <= 15),
            row("zero errors", str(errors), errors == 0),
        ]
    )

    return f"""## Model server: ResNet50 under gunicorn (1 worker, dynamic batching)

Produced by `python bench/server_load.py --seconds {seconds:g}` (`make bench`), all figures
from one run on this machine ({os.cpu_count()} CPUs, TensorFlow on the CPU). ResNet50 with
seeded random weights (speed does not depend on the values), the photos of
`../shared/images` posted round-robin by closed-loop clients on loopback, {seconds:g} s per
row. The clients run on the same 2 cores as the server and take the share of the CPU shown in
the last column, in cores (bodies are encoded once, so that share is mostly HTTP). Past the
server's queue bound (`MAX_QUEUE`, 24 by default) requests are shed with 503; such a client
waits the `Retry-After` (1 s) and tries again.

| server | clients | images/s | p50 ms | p95 ms | p99 ms | errors / shed / requests | client CPU |
|---|---|---|---|---|---|---|---|
{rows}

- Mean batch size at concurrency 16: {batch_at_16:.1f}.
- Ceiling, the raw compiled forward pass in-process at batch {used_batch}: {ceiling:.2f} images/s.
- Raw batch-1 forward pass: {single_ms:.1f} ms.
- The ceiling itself is {ceiling / baseline[1].images_per_s:.2f} x the tutorial baseline at
  concurrency 16: on a CPU, batching gains little over batch 1 (the cores are busy either
  way), so a server can beat the baseline only by the baseline's own overheads (Keras'
  `model.predict` per request, concurrent passes fighting for the cores), not by more FLOPs.

### Targets

| target | measured | |
|---|---|---|
{targets}
"""


if __name__ == "__main__":
    main()
