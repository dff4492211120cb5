"""One worker's server: the model service, and HTTP and gRPC around it, started and drained
together.

gunicorn serves `gunicorn_app()` (HTTP, every REST protocol); its hooks in `gunicorn_conf`
call `start_grpc` once the worker is up and `begin_draining` on SIGTERM.
`create_app` alone (tests, `flask run`) serves HTTP only.
"""

from __future__ import annotations

import logging
import os

import grpc
from flask import Flask

from .config import Settings
from .protocol.dataplane import DataPlane
from .protocol.grpc import servicer
from .protocol.rest import server as rest
from .service import ModelService

log = logging.getLogger(__name__)

# gunicorn halts the whole server when a worker exits with this code (WORKER_BOOT_ERROR).
_WORKER_BOOT_ERROR = 3


def create_app(settings: Settings | None = None, service: ModelService | None = None) -> Flask:
    """A Flask app serving `service` (by default one for the model `settings` name), whose
    model it starts loading: the app answers probes while it loads."""
    service = service or ModelService(settings or Settings.from_env())
    app = rest.create_app(DataPlane(service))
    app.extensions["modelserver.service"] = service
    service.start()
    return app


def gunicorn_app() -> Flask:
    """The app gunicorn serves: a model that cannot load stops the whole server."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    return create_app(settings, ModelService(settings, on_load_failure=_stop_server))


def _stop_server(error: Exception) -> None:
    logging.shutdown()
    os._exit(_WORKER_BOOT_ERROR)


def plane_of(app: Flask) -> DataPlane:
    plane: DataPlane = app.extensions["modelserver"]
    return plane


def service_of(app: Flask) -> ModelService:
    """The service behind `app`'s data plane, which its protocols never reach (tests do)."""
    service: ModelService = app.extensions["modelserver.service"]
    return service


def start_grpc(app: Flask) -> None:
    """Serve gRPC beside `app` on GRPC_PORT (unless 0); a port that cannot be had stops the
    whole server, as a model that cannot load does."""
    plane = plane_of(app)
    if not plane.settings.grpc_port:
        return
    try:
        app.extensions["modelserver.grpc"] = servicer.serve(plane)
    except RuntimeError as error:
        log.critical("cannot serve: %s", error)
        _stop_server(error)


def begin_draining(app: Flask) -> None:
    """SIGTERM: report not-ready and refuse new gRPC calls. Those in flight run on in the gRPC
    server's executor, whose threads Python joins before the worker exits, as gunicorn
    finishes the HTTP requests in flight; GRACEFUL_TIMEOUT bounds both."""
    plane = plane_of(app)
    plane.begin_draining()
    server: grpc.Server | None = app.extensions.get("modelserver.grpc")
    if server is not None:
        server.stop(plane.settings.graceful_timeout)
