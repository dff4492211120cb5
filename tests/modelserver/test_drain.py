"""SIGTERM on kept-alive connections: what a client that reuses connections sees while a pod
stops (after its preStop sleep, once no new connections come): answers, then a clean close.

A real `modelserver serve` process with the small MobileNet model.
"""

from __future__ import annotations

import http.client
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

from serving import start_server, wait_ready


def test_kept_alive_connections_are_answered_then_closed_cleanly(
    server_logs: Path, mobilenet_file: Path, mobilenet_labels: Path
) -> None:
    server = start_server(
        server_logs, "--model-file", str(mobilenet_file), "--labels", str(mobilenet_labels)
    )
    wait_ready(server)
    address = urlsplit(server.url)
    busy, idle = (
        http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
        for _ in range(2)
    )
    try:
        for connection in (busy, idle):
            connection.request("GET", "/readyz")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200 and not answer.will_close
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the worker has the signal
        busy.request("GET", "/readyz")  # a client's next request on its connection
        answer = busy.getresponse()
        body = answer.read()
        assert answer.status == 503 and b"draining" in body, body
        assert answer.getheader("Connection") == "close"
        assert idle.sock is not None
        idle.sock.settimeout(10)
        try:
            assert idle.sock.recv(1) == b"", "the idle connection got data"
        except ConnectionResetError as reset:
            raise AssertionError("the idle connection was reset, not closed") from reset
        assert server.process.wait(timeout=30) == 0, server.log_tail()
    finally:
        busy.close()
        idle.close()
        server.process.kill()
