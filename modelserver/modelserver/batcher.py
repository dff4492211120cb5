"""Dynamic batching: requests that arrive together share one forward pass.

Request threads call `submit`; one batcher thread owns the model. It takes everything
already waiting (up to `max_size`) and waits at most `max_delay_s` for more, but only while
other inputs are announced as being prepared (`expecting`): a lone request is never delayed,
and a crowd is served in full batches.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

PredictBatch = Callable[[np.ndarray], np.ndarray]


@dataclass
class _Pending:
    array: np.ndarray
    result: Future[np.ndarray] = field(default_factory=Future)


class DynamicBatcher:
    """Collects single inputs into batches for `predict_batch`, run on a thread of its own."""

    def __init__(
        self,
        predict_batch: PredictBatch,
        max_size: int,
        max_delay_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
        on_queue_change: Callable[[int], None] = lambda depth: None,
    ) -> None:
        self._predict_batch = predict_batch
        self._max_size = max_size
        self._max_delay_s = max_delay_s
        self._on_batch = on_batch
        self._on_queue_change = on_queue_change
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._expected = 0
        self._expected_lock = threading.Lock()
        self._depth_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def expecting(self, count: int) -> Iterator[None]:
        """`count` inputs are being prepared by the caller: worth waiting for, until it ends."""
        self._change_expected(count)
        try:
            yield
        finally:
            self._change_expected(-count)

    def submit(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Predict each array (one model input each); blocks until all are done."""
        pending = [_Pending(array) for array in arrays]
        with self._depth_lock:
            for item in pending:
                self._queue.put(item)
            self._report_depth()
        return [item.result.result() for item in pending]

    def _report_depth(self) -> None:
        """Under `_depth_lock`: a depth read before another thread's put must not be
        reported after it, or the gauge would stay below what waits."""
        self._on_queue_change(self._queue.qsize())

    def _change_expected(self, count: int) -> None:
        with self._expected_lock:
            self._expected += count

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (batch := self._collect()) is not None:
            with self._depth_lock:
                self._report_depth()
            self._on_batch(len(batch))
            try:
                outputs = self._predict_batch(np.stack([item.array for item in batch]))
            except Exception as error:
                for item in batch:
                    item.result.set_exception(error)
                continue
            for item, output in zip(batch, outputs, strict=True):
                item.result.set_result(output)

    def _collect(self) -> list[_Pending] | None:
        """The next batch, or None once closed and drained."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self._max_delay_s
        while len(batch) < self._max_size:
            wait = deadline - time.monotonic() if self._expected > 0 else 0.0
            try:
                item = self._queue.get(timeout=max(0.0, wait))
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
        return batch
