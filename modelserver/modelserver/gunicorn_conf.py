"""gunicorn settings for the model server, read from the same environment as everything else.

Run as `gunicorn -c python:modelserver.gunicorn_conf` (what `modelserver serve` does).
Imported by gunicorn's master, so nothing here may import TensorFlow.
"""

from __future__ import annotations

import os
import signal
import tempfile
from types import FrameType
from typing import Any

from modelserver.config import Settings

_settings = Settings.from_env()

wsgi_app = "modelserver.app:gunicorn_app()"
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
worker_class = "gthread"
threads = _settings.threads
graceful_timeout = _settings.graceful_timeout
timeout = 120
keepalive = 5
loglevel = _settings.log_level
# gunicorn 27's control socket wants a writable $HOME; the container's root is read-only.
control_socket_disable = True

# Workers write their metrics here so that /metrics can sum them (set before they start).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="modelserver-metrics-"))


def post_worker_init(worker: Any) -> None:
    """Start gRPC beside HTTP; on SIGTERM report not-ready at once and stop taking gRPC
    calls, while gunicorn finishes in-flight HTTP requests."""
    from modelserver.app import begin_draining, start_grpc

    start_grpc(worker.wsgi)
    stop_accepting = signal.getsignal(signal.SIGTERM)

    def drain(signum: int, frame: FrameType | None) -> None:
        begin_draining(worker.wsgi)
        if callable(stop_accepting):
            stop_accepting(signum, frame)

    signal.signal(signal.SIGTERM, drain)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the summed metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
