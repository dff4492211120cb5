"""The liveness endpoint (`--liveness`), served for the whole life of the process.

A standby answers 200 (standing by is healthy). Once the replica leads, the answer says
whether kopf's event loop still responds, which is what kopf's own endpoint would tell; one
server throughout leaves no gap at the hand-over for a probe to fall into. Binding it first
thing also turns a taken or invalid address into one clear error.
"""

import asyncio
import concurrent.futures
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A loop that takes longer than this to run a no-op is hung.
LOOP_TIMEOUT = 5.0


class ProbeError(Exception):
    """The `--liveness` URL cannot be served."""


def address(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// liveness URL, with kopf's defaults."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ProbeError(str(exc)) from exc
    if parts.scheme != "http":
        raise ProbeError("only http:// URLs are supported")
    return parts.hostname or "localhost", port, parts.path or "/"


class LivenessProbe:
    """An HTTP server answering on the liveness path until the process ends."""

    def __init__(self, url: str) -> None:
        host, port, path = address(url)
        self.loop: asyncio.AbstractEventLoop | None = None  # kopf's, once it runs
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, bool] = {}
                if urllib.parse.urlsplit(self.path).path != path:
                    status = 404
                else:
                    status, body = probe.health()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, format: str, *args: object) -> None:
                """Probes every few seconds are not worth a log line."""

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ProbeError(exc.strerror or str(exc)) from exc
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def health(self) -> tuple[int, dict[str, bool]]:
        loop = self.loop
        if loop is None:
            return 200, {"standby": True}
        ping = asyncio.sleep(0)
        try:
            asyncio.run_coroutine_threadsafe(ping, loop).result(LOOP_TIMEOUT)
        except RuntimeError:  # the loop is closed: the operator has stopped
            ping.close()
            return 503, {"operator": False}
        except concurrent.futures.TimeoutError:  # the loop is hung
            return 503, {"operator": False}
        return 200, {"operator": True}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
