"""The pass queue (passes.py) on a fake clock: coalescing, dedupe, one pass at a time per
classifier, rechecks, retries with backoff and a rate limit, and stopping.

The tests drive the queue by hand (`take` what is due, then `complete` or `fail` it), as its
loop glue does; the last ones run it on a real event loop and executor.
"""

import asyncio
import concurrent.futures
import threading

import pytest
from kubeclassify_operator.handlers import older
from kubeclassify_operator.kube import ObjectKey
from kubeclassify_operator.passes import Done, Key, PassQueue, TokenBucket

A: Key = ("ns", "a")
B: Key = ("ns", "b")
POD: ObjectKey = ("pods", "ns", "a-1")
DEPLOYMENT: ObjectKey = ("deployments", "ns", "a")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Retries:
    """The failure policy: a fixed delay, and a record of each call."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self.calls: list[tuple[Key, int, str]] = []

    def __call__(self, key: Key, exc: Exception, attempt: int, why: str) -> float:
        self.calls.append((key, attempt, why))
        return self.delay


def never_run(key: Key) -> Done:
    raise AssertionError("these tests run passes by hand")


def queue(
    clock: Clock, retries: Retries | None = None, workers: int = 4, rate: float = 100.0
) -> PassQueue:
    return PassQueue(
        never_run,
        retries or Retries(),
        workers=workers,
        coalesce=2.0,
        recheck=5.0,
        retry_rate=rate,
        retry_burst=2,
        clock=clock,
    )


def started(q: PassQueue) -> list[Key]:
    return [key for key, _ in q.take()]


def test_a_burst_of_child_changes_shares_one_pass_after_the_coalescing_window() -> None:
    clock = Clock()
    q = queue(clock)
    q.child_changed(A, POD, "1", "Pod a-1 ADDED")
    clock.advance(1.5)
    q.child_changed(A, POD, "2", "Pod a-1 MODIFIED")
    q.child_changed(A, DEPLOYMENT, "7", "Deployment a MODIFIED")
    assert q.next_start() == 102.0  # the first change's window: later ones join it
    clock.advance(0.4)
    assert started(q) == []
    clock.advance(0.1)
    assert q.take() == [(A, "Pod a-1 ADDED")]
    q.complete(A, Done({POD: "2", DEPLOYMENT: "7"}))
    clock.advance(10)
    assert started(q) == []


def test_a_version_a_pass_already_read_asks_for_nothing() -> None:
    clock = Clock()
    q = queue(clock)
    q.request(A, 0, "created")
    assert started(q) == [A]
    q.complete(A, Done({DEPLOYMENT: "5", POD: None}))
    q.child_changed(A, DEPLOYMENT, "5", "Deployment a ADDED")  # the echo of the pass's create
    assert q.next_start() is None


def test_a_wish_whose_versions_were_all_read_meanwhile_is_dropped() -> None:
    clock = Clock()
    q = queue(clock)
    q.request(A, 0, "created")
    assert started(q) == [A]
    q.child_changed(A, DEPLOYMENT, "6", "Deployment a MODIFIED")  # arrives while it runs
    q.complete(A, Done({DEPLOYMENT: "6"}))  # ... and the pass read that very version
    clock.advance(2)
    assert started(q) == []
    q.child_changed(A, DEPLOYMENT, "7", "Deployment a MODIFIED")
    q.child_changed(A, POD, None, "Pod a-1 DELETED")  # a deletion always asks
    clock.advance(2)
    assert started(q) == [A]


def test_one_pass_at_a_time_per_classifier_and_a_change_meanwhile_gets_a_fresh_one() -> None:
    clock = Clock()
    q = queue(clock)
    q.request(A, 0, "created")
    q.request(B, 0, "created")
    assert started(q) == [A, B]
    q.request(A, 0, "edited")
    assert started(q) == []  # not while A's pass runs: it may have read before the edit
    q.complete(A, Done())
    assert q.take() == [(A, "edited")]


def test_workers_bound_the_passes_at_once_in_the_order_they_were_due() -> None:
    clock = Clock()
    q = queue(clock, workers=2)
    for i, name in enumerate("cdab"):
        q.request(("ns", name), i, "created")
    clock.advance(5)
    assert started(q) == [("ns", "c"), ("ns", "d")]
    assert q.next_start() is None  # no worker free
    q.complete(("ns", "c"), Done())
    assert started(q) == [("ns", "a")]


def test_a_conflict_is_rechecked_later_once() -> None:
    clock = Clock()
    q = queue(clock)
    q.request(A, 0, "created")
    started(q)
    q.complete(A, Done(recheck=True))
    assert q.next_start() == 105.0
    clock.advance(5)
    assert q.take() == [(A, "a recheck")]
    q.complete(A, Done(recheck=False))  # the stranger is gone
    clock.advance(60)
    assert started(q) == []


def test_a_failed_pass_frees_its_worker_and_is_retried_after_its_backoff() -> None:
    """The per-classifier serialization is never held across a backoff: with one worker, a
    classifier that keeps failing leaves it to the others between its attempts."""
    clock = Clock()
    retries = Retries(delay=3.0)
    q = queue(clock, retries, workers=1)
    q.request(A, 0, "created")
    assert started(q) == [A]
    q.request(B, 0, "created")
    q.fail(A, RuntimeError("429"))
    assert started(q) == [B]  # at once, while A backs off
    q.complete(B, Done())
    q.request(A, 0, "a child changed")  # a change does not cut the backoff short
    clock.advance(2.9)
    assert started(q) == []
    clock.advance(0.1)
    assert started(q) == [A]
    q.fail(A, RuntimeError("429"))
    clock.advance(3)
    assert started(q) == [A]
    q.complete(A, Done())
    assert retries.calls == [(A, 1, "created"), (A, 2, "created")]  # a success starts afresh:
    q.request(A, 0, "edited")
    assert started(q) == [A]
    q.fail(A, RuntimeError("500"))
    assert retries.calls[-1] == (A, 1, "edited")


def test_retries_of_all_classifiers_share_a_rate_limit() -> None:
    clock = Clock()
    q = queue(clock, Retries(delay=0.0), workers=10, rate=2.0)  # burst 2, then 2 a second
    keys = [("ns", f"c{i}") for i in range(6)]
    for key in keys:
        q.request(key, 0, "created")
    assert started(q) == keys
    for key in keys:
        q.fail(key, RuntimeError("503"))
    assert started(q) == keys[:2]  # the burst
    clock.advance(0.5)
    assert started(q) == keys[2:3]
    clock.advance(0.5)
    assert started(q) == keys[3:4]
    clock.advance(1.0)
    assert started(q) == keys[4:6]


def test_the_token_bucket_refills_up_to_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]
    clock.advance(60)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]


def test_existence_of_children_as_watch_and_passes_tell() -> None:
    clock = Clock()
    q = queue(clock)
    hpa: ObjectKey = ("horizontalpodautoscalers", "ns", "a")
    assert not q.exists(hpa)
    q.child_changed(A, hpa, "3", "HorizontalPodAutoscaler a ADDED")
    assert q.exists(hpa)
    clock.advance(2)
    started(q)
    q.complete(A, Done({hpa: None}))  # the pass deleted it
    assert not q.exists(hpa)


def test_the_version_a_pass_last_read_or_wrote_is_what_the_copies_are_held_to() -> None:
    """What `handlers.copies` compares a watch's copy with: the version of the latest pass
    (a copy older than it is not used, the child is read from the API server instead)."""
    clock = Clock()
    q = queue(clock)
    assert q.seen(DEPLOYMENT) is None
    q.child_changed(A, DEPLOYMENT, "7", "Deployment a ADDED")
    assert q.seen(DEPLOYMENT) is None  # an event is not a pass's read
    clock.advance(2)
    started(q)
    q.complete(A, Done({DEPLOYMENT: "9"}))  # the pass patched it
    assert q.seen(DEPLOYMENT) == "9"
    assert older("7", q.seen(DEPLOYMENT))  # the watch's copy, before the echo comes in
    assert not older("9", q.seen(DEPLOYMENT))
    assert not older("12", q.seen(DEPLOYMENT))
    assert not older("7", None)  # no pass read it: the copy is all there is
    assert not older("7", "not-a-number")  # not etcd's: the copy is taken as current
    q.child_changed(A, DEPLOYMENT, None, "Deployment a DELETED")
    assert q.seen(DEPLOYMENT) is None


def test_waiting_for_a_pass_returns_once_one_started_after_the_call_succeeds() -> None:
    async def scenario() -> None:
        clock = Clock()
        q = queue(clock)
        q.request(A, 0, "created")
        assert started(q) == [A]  # already running: it may have read too early
        waiter = asyncio.ensure_future(q.pass_now(A, "edited"))
        await asyncio.sleep(0)
        q.complete(A, Done())
        await asyncio.sleep(0)
        assert not waiter.done()
        assert started(q) == [A]
        q.fail(A, RuntimeError("503"))
        await asyncio.sleep(0)
        assert not waiter.done()  # it rides on the retry
        clock.advance(1)
        assert started(q) == [A]
        q.complete(A, Done())
        await asyncio.wait_for(waiter, 1)

    asyncio.run(scenario())


def test_stopping_starts_nothing_more_and_releases_whoever_waits() -> None:
    async def scenario() -> None:
        clock = Clock()
        q = queue(clock)
        waiter = asyncio.ensure_future(q.pass_now(A, "created"))
        await asyncio.sleep(0)
        q.request(B, 0, "created")
        q.stop()
        await asyncio.wait_for(waiter, 1)
        assert started(q) == []
        q.request(B, 0, "edited")
        q.child_changed(A, POD, "9", "Pod a-1 MODIFIED")
        clock.advance(10)
        assert started(q) == []
        await asyncio.wait_for(q.pass_now(A, "edited"), 1)  # returns at once

    asyncio.run(scenario())


def test_on_a_loop_passes_run_in_the_executor_and_report_back() -> None:
    """The glue: passes run in worker threads; a failure is retried, and whoever waits for the
    pass waits for the retry; a version the last pass read starts nothing."""
    runs: list[tuple[Key, str]] = []

    def run(key: Key) -> Done:
        runs.append((key, threading.current_thread().name))
        if [k for k, _ in runs].count(B) == 1 and key == B:
            raise RuntimeError("503")  # B's first pass
        return Done({POD: "2"} if key == A else {})

    async def scenario() -> None:
        with concurrent.futures.ThreadPoolExecutor(2, "pass") as executor:
            q = PassQueue(
                run,
                lambda key, exc, attempt, why: 0.01,
                workers=2,
                coalesce=0.01,
                recheck=5.0,
                retry_rate=100.0,
                retry_burst=5,
            )
            q.start(asyncio.get_running_loop(), executor)
            q.child_changed(A, POD, "2", "Pod a-1 MODIFIED")
            await asyncio.wait_for(q.pass_now(B, "created"), 5)
            for _ in range(500):
                if len(runs) == 3:
                    break
                await asyncio.sleep(0.01)
            await q.drained()
            assert sorted(key for key, _ in runs) == [A, B, B]
            q.child_changed(A, POD, "2", "Pod a-1 MODIFIED")  # read by the last pass
            await asyncio.sleep(0.05)
            q.stop()

    asyncio.run(scenario())
    assert all(thread.startswith("pass") for _, thread in runs)
    assert len(runs) == 3


@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_an_earlier_wish_wins_and_a_later_one_joins(delay: float) -> None:
    clock = Clock()
    q = queue(clock)
    q.child_changed(A, POD, "1", "Pod a-1 MODIFIED")
    q.request(A, delay, "edited")
    assert q.next_start() == clock.now + min(delay, 2.0)
