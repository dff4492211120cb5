"""The operator's work queue: which classifier gets a pass, when, and one at a time each.

Every trigger asks this queue for a pass of one classifier: kopf's handlers for the classifier
(now), its children's watch events (a little later, so that a burst shares one pass), a
conflict's recheck and a failed pass's retry (later still). The queue keeps at most one wish
per classifier, runs at most `workers` passes at once, never two of one classifier, and never
sleeps in a worker: a failed pass gives its worker back and is due again after its backoff, so
classifiers hitting 429s cannot starve the others. Retries also share one token bucket, so that
an API server in trouble is not answered with a retry storm.

The queue also remembers the resourceVersion of every child as the latest pass read or wrote
it: a watch event carrying exactly that version (the echo of a pass's own write, a re-list
after a reconnect) asks for nothing, and a wish whose versions have all been read meanwhile
is dropped unrun.

Its state is touched from kopf's event loop only (the passes themselves run in the executor
and report back on the loop), so it needs no lock; the clock is injectable for the tests.
"""

import asyncio
import concurrent.futures
import functools
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kubeclassify_operator.kube import ObjectKey

Key = tuple[str, str]  # (namespace, name) of a classifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """What a pass that ran to its end learned: the version of every child it read or wrote
    (None: found missing, or deleted), and whether it wants another look later (a same-name
    stranger may go without any event telling us, a canary's unready clock runs without any)."""

    versions: Mapping[ObjectKey, str | None] = field(default_factory=dict)
    recheck: bool = False


Run = Callable[[Key], Done]
"""One pass of a classifier, in a worker thread; raises when cut short."""
Failure = Callable[[Key, Exception, int, str], float]
"""(classifier, error, attempt, why) -> seconds until the pass is retried; logs the failure."""


@dataclass
class _Wish:
    """A pass wanted at `at`: unconditionally (`asked` None), or unless a pass has read by
    then each of the child versions in `asked` (what child events ask for)."""

    at: float
    why: str
    asked: dict[ObjectKey, str | None] | None


class TokenBucket:
    """`rate` tokens a second, up to `burst` saved: how long until the next one is ours."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def reserve(self) -> float:
        """Take a token (possibly one not yet earned); the seconds to wait before using it."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1
        return max(0.0, -self.tokens / self.rate)


class PassQueue:
    def __init__(
        self,
        run: Run,
        failure: Failure,
        *,
        workers: int,
        coalesce: float,
        recheck: float,
        retry_rate: float,
        retry_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run = run
        self.failure = failure
        self.workers = workers
        self.coalesce = coalesce
        self.recheck = recheck
        self.clock = clock
        self.retries = TokenBucket(retry_rate, retry_burst, clock)
        self.stopping = False
        self._wishes: dict[Key, _Wish] = {}
        self._due: list[tuple[float, int, Key]] = []  # a heap; stale entries are skipped
        self._order = itertools.count()
        self._running: dict[Key, str] = {}  # classifier -> why its pass runs
        self._not_before: dict[Key, float] = {}  # a failed classifier's backoff
        self._failures: dict[Key, int] = {}
        self._waiting: dict[Key, list[asyncio.Future[None]]] = {}  # for a pass to start
        self._riding: dict[Key, list[asyncio.Future[None]]] = {}  # on the pass running
        self._seen: dict[ObjectKey, str] = {}
        self._existing: set[ObjectKey] = set()  # children that watch or passes saw exist
        # The loop glue, once started (tests drive take/complete/fail by hand instead).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.Executor | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: set[asyncio.Future[Done]] = set()

    # --- asking for passes -------------------------------------------------------------------

    def request(self, key: Key, delay: float, why: str) -> None:
        """A pass of `key` in `delay` seconds at the latest, whatever it finds."""
        self._wish(key, delay, why, None)

    async def pass_now(self, key: Key, why: str) -> None:
        """A pass of `key` at once; returns once a pass started after this call has run to its
        end (retried as long as it fails), or when the operator stops."""
        if self.stopping:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(waiter)
        self._wish(key, 0.0, why, None)
        await waiter

    def child_changed(self, key: Key, child: ObjectKey, version: str | None, why: str) -> None:
        """A watch event of a child of `key` (version None: deleted): a pass in `coalesce`
        seconds, joined by every change until it starts, unless a pass reads that version
        first."""
        self._note(child, version)
        if version is None:
            self._seen.pop(child, None)
        elif self._seen.get(child) == version:
            return  # a pass read or wrote this very version already
        self._wish(key, self.coalesce, why, {child: version})

    def exists(self, child: ObjectKey) -> bool:
        """Whether the watch or a pass last saw `child` exist (read from worker threads: one
        set lookup)."""
        return child in self._existing

    def seen(self, child: ObjectKey) -> str | None:
        """The version of `child` the latest pass read or wrote (None: none, or missing)."""
        return self._seen.get(child)

    def _note(self, child: ObjectKey, version: str | None) -> None:
        (self._existing.add if version else self._existing.discard)(child)

    def _wish(
        self, key: Key, delay: float, why: str, asked: dict[ObjectKey, str | None] | None
    ) -> None:
        if self.stopping:
            return
        at = self.clock() + delay
        wish = self._wishes.get(key)
        if wish is None:
            self._wishes[key] = wish = _Wish(at, why, asked)
        else:
            if asked is None or wish.asked is None:
                wish.asked = None
            else:
                wish.asked.update(asked)
            if at >= wish.at:
                return
            wish.at, wish.why = at, why
        self._push(key)

    def _push(self, key: Key) -> None:
        """(Re)enter `key` in the heap at the time it may start."""
        if key in self._wishes and key not in self._running:
            start = max(self._wishes[key].at, self._not_before.get(key, 0.0))
            heapq.heappush(self._due, (start, next(self._order), key))
        self._schedule()

    # --- running them ------------------------------------------------------------------------

    def next_start(self) -> float | None:
        """When the earliest wish may start (None: none waits, or no worker is free)."""
        while self._due:
            start, _, key = self._due[0]
            if self._current(start, key):
                return start if len(self._running) < self.workers else None
            heapq.heappop(self._due)
        return None

    def _current(self, start: float, key: Key) -> bool:
        wish = self._wishes.get(key)
        if wish is None or key in self._running:
            return False
        return start == max(wish.at, self._not_before.get(key, 0.0))

    def take(self) -> list[tuple[Key, str]]:
        """The classifiers whose pass starts now (marked running), with why; the wishes whose
        child versions were all read meanwhile are dropped instead."""
        started: list[tuple[Key, str]] = []
        now = self.clock()
        while not self.stopping and len(self._running) < self.workers:
            start = self.next_start()
            if start is None or start > now:
                break
            _, _, key = heapq.heappop(self._due)
            wish = self._wishes.pop(key)
            if wish.asked is not None and all(
                version is not None and self._seen.get(child) == version
                for child, version in wish.asked.items()
            ):
                continue  # every version that asked has been read by a pass since
            self._running[key] = wish.why
            self._riding[key] = self._waiting.pop(key, [])
            started.append((key, wish.why))
        return started

    def complete(self, key: Key, done: Done) -> None:
        """`key`'s pass ran to its end."""
        self._running.pop(key)
        self._not_before.pop(key, None)
        self._failures.pop(key, None)
        for child, version in done.versions.items():
            self._note(child, version)
            if version:
                self._seen[child] = version
            else:
                self._seen.pop(child, None)
        for waiter in self._riding.pop(key, []):
            if not waiter.done():
                waiter.set_result(None)
        if done.recheck:
            self.request(key, self.recheck, "a recheck")
        self._push(key)

    def fail(self, key: Key, exc: Exception) -> None:
        """`key`'s pass was cut short: due again after its backoff, and after a token of the
        retry bucket, whichever is later; whoever waited for it waits for the retry."""
        why = self._running.pop(key)
        attempt = self._failures[key] = self._failures.get(key, 0) + 1
        delay = max(self.failure(key, exc, attempt, why), self.retries.reserve())
        self._not_before[key] = self.clock() + delay
        self._waiting[key] = self._riding.pop(key, []) + self._waiting.get(key, [])
        self._wish(key, 0.0, why, None)
        self._push(key)

    # --- on kopf's event loop ----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, executor: concurrent.futures.Executor) -> None:
        """Run passes in `executor`, scheduled on `loop` (whose thread alone calls the rest)."""
        self._loop, self._executor = loop, executor
        self._schedule()

    def stop(self) -> None:
        """Start no pass any more; whoever waits for one returns. Passes in flight go on."""
        self.stopping = True
        self._wishes.clear()
        self._due.clear()
        if self._timer is not None:
            self._timer.cancel()
        for waiters in (*self._waiting.values(), *self._riding.values()):
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._waiting.clear()
        self._riding.clear()

    async def drained(self) -> None:
        """Once the passes in flight have ended."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    def _schedule(self) -> None:
        """Wake up when the earliest wish may start (at once if now)."""
        if self._loop is None or self.stopping:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        start = self.next_start()
        if start is not None:
            self._timer = self._loop.call_later(max(0.0, start - self.clock()), self._dispatch)

    def _dispatch(self) -> None:
        assert self._loop is not None
        self._timer = None
        for key, _ in self.take():
            future = self._loop.run_in_executor(self._executor, self.run, key)
            self._in_flight.add(future)
            future.add_done_callback(functools.partial(self._ended, key))
        self._schedule()

    def _ended(self, key: Key, future: asyncio.Future[Done]) -> None:
        self._in_flight.discard(future)
        if self.stopping or future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self.complete(key, future.result())
        elif isinstance(exc, Exception):
            self.fail(key, exc)
        else:
            raise exc
