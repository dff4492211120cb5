"""Prometheus metrics, correct across gunicorn workers.

Under gunicorn the config module sets PROMETHEUS_MULTIPROC_DIR before any worker starts,
so every worker writes its samples there and `/metrics` sums them; run in-process
(tests, `flask run`) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "modelserver_requests_total",
    "Requests answered: HTTP (code: its status) and gRPC (method grpc, code: the status name)",
    ["endpoint", "method", "code"],
)
LATENCY = Histogram(
    "modelserver_request_duration_seconds",
    "Time to answer a request",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "modelserver_batch_size",
    "Images per forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
IMAGES = Counter("modelserver_images_total", "Images classified")
QUEUE_DEPTH = Gauge(
    "modelserver_queue_depth", "Images waiting for the model", multiprocess_mode="livesum"
)
IN_FLIGHT = Gauge(
    "modelserver_requests_in_flight",
    "Predict requests being decoded, waiting for or in the model",
    multiprocess_mode="livesum",
)
SHED = Counter(
    "modelserver_requests_shed_total", "Predict requests refused with 503: over MAX_QUEUE"
)
MODEL_LOAD_SECONDS = Gauge(
    "modelserver_model_load_seconds",
    "Seconds spent loading and warming up the model",
    multiprocess_mode="livemax",
)
MODEL_READY = Gauge(
    "modelserver_model_ready", "1 once the model is loaded and warm", multiprocess_mode="livemin"
)
MODEL_INFO = Gauge(
    "modelserver_model_info",
    "1 for the model served and how, as compiled: backend, precision (fp32, bf16, int8), the "
    "precision of its float operations (fp32, bf16) and device",
    ["model", "backend", "precision", "float_precision", "device"],
    multiprocess_mode="livemax",
)


def registry() -> CollectorRegistry:
    """The server's metrics, summed over workers when there are several."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
        return summed
    return DEFAULT_REGISTRY


def render() -> bytes:
    """The exposition text for `/metrics`."""
    return generate_latest(registry())
