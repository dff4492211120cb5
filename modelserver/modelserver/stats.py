"""The live figures of the page at `/` (`GET /stats`): the server's own metrics, sampled every
`STEP_S` seconds over the last `WINDOW_S`, as request rates, latency percentiles, batch sizes
and queue depth. The server computes them, so every viewer sees the same figures.

A sample reads `metrics.registry()`, the sum over every gunicorn worker that `/metrics` shows,
so whichever worker answers, the figures are the whole server's. Each worker samples on the
same wall-clock ticks (multiples of `STEP_S`), so their histories hold the same points; a
worker started later (after another died) only holds the points since it started.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import metrics

log = logging.getLogger(__name__)

STEP_S = 2.0
WINDOW_S = 300.0
RECENT_S = 10.0  # the span of the headline figures, up to the moment they are asked for
# What classifies images: the panel's requests and latency are theirs, not those of the probes,
# of /metrics, or of the page's own polling.
INFERENCE_ENDPOINTS = frozenset(
    {
        "/predict",
        "/v1/models/<name>:predict",
        "/v2/models/<name>/infer",
        "/v2/models/<name>/versions/<version>/infer",
        "/inference.GRPCInferenceService/ModelInfer",
    }
)
# The other running totals and gauges a snapshot keeps, by the field that keeps them.
_TOTALS = {
    "modelserver_requests_shed_total": "shed",
    "modelserver_images_total": "images",
    "modelserver_batch_size_sum": "batched_images",
}
_GAUGES = {"modelserver_queue_depth": "queue_depth", "modelserver_requests_in_flight": "in_flight"}
# A histogram as (upper bound, observations at or below it), bounds ascending, +Inf last.
Buckets = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Snapshot:
    """The server's running totals at one moment, summed over workers."""

    at: float  # Unix time
    requests: float = 0.0  # inference requests answered, whatever the answer
    errors: float = 0.0  # of which not a success (HTTP 4xx and 5xx, gRPC other than OK)
    shed: float = 0.0  # of which refused with 503 over the queue bound
    images: float = 0.0  # images classified
    latency: Buckets = ()  # of inference requests, in seconds
    batches: Buckets = ()  # images per forward pass
    batched_images: float = 0.0  # the batch-size histogram's sum
    queue_depth: float = 0.0  # images waiting for the model now
    in_flight: float = 0.0  # predict requests being decoded, waiting or in the model now


def snapshot(at: float) -> Snapshot:
    """The server's totals now, from its metrics."""
    totals = {"requests": 0.0, "errors": 0.0, "shed": 0.0, "images": 0.0, "batched_images": 0.0}
    gauges = {"queue_depth": 0.0, "in_flight": 0.0}
    latency: dict[float, float] = {}
    batches: dict[float, float] = {}
    for family in metrics.registry().collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            inference = labels.get("endpoint") in INFERENCE_ENDPOINTS
            # A classification is a POST (or a gRPC call): a browser opening status.url GETs
            # /predict, and is redirected to the page, which is no failed request.
            classifying = inference and labels.get("method") in ("POST", "grpc")
            if name == "modelserver_requests_total" and classifying:
                totals["requests"] += value
                if labels["code"] not in ("200", "OK"):
                    totals["errors"] += value
            elif name == "modelserver_request_duration_seconds_bucket" and inference:
                bound = float(labels["le"])
                latency[bound] = latency.get(bound, 0.0) + value
            elif name == "modelserver_batch_size_bucket":
                batches[float(labels["le"])] = value
            elif name in _TOTALS:
                totals[_TOTALS[name]] += value
            elif name in _GAUGES:
                gauges[_GAUGES[name]] = value
    return Snapshot(
        at,
        **totals,
        **gauges,
        latency=tuple(sorted(latency.items())),
        batches=tuple(sorted(batches.items())),
    )


def quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of a histogram's observations, linear within the bucket it falls in, as
    Prometheus' `histogram_quantile` estimates it (the highest finite bound when it falls in
    +Inf); None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:  # the last bucket holds them all: the loop always breaks
        if count >= rank:
            break
        lower, below = bound, count
    if math.isinf(bound):
        return lower
    return lower + (bound - lower) * (rank - below) / (count - below)


def _difference(before: Buckets, after: Buckets) -> Buckets:
    """The observations between two readings of one histogram."""
    earlier = dict(before)
    return tuple((bound, count - earlier.get(bound, 0.0)) for bound, count in after)


def interval(before: Snapshot, after: Snapshot) -> dict[str, float | None]:
    """What happened between two snapshots: rates per second, latency percentiles (ms) and
    the mean batch size of the requests and passes in between; queue depth and requests in
    flight as they were at its end. A figure with nothing to measure is None."""
    seconds = after.at - before.at
    latency = _difference(before.latency, after.latency)
    passes = _difference(before.batches, after.batches)
    passes_count = passes[-1][1] if passes else 0.0

    def per_second(count: float) -> float:
        return round(count / seconds, 3)

    def milliseconds(q: float) -> float | None:
        value = quantile(q, latency)
        return None if value is None else round(value * 1000, 1)

    batched = after.batched_images - before.batched_images
    return {
        "t": round(after.at, 3),
        "requests_per_s": per_second(after.requests - before.requests),
        "errors_per_s": per_second(after.errors - before.errors),
        "images_per_s": per_second(after.images - before.images),
        "latency_p50_ms": milliseconds(0.5),
        "latency_p95_ms": milliseconds(0.95),
        "batch_mean": round(batched / passes_count, 2) if passes_count else None,
        "queue_depth": after.queue_depth,
        "in_flight": after.in_flight,
    }


@dataclass
class History:
    """The snapshots of the last `window_s`, one per tick of `step_s`."""

    read: Callable[[float], Snapshot] = snapshot
    step_s: float = STEP_S
    window_s: float = WINDOW_S
    _snapshots: deque[Snapshot] = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._snapshots = deque(maxlen=round(self.window_s / self.step_s) + 1)

    def sample(self, at: float) -> None:
        """Take the snapshot that stands for the moment `at` (a tick, or the start)."""
        taken = self.read(at)
        with self._lock:
            self._snapshots.append(taken)

    def run(self) -> None:
        """Sample on every tick, for ever (a thread of its own). A snapshot is stamped with its
        tick, so every worker's points fall at the same times and span the same intervals; a
        tick missed (the process stalled past it) is skipped, not caught up."""
        while True:
            at = (time.time() // self.step_s + 1) * self.step_s
            time.sleep(max(0.0, at - time.time()))
            try:
                self.sample(at)
            except Exception:  # a worker's metrics file can vanish as it is read: next tick
                log.warning("could not sample the metrics for /stats", exc_info=True)

    def report(self) -> dict[str, Any]:
        """`/stats`: the window's intervals, oldest first; the last `RECENT_S` up to now (None
        in a worker's first step); and the totals as they are now."""
        now = self.read(time.time())
        with self._lock:
            taken = list(self._snapshots)
        since = [earlier for earlier in taken if earlier.at <= now.at - RECENT_S]
        base = since[-1] if since else (taken[0] if taken else None)
        recent = interval(base, now) if base and now.at - base.at >= self.step_s else None
        return {
            "step_s": self.step_s,
            "window_s": self.window_s,
            "recent_s": RECENT_S,
            "worker": os.getpid(),
            "recent": recent,
            "now": {
                "t": round(now.at, 3),
                "requests": now.requests,
                "errors": now.errors,
                "shed": now.shed,
                "images": now.images,
                "queue_depth": now.queue_depth,
                "in_flight": now.in_flight,
            },
            "points": [interval(a, b) for a, b in itertools.pairwise(taken)],
        }


_history: History | None = None
_history_lock = threading.Lock()


def history() -> History:
    """This process's history (the metrics are the process's too), sampled by a thread
    started on first use: in a gunicorn worker, once the worker has forked."""
    global _history
    with _history_lock:
        if _history is None:
            _history = History()
            threading.Thread(target=_history.run, name="stats-sampler", daemon=True).start()
        return _history
