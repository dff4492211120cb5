"""Protocol benchmark: the same photos through `/predict` (multipart), the Open Inference
Protocol over REST (binary tensor extension, and base64 JSON) and over gRPC (raw contents),
at concurrency 1 and 16, against one server in one run.

The server is the real MobileNetV2 of ../shared/models (fast, so what a protocol costs shows);
clients are closed loops in this process, each protocol in turn, twice in alternating order to
even out drift on a shared machine. Writes its section of docs/benchmarks.md.

Run: python bench/server_protocols.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import requests
import urllib3
from plots import SUBJECTS, Row, concurrency_charts
from report import write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # the helpers shared with the tests

from modelserver.protocol.grpc.messages import SERVICE, message_class  # noqa: E402
from serving import start_server, wait_ready  # noqa: E402

SHARED = REPO.parent / "shared"
MODEL = SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = SHARED / "models" / "imagenet_labels.txt"
PROTOCOLS = ("/predict", "V2 binary", "V2 JSON", "gRPC")
CONCURRENCY = (1, 16)
ROUNDS = 2

# One request: send it, True if answered with the probabilities.
Send = Callable[[], bool]


@dataclass
class Result:
    protocol: str
    concurrency: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def v2_binary_body(photo: bytes) -> tuple[bytes, dict[str, str]]:
    """What tritonclient sends: a JSON header, then the image length-prefixed."""
    raw = struct.pack("<I", len(photo)) + photo
    header = json.dumps(
        {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return header + raw, headers


def senders(protocol: str, base: str, grpc_target: str, model: str, photo: bytes) -> Send:
    """A new client of `protocol` (its own connection), sending `photo` each time."""
    if protocol == "gRPC":
        channel = grpc.insecure_channel(grpc_target)
        method = SERVICE.methods_by_name["ModelInfer"]
        stub = channel.unary_unary(
            f"/{SERVICE.full_name}/ModelInfer",
            request_serializer=message_class(method.input_type.name).SerializeToString,
            response_deserializer=message_class(method.output_type.name).FromString,
        )
        request = message_class("ModelInferRequest")(
            model_name=model,
            inputs=[{"name": "image", "datatype": "BYTES", "shape": [1]}],
            raw_input_contents=[struct.pack("<I", len(photo)) + photo],
        )

        def send_grpc() -> bool:
            try:
                return len(stub(request, timeout=120).raw_output_contents[0]) > 0
            except grpc.RpcError:
                return False

        return send_grpc
    session = requests.Session()
    if protocol == "/predict":
        body, content_type = urllib3.encode_multipart_formdata({"image": ("photo", photo)})
        url, headers = base + "/predict", {"Content-Type": content_type}
    elif protocol == "V2 binary":
        url = f"{base}/v2/models/{model}/infer"
        body, headers = v2_binary_body(photo)
    else:
        url, headers = f"{base}/v2/models/{model}/infer", {"Content-Type": "application/json"}
        image = {"name": "image", "datatype": "BYTES", "shape": [1],
                 "data": [base64.b64encode(photo).decode()]}  # fmt: skip
        body = json.dumps({"inputs": [image]}).encode()

    def send_http() -> bool:
        try:
            return session.post(url, data=body, headers=headers, timeout=120).status_code == 200
        except requests.RequestException:
            return False

    return send_http


def drive(clients: list[Send], seconds: float) -> tuple[list[float], int, float]:
    """Closed loop: each client sends back to back for `seconds`; (latencies, errors, elapsed)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(send: Send) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            ok = send()
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(send,)) for send in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.monotonic() - started


def measure(
    base: str, grpc_target: str, model: str, photos: list[bytes], seconds: float
) -> list[Result]:
    runs: dict[tuple[str, int], list[tuple[list[float], int, float]]] = {}
    for round_ in range(ROUNDS):
        for concurrency in CONCURRENCY:
            order = PROTOCOLS if round_ % 2 == 0 else tuple(reversed(PROTOCOLS))
            for protocol in order:
                clients = [
                    senders(protocol, base, grpc_target, model, photos[i % len(photos)])
                    for i in range(concurrency)
                ]
                drive(clients, min(2.0, seconds))  # connections up, caches warm
                run = drive(clients, seconds)
                runs.setdefault((protocol, concurrency), []).append(run)
                print(protocol, concurrency, f"{len(run[0]) / run[2]:.1f} images/s", flush=True)
    results = []
    for (protocol, concurrency), measured in runs.items():
        latencies = [latency for run in measured for latency in run[0]]
        elapsed = sum(run[2] for run in measured)
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        errors = sum(run[1] for run in measured)
        results.append(Result(protocol, concurrency, len(latencies) / elapsed, p50, p99, errors))
    return results


def render(results: list[Result], seconds: float, load: tuple[float, float]) -> str:
    charts = concurrency_charts(
        "server_protocols",
        SUBJECTS["server_protocols"],
        {
            protocol: [
                Row(r.concurrency, r.images_per_s, {"p50": r.p50_ms, "p99": r.p99_ms})
                for r in results
                if r.protocol == protocol
            ]
            for protocol in PROTOCOLS
        },
    )
    rows = []
    for concurrency in CONCURRENCY:
        at = {r.protocol: r for r in results if r.concurrency == concurrency}
        baseline = at["/predict"].images_per_s
        for protocol in PROTOCOLS:
            r = at[protocol]
            rows.append(
                f"| {protocol} | {concurrency} | {r.images_per_s:.1f} | "
                f"{r.images_per_s / baseline * 100 - 100:+.1f}% | {r.p50_ms:.1f} | "
                f"{r.p99_ms:.1f} | {r.errors} |"
            )
    return f"""## Protocols: /predict, V2 REST and gRPC (`bench/server_protocols.py`)

The real MobileNetV2 (quantized TFLite, `../shared/models`) behind one gunicorn worker, the
photos of `../shared/images` one per request; closed-loop clients in the benchmark's own process
on the same 2 cores (so client CPU counts against every protocol alike). Each protocol ran
{ROUNDS} x {seconds:.0f} s at each concurrency, in alternating order; "vs /predict" is the
difference in images/s. The machine's load average was {load[0]:.1f} before and {load[1]:.1f}
after the run (2 cores): beside other work, differences of a few tens of percent are noise.

| protocol | concurrency | images/s | vs /predict | p50 ms | p99 ms | errors |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{charts}

- `/predict`: multipart upload; V2 binary: what `tritonclient.http` sends (JSON header, then
  the image length-prefixed, `Inference-Header-Content-Length`), probabilities answered in
  binary; V2 JSON: the image base64 in JSON, probabilities answered as JSON numbers; gRPC:
  `ModelInfer` with `raw_input_contents`, one channel per client.
- Every request of every protocol goes through the same admission, batcher and model: the
  differences are parsing and answering (and, for JSON, 1001 numbers written as text).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="per measurement")
    args = parser.parse_args()
    photos = [p.read_bytes() for p in sorted((SHARED / "images").iterdir()) if p.suffix != ".md"]
    work = Path(tempfile.mkdtemp(prefix="kubeclassify-protocols-"))
    server = start_server(work, "--model-file", str(MODEL), "--labels", str(LABELS))
    try:
        wait_ready(server)
        load_before = os.getloadavg()[1]
        results = measure(server.url, server.grpc_target, MODEL.stem, photos, args.seconds)
        load = (load_before, os.getloadavg()[1])
    finally:
        server.stop()
    for result in results:
        print(result)
    write_section("server_protocols", render(results, args.seconds, load))


if __name__ == "__main__":
    main()
