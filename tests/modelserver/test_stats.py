"""The live figures' arithmetic (`modelserver.stats`): percentiles from histogram buckets, the
rates between two snapshots, the window, and what a snapshot reads from the metrics."""

from __future__ import annotations

import dataclasses
import math

import pytest
from modelserver.config import Settings
from modelserver.metrics import BATCH_SIZE, IMAGES
from modelserver.protocol.dataplane import observe_request
from modelserver.protocol.grpc.messages import SERVICE
from modelserver.stats import (
    INFERENCE_ENDPOINTS,
    History,
    Snapshot,
    interval,
    quantile,
    snapshot,
)
from serving import app_without_model

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, ((0.1, 0.0), (0.2, 10.0), (INF, 10.0)), 0.15),  # halfway into (0.1, 0.2]
        (0.95, ((0.1, 0.0), (0.2, 10.0), (INF, 10.0)), 0.195),
        (0.5, ((0.1, 4.0), (0.2, 4.0), (0.4, 8.0), (INF, 8.0)), 0.1),  # at a bucket's top
        (0.5, ((0.1, 2.0), (INF, 10.0)), 0.1),  # in +Inf: the highest finite bound
        (0.5, ((0.1, 0.0), (INF, 0.0)), None),  # nothing observed
        (0.5, (), None),
    ],
)
def test_percentiles_are_read_from_the_buckets_as_prometheus_does(
    q: float, buckets: tuple[tuple[float, float], ...], expected: float | None
) -> None:
    assert quantile(q, buckets) == (None if expected is None else pytest.approx(expected))


def test_an_interval_is_the_rates_and_percentiles_of_what_happened_in_it() -> None:
    before = Snapshot(
        100.0,
        requests=10,
        errors=1,
        images=20,
        latency=((0.01, 5), (0.1, 10), (INF, 10)),
        batches=((1, 4), (2, 6), (INF, 6)),
        batched_images=8,
    )
    after = Snapshot(
        102.0,
        requests=16,
        errors=2,
        images=28,
        latency=((0.01, 5), (0.1, 16), (INF, 16)),  # the 6 new ones all in (0.01, 0.1]
        batches=((1, 4), (2, 6), (4, 2), (INF, 8)),  # 2 new passes of 4 (a new bucket too)
        batched_images=16,
        queue_depth=3,
        in_flight=2,
    )
    assert interval(before, after) == {
        "t": 102.0,
        "requests_per_s": 3.0,
        "errors_per_s": 0.5,
        "images_per_s": 4.0,
        "latency_p50_ms": pytest.approx(55.0),
        "latency_p95_ms": pytest.approx(95.5),
        "batch_mean": 4.0,
        "queue_depth": 3,
        "in_flight": 2,
    }
    quiet = interval(after, dataclasses.replace(after, at=104.0))
    assert quiet["requests_per_s"] == 0 and quiet["latency_p50_ms"] is None
    assert quiet["batch_mean"] is None


def counting_history(step_s: float = 2.0, window_s: float = 10.0) -> History:
    """A history whose snapshot at time t has answered t requests."""
    return History(lambda at: Snapshot(at, requests=at), step_s, window_s)


def test_the_window_keeps_the_last_minutes_and_recent_spans_up_to_now() -> None:
    history = counting_history()
    assert history.report()["recent"] is None  # nothing sampled yet
    for tick in range(0, 40, 2):
        history.sample(float(tick))
    figures = history.report()
    assert [p["t"] for p in figures["points"]] == [30.0, 32.0, 34.0, 36.0, 38.0]
    assert {p["requests_per_s"] for p in figures["points"]} == {1.0}
    assert figures["recent"]["requests_per_s"] == 1.0  # from the last tick 10 s before now
    assert figures["now"]["requests"] == pytest.approx(figures["now"]["t"])


def test_recent_needs_a_step_of_history() -> None:
    history = counting_history()
    history.sample(1e12)  # "now" is long before it: no span to speak of
    assert history.report()["recent"] is None


def test_a_snapshot_counts_the_classification_requests_only() -> None:
    before = snapshot(0.0)
    observe_request("/predict", "POST", "200", 0.03)
    observe_request("/v2/models/<name>/infer", "POST", "400", 0.002)
    observe_request("/inference.GRPCInferenceService/ModelInfer", "grpc", "OK", 0.02)
    observe_request("/readyz", "GET", "200", 0.001)
    observe_request("/stats", "GET", "200", 0.001)
    observe_request("/predict", "GET", "303", 0.001)  # a browser sent on to the page
    BATCH_SIZE.observe(3)
    IMAGES.inc(3)
    after = snapshot(1.0)
    assert (after.requests - before.requests, after.errors - before.errors) == (3, 1)
    assert after.images - before.images == 3
    assert after.batched_images - before.batched_images == 3
    # The histogram has no method: the redirect's millisecond is in it.
    assert dict(after.latency)[INF] - dict(before.latency).get(INF, 0.0) == 4


def test_the_inference_endpoints_are_every_route_that_classifies() -> None:
    """POST routes classify; so does gRPC's ModelInfer: a new one must be counted too."""
    app = app_without_model(Settings())
    posts = {rule.rule for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())}
    assert "ModelInfer" in SERVICE.methods_by_name
    assert posts | {f"/{SERVICE.full_name}/ModelInfer"} == INFERENCE_ENDPOINTS
