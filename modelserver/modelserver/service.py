"""The model's life in one worker: load and warm up in the background, infer, drain.

Loading runs on a thread, started by `ModelService.start`, so that the HTTP layer answers
`/healthz` (and a 503 from `/readyz`) while the model is still loading, as Kubernetes probes
expect.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import metrics
from .batcher import DynamicBatcher
from .config import Settings
from .images import ImageError, rgb_from_pixels
from .models.base import Classifier, ModelLoadError
from .models.registry import load_classifier
from .protocol.errors import InvalidInput, NotReady, Overloaded
from .weights import WeightsUnavailable

log = logging.getLogger(__name__)

# One image to classify: its encoded bytes, or its RGB pixels as a (height, width, 3) array.
ImageInput = bytes | np.ndarray


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class ModelService:
    """One worker's model, batcher and lifecycle state."""

    def __init__(
        self,
        settings: Settings,
        on_load_failure: Callable[[Exception], None] = lambda error: None,
        load: Callable[[Settings], Classifier] = load_classifier,
    ) -> None:
        self.settings = settings
        self._load = load
        self.state = State.LOADING
        self.failure: str | None = None
        self._on_load_failure = on_load_failure
        self._loaded: tuple[Classifier, DynamicBatcher] | None = None
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        """Load and warm up the model on a thread of its own. Apart from `__init__`, so that
        building a service starts nothing: whoever serves it starts it, once."""
        if self._loader is not None:
            raise RuntimeError("the model service is already started")
        self._loader = threading.Thread(
            target=self._load_and_warm_up, name="model-loader", daemon=True
        )
        self._loader.start()

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @property
    def overloaded(self) -> bool:
        """At the queue bound: new predict requests are being refused."""
        limit = self.settings.queue_limit
        return limit is not None and self._in_flight >= limit

    @contextmanager
    def _admission(self) -> Iterator[None]:
        """Hold one place in the queue while a request's images are decoded and classified,
        or raise `Overloaded`. Uploads are already read: a slow client holds no place."""
        with self._in_flight_lock:
            if self.overloaded:
                metrics.SHED.inc()
                raise Overloaded(
                    f"over capacity: {self._in_flight} requests are already queued "
                    f"(MAX_QUEUE={self.settings.queue_limit}); retry later"
                )
            self._in_flight += 1
        metrics.IN_FLIGHT.inc()
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
            metrics.IN_FLIGHT.dec()

    @property
    def classifier(self) -> Classifier:
        return self._model_and_batcher()[0]

    def _model_and_batcher(self) -> tuple[Classifier, DynamicBatcher]:
        """The loaded model; draining still serves what is in flight."""
        if self._loaded is None:
            raise NotReady(self.failure or "the model is still loading")
        return self._loaded

    def infer(self, images: Sequence[ImageInput]) -> np.ndarray:
        """The probabilities, shape (len(images), len(labels)), of images that every protocol
        sends alike through admission and the batcher; `InvalidInput` names a bad one."""
        classifier, batcher = self._model_and_batcher()
        with self._admission():
            with batcher.expecting(len(images)):
                inputs = [self._preprocess(classifier, images, i) for i in range(len(images))]
            probabilities = batcher.submit(inputs)
        metrics.IMAGES.inc(len(inputs))
        return np.stack(probabilities)

    def _preprocess(
        self, classifier: Classifier, images: Sequence[ImageInput], position: int
    ) -> np.ndarray:
        """One image as a model input; a bad one is named by its place among several."""
        image = images[position]
        try:
            if isinstance(image, np.ndarray):
                return classifier.to_input(rgb_from_pixels(image, classifier.input_size))
            return classifier.preprocess(image, self.settings.max_image_pixels)
        except ImageError as error:
            where = f"image {position + 1} of {len(images)}: " if len(images) > 1 else ""
            raise InvalidInput(where + str(error)) from None

    def begin_draining(self) -> None:
        """Report not-ready while in-flight requests finish (SIGTERM under gunicorn)."""
        self.state = State.DRAINING
        metrics.MODEL_READY.set(0)

    def describe(self) -> dict[str, Any]:
        description: dict[str, Any] = {
            "name": self.settings.served_name,
            "state": self.state.value,
            "ready": self.ready,
            "in_flight": self._in_flight,
            "max_queue": self.settings.queue_limit,
            "batching": {
                "max_size": self.settings.batch_max_size,
                "max_delay_ms": self.settings.batch_max_delay_ms,
            },
        }
        if self._loaded is not None:
            description |= self._loaded[0].describe()
        if self.failure:
            description["error"] = self.failure
        return description

    def _load_and_warm_up(self) -> None:
        started = time.monotonic()
        try:
            classifier = self._load(self.settings)
            classifier.warm_up(tuple(sorted({1, self.settings.batch_max_size})))
        except (ModelLoadError, WeightsUnavailable) as error:
            self._fail(error, str(error))
            return
        except Exception as error:
            self._fail(error, f"the model failed to load: {type(error).__name__}: {error}")
            return
        batcher = DynamicBatcher(
            classifier.predict_batch,
            self.settings.batch_max_size,
            self.settings.batch_max_delay_ms / 1000,
            on_batch=metrics.BATCH_SIZE.observe,
            on_queue_change=metrics.QUEUE_DEPTH.set,
        )
        self._loaded = (classifier, batcher)
        seconds = time.monotonic() - started
        metrics.MODEL_LOAD_SECONDS.set(seconds)
        metrics.MODEL_READY.set(1)
        runtime = classifier.runtime
        metrics.MODEL_INFO.labels(
            classifier.name,
            runtime.backend,
            runtime.precision,
            runtime.float_precision,
            runtime.device,
        ).set(1)
        if self.state is State.LOADING:
            self.state = State.READY
        log.info(
            "model %s ready in %.1f s (%s): %s",
            classifier.name,
            seconds,
            classifier.source,
            ", ".join(f"{key}={value}" for key, value in runtime.describe().items()),
        )

    def _fail(self, error: Exception, message: str) -> None:
        self.failure = message
        self.state = State.FAILED
        log.critical("cannot serve: %s", message)
        self._on_load_failure(error)
