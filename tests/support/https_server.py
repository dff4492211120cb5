"""A local HTTPS file server for tests, with a self-signed certificate made by `openssl`.

Paths: `/public/NAME` serves a file to anyone; `/private/NAME` only with the bearer token;
`/truncated/NAME` promises the whole file and closes the connection halfway; `/flaky/NAME`
answers 503 to the first `flaky_failures` requests for it. Every request's path is recorded.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class HttpsServer:
    url: str
    ca_bundle: Path
    requests: list[str] = field(default_factory=list)

    def count(self, path: str) -> int:
        return self.requests.count(path)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key; the certificate is its own CA bundle."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=kubeclassify-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextmanager
def running_https_server(
    directory: Path, files: Mapping[str, bytes], token: str, flaky_failures: int = 2
) -> Iterator[HttpsServer]:
    cert, key = self_signed_certificate(directory)
    failures: dict[str, int] = {}
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            kind, _, name = self.path.lstrip("/").partition("/")
            body = files.get(name)
            if body is None or kind not in ("public", "private", "truncated", "flaky"):
                self.send_error(404)
                return
            if kind == "private" and self.headers.get("Authorization") != f"Bearer {token}":
                self.send_error(401)
                return
            if kind == "flaky" and failures.setdefault(name, 0) < flaky_failures:
                failures[name] += 1
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if kind == "truncated" else body)
            if kind == "truncated":
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads `requests` instead."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpsServer(f"https://127.0.0.1:{server.server_address[1]}", cert, seen)
    finally:
        server.shutdown()
        server.server_close()
