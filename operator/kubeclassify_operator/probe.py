"""The liveness endpoint while kopf is not running yet (a standby waiting for the Lease).

kopf serves `--liveness` once it runs; before that this answers the kubelet's probe, so a
standby is not restarted for standing by. Binding it first also turns a taken or invalid
address into one clear error instead of a traceback from inside kopf.
"""

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ProbeError(Exception):
    """The `--liveness` URL cannot be served."""


class _Handler(BaseHTTPRequestHandler):
    path_served = "/"

    def do_GET(self) -> None:
        found = urllib.parse.urlsplit(self.path).path == self.path_served
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"standby": true}' if found else b"{}")

    def log_message(self, format: str, *args: object) -> None:
        """Probes every few seconds are not worth a log line."""


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


class StandbyProbe:
    """An HTTP server answering 200 on the liveness path until closed."""

    def __init__(self, url: str) -> None:
        host, port, path = address(url)
        handler = type("Handler", (_Handler,), {"path_served": path})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ProbeError(exc.strerror or str(exc)) from exc
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
