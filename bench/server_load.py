"""Load benchmark of the model server (ResNet50 under gunicorn), one set of rows per backend
and precision, each side by side with its ceiling (the raw forward pass, in-process), and a
baseline (the tutorial's Flask design). All in one run, so that the ratios hold even on a
machine shared with other work.

ResNet50's speed does not depend on its weight values, so seeded random weights serve (and
the INT8 IR is quantized from them with the agreement gate off). Everything runs on loopback
and stops by itself. Writes its section of docs/benchmarks.md.

Run: python bench/server_load.py [--seconds 15]
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
import urllib3
from modelserver.config import Settings
from modelserver.models.base import Classifier
from modelserver.models.cpu import available_cpus, capabilities
from modelserver.models.registry import load_classifier
from plots import SUBJECTS, Row, concurrency_charts
from report import write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # the helpers shared with the tests

from seeded import write_int8_ir  # noqa: E402
from seeded import write_seeded_resnet50_weights as write_seeded_resnet50_weights  # noqa: E402
from serving import RUNTIMES, free_port  # noqa: E402

PHOTOS_DIR = Path(os.environ.get("KUBECLASSIFY_SHARED", REPO.parent / "shared")) / "images"
CONCURRENCY = (1, 4, 16, 64)
BASELINE = "tutorial baseline"


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
    server_cpu_ms_per_image: float = 0.0

    def chart_row(self) -> Row:
        latency = {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms}
        return Row(self.concurrency, self.images_per_s, latency)


@dataclass
class Runtime:
    """One backend and precision: its rows through HTTP and its in-process figures."""

    backend: str
    precision: str
    results: list[LoadResult] = field(default_factory=list)
    batch_at_16: float = 1.0
    ceiling: float = 0.0
    single_ms: float = 0.0
    infer_cpu_ms: float = 0.0
    preprocess_cpu_ms: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    def at(self, concurrency: int) -> LoadResult:
        return next(r for r in self.results if r.concurrency == concurrency)


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
        time.sleep(0.05)
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


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (gunicorn's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(child) for child in children)
        except (OSError, ValueError):
            continue
    return total


def serve_and_drive(
    runtime: Runtime,
    weights: Path,
    cache_dir: Path,
    photos: list[bytes],
    seconds: float,
    work: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(
        [sys.executable, "-m", "modelserver", "serve", "--weights", str(weights),
         "--backend", runtime.backend, "--precision", runtime.precision,
         "--cache-dir", str(cache_dir), "--host", "127.0.0.1", "--port", str(port)],
        base + "/readyz",
        work / f"server-{runtime.backend}-{runtime.precision}.log",
    )  # fmt: skip
    try:
        drive(base + "/predict", photos, 16, min(5.0, seconds))  # warm up
        for concurrency in CONCURRENCY:
            before, cpu_before = mean_batch_size(base + "/metrics"), process_tree_cpu_s(server.pid)
            result = drive(base + "/predict", photos, concurrency, seconds)
            after, cpu_after = mean_batch_size(base + "/metrics"), process_tree_cpu_s(server.pid)
            images = after[0] - before[0]
            result.server_cpu_ms_per_image = (cpu_after - cpu_before) * 1000 / max(1.0, images)
            if concurrency == 16:
                runtime.batch_at_16 = images / max(1.0, after[1] - before[1])
            runtime.results.append(result)
            print(runtime.name, result, flush=True)
    finally:
        stop(server)


def cold_start_s(weights: Path, cache_dir: Path, work: Path) -> float:
    """Process start to ready for the default (`auto`) server, its compiled model cached."""
    port = free_port()
    started = time.monotonic()
    server = start(
        [sys.executable, "-m", "modelserver", "serve", "--weights", str(weights),
         "--cache-dir", str(cache_dir), "--host", "127.0.0.1", "--port", str(port)],
        f"http://127.0.0.1:{port}/readyz",
        work / "server-cold-start.log",
    )  # fmt: skip
    seconds = time.monotonic() - started
    stop(server)
    return seconds


def measure_raw(
    runtime: Runtime, weights: Path, cache_dir: Path, photos: list[bytes], seconds: float
) -> None:
    """The ceiling of a backend: its forward pass alone, in this process, at the batch size
    the server used at concurrency 16, and at batch 1; and the CPU its request threads spend
    per image decoding and resizing."""
    classifier = load_classifier(
        Settings(
            weights=str(weights),
            backend=runtime.backend,
            precision=runtime.precision,
            cache_dir=cache_dir,
        )
    )
    inputs = [classifier.preprocess(photo, 40_000_000) for photo in photos]
    cpu_started = time.process_time()
    for photo in photos * 3:
        classifier.preprocess(photo, 40_000_000)
    runtime.preprocess_cpu_ms = (time.process_time() - cpu_started) * 1000 / (3 * len(photos))
    used_batch = max(1, round(runtime.batch_at_16))
    runtime.ceiling, _, runtime.infer_cpu_ms = timed_passes(classifier, inputs, used_batch, seconds)
    _, runtime.single_ms, _ = timed_passes(classifier, inputs, 1, seconds)
    print(
        f"{runtime.name}: ceiling at batch {used_batch} {runtime.ceiling:.1f} images/s, "
        f"batch 1 {runtime.single_ms:.1f} ms, inference {runtime.infer_cpu_ms:.1f} CPU ms and "
        f"preprocessing {runtime.preprocess_cpu_ms:.1f} CPU ms per image",
        flush=True,
    )


def timed_passes(
    classifier: Classifier, inputs: list[np.ndarray], batch_size: int, seconds: float
) -> tuple[float, float, float]:
    """(images/s, ms per pass, CPU ms per image) of back-to-back passes at `batch_size`."""
    batch = np.stack([inputs[i % len(inputs)] for i in range(batch_size)])
    classifier.predict_batch(batch)
    timings: list[float] = []
    stop_at = time.monotonic() + seconds
    cpu_started = time.process_time()
    while time.monotonic() < stop_at or len(timings) < 3:
        started = time.perf_counter()
        classifier.predict_batch(batch)
        timings.append(time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu_started) * 1000 / (len(timings) * batch_size)
    per_batch = statistics.median(timings)
    return batch_size / per_batch, per_batch * 1000, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="per measurement")
    args = parser.parse_args()

    photos = [p.read_bytes() for p in sorted(PHOTOS_DIR.iterdir()) if p.suffix != ".md"]
    work = Path(tempfile.mkdtemp(prefix="kubeclassify-bench-"))
    cache_dir = work / "cache"
    weights = work / "resnet50_seeded.h5"
    write_seeded_resnet50_weights(weights, seed=1)
    write_int8_ir(weights, PHOTOS_DIR, cache_dir)
    runtimes = [Runtime(backend, precision) for backend, precision in RUNTIMES]
    loads = [os.getloadavg()[0]]  # how busy the machine was with other work, as it went
    for runtime in runtimes:
        serve_and_drive(runtime, weights, cache_dir, photos, args.seconds, work)
        loads.append(os.getloadavg()[0])
    cold_start = cold_start_s(weights, cache_dir, work)
    print(f"cold start with a cached compiled model: {cold_start:.1f} s", flush=True)
    for runtime in runtimes:
        measure_raw(runtime, weights, cache_dir, photos, args.seconds)
        loads.append(os.getloadavg()[0])

    baseline_port = free_port()
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

    measured = {rt.name: rt.results for rt in runtimes} | {BASELINE: baseline}
    charts = concurrency_charts(
        "server_load",
        SUBJECTS["server_load"],
        {name: [r.chart_row() for r in results] for name, results in measured.items()},
    )
    report = render(runtimes, baseline, cold_start, args.seconds, loads, charts)
    print(report)
    write_section("server_load", report)


def render(
    runtimes: list[Runtime],
    baseline: list[LoadResult],
    cold_start: float,
    seconds: float,
    loads: list[float],
    charts: str,
) -> str:
    rows = "\n".join(
        f"| {name} | {r.concurrency} | {r.images_per_s:.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} "
        f"| {r.p99_ms:.0f} | {r.errors} / {r.shed} / {r.requests} | {r.client_cores:.2f} "
        f"| {r.server_cpu_ms_per_image:.0f} |"
        for name, group in [(rt.name, rt.results) for rt in runtimes] + [(BASELINE, baseline)]
        for r in group
    )
    raw = "\n".join(
        f"| {rt.name} | {rt.ceiling:.2f} (batch {max(1, round(rt.batch_at_16))}) "
        f"| {rt.single_ms:.1f} | {rt.infer_cpu_ms:.0f} | {rt.preprocess_cpu_ms:.1f} "
        f"| {rt.at(16).server_cpu_ms_per_image:.0f} "
        f"| {rt.at(16).server_cpu_ms_per_image - rt.infer_cpu_ms - rt.preprocess_cpu_ms:.0f} |"
        for rt in runtimes
    )
    tensorflow = next(rt for rt in runtimes if rt.backend == "tensorflow")
    default_precision = "bf16" if capabilities()["native_bf16"] else "fp32"
    default = next(
        rt for rt in runtimes if (rt.backend, rt.precision) == ("openvino", default_precision)
    )
    int8 = next(rt for rt in runtimes if rt.precision == "int8")

    checks: list[tuple[str, str, bool]] = []
    for rt in runtimes:
        to_ceiling = rt.at(16).images_per_s / rt.ceiling
        c16_over_c1 = rt.at(16).images_per_s / rt.at(1).images_per_s
        p50_gap = rt.at(1).p50_ms - rt.single_ms
        checks += [
            (f"{rt.name}: concurrency 16 >= 0.9 x its raw ceiling", f"{to_ceiling:.2f} x",
             to_ceiling >= 0.9),
            (f"{rt.name}: concurrency 16 >= concurrency 1", f"{c16_over_c1:.2f} x",
             c16_over_c1 >= 1),
            (f"{rt.name}: concurrency 1 p50 within 10 ms of a raw batch-1 pass",
             f"{p50_gap:+.1f} ms", p50_gap <= 10),
        ]  # fmt: skip
    auto_ratio = default.at(16).images_per_s / tensorflow.ceiling
    int8_ratio = int8.at(16).images_per_s / tensorflow.ceiling
    errors = sum(r.errors for rt in runtimes for r in rt.results)
    checks += [
        (f"default (`auto`: openvino {default_precision}) at concurrency 16 >= 2.2 x "
         "TensorFlow FP32's raw ceiling", f"{auto_ratio:.2f} x", auto_ratio >= 2.2),
        ("INT8 at concurrency 16 >= 4 x TensorFlow FP32's raw ceiling", f"{int8_ratio:.2f} x",
         int8_ratio >= 4),
        ("cold start (process start to ready), compiled model cached, <= 3 s",
         f"{cold_start:.1f} s", cold_start <= 3),
        ("zero errors", str(errors), errors == 0),
    ]  # fmt: skip
    targets = "\n".join(
        f"| {target} | {measured} | {'met' if ok else 'NOT met'} |"
        for target, measured, ok in checks
    )
    load_header = (
        "| server | clients | images/s | p50 ms | p95 ms | p99 ms | errors / shed / requests "
        "| client CPU | server CPU ms / image |\n|---|---|---|---|---|---|---|---|---|"
    )
    raw_header = (
        "| backend | raw images/s | raw batch-1 ms | inference CPU ms | decode + resize CPU ms "
        "| server CPU ms at 16 | rest (HTTP, Flask, batching) ms |\n|---|---|---|---|---|---|---|"
    )
    cpu = capabilities()
    notes = [
        f"- Where the CPU goes at concurrency 16 with the default ({default.name}), per image: "
        f"inference {default.infer_cpu_ms:.0f} ms, decoding and resizing "
        f"{default.preprocess_cpu_ms:.1f} ms "
        f"({default.preprocess_cpu_ms / default.at(16).server_cpu_ms_per_image:.0%} of the "
        f"server's {default.at(16).server_cpu_ms_per_image:.0f} ms), the rest (HTTP, Flask, "
        "batching, threads) what remains; the server's CPU is a whole process tree's, "
        "inference and decoding in-process figures, so the split is approximate.",
    ]
    spent = tensorflow.at(16).server_cpu_ms_per_image
    notes.append(
        "- CPU per image, what a user pays for and the figure that other load on the machine "
        f"distorts least: at concurrency 16 the server spends {spent:.0f} ms with "
        f"{tensorflow.name}, "
        + ", ".join(
            f"{rt.name} {rt.at(16).server_cpu_ms_per_image:.0f} ms "
            f"({spent / rt.at(16).server_cpu_ms_per_image:.2f} x less)"
            for rt in runtimes
            if rt is not tensorflow
        )
        + "."
    )
    if not cpu["native_bf16"]:
        notes.append(
            "- This CPU has no native BF16 (neither avx512_bf16 nor amx_bf16), so there is no "
            "BF16 row: `MODEL_PRECISION=bf16` is refused here (tests/modelserver/"
            "test_runtime.py), and `auto` is FP32."
        )
    if not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu["flags"]):
        notes.append(
            "- Nor has it VNNI or AMX: INT8 runs on AVX2's 8-bit multiply-adds, which gain "
            "less over FP32 than the VNNI/AMX CPU the targets were set for."
        )
    reading = "\n".join(notes)
    return f"""## Model server: ResNet50 under gunicorn, per backend and precision

Produced by `python bench/server_load.py --seconds {seconds:g}` (`make bench`), all figures
from one run on this machine: {cpu["model"]}, {available_cpus()} CPUs, flags
{", ".join(cpu["flags"]) or "none of note"} (native BF16: {"yes" if cpu["native_bf16"] else "no"}).
ResNet50 with seeded random weights (speed does not depend on the values; the INT8 IR is
quantized from them by `modelserver quantize` with the agreement gate off), the photos of
`../shared/images` posted round-robin by closed-loop clients on loopback, {seconds:g} s per
row, 1 worker, dynamic batching. The clients run on the same cores as the server and take the
share of the CPU shown in cores; the server's CPU per image is the whole process tree's (HTTP,
decoding, batching, inference). Past the server's queue bound (`MAX_QUEUE`, 24 by default)
requests are shed with 503; such a client waits the `Retry-After` (1 s) and tries again.
The machine is shared with other work while it runs (1-minute load average from
{min(loads):.1f} to {max(loads):.1f} on {available_cpus()} CPUs during this run): absolute
figures are noisy, and even the ratios carry that noise.

{load_header}
{rows}

{charts}

Raw, in-process (the ceiling: the forward pass alone at the batch size the server formed at
concurrency 16), and where the server's CPU goes at concurrency 16, per image:

{raw_header}
{raw}

{reading}

### Targets

| target | measured | |
|---|---|---|
{targets}
"""


if __name__ == "__main__":
    main()
