"""A worker killed from outside stops the whole server (so its container restarts and the
kubelet says why, OOMKilled included); the master's own stops do not.

Real `modelserver serve` processes with the small MobileNet model.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from serving import RunningServer, start_server, wait_ready


def mobilenet(server_logs: Path, model: Path, labels: Path, *flags: str) -> RunningServer:
    server = start_server(server_logs, "--model-file", str(model), "--labels", str(labels), *flags)
    wait_ready(server)
    return server


def workers(server: RunningServer) -> list[int]:
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_worker_killed_by_sigkill_stops_the_server_with_the_reason(
    server_logs: Path, mobilenet_file: Path, mobilenet_labels: Path
) -> None:
    """What the OOM killer does to a worker: before, gunicorn booted another and the
    container never restarted (24 kills in 80 s on a real node, 0 restarts, never OOMKilled)."""
    server = mobilenet(server_logs, mobilenet_file, mobilenet_labels, "--workers", "2")
    try:
        victim = workers(server)[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        status = server.process.wait(timeout=30)
        took = time.monotonic() - killed
    finally:
        server.process.kill()
    assert status == 128 + signal.SIGKILL, server.log_tail()
    assert took < 10, f"the master took {took:.1f} s to stop"
    assert (
        f"Worker (pid:{victim}) was killed by SIGKILL, which the master did not send"
        " (the kernel's OOM killer, most likely: raise the memory limit)" in server.log_tail()
    )
    assert server.worker_boots() == 2, "a worker was booted in place of the killed one"


def test_sigterm_exits_0_even_when_the_master_must_kill_a_worker(
    server_logs: Path, mobilenet_file: Path, mobilenet_labels: Path
) -> None:
    """A worker that does not stop within the graceful timeout (here: stopped by SIGSTOP) is
    SIGKILLed by the master itself: its own order, not a reason to exit non-zero."""
    server = mobilenet(server_logs, mobilenet_file, mobilenet_labels, "--graceful-timeout", "1")
    try:
        os.kill(workers(server)[0], signal.SIGSTOP)
        server.process.send_signal(signal.SIGTERM)
        status = server.process.wait(timeout=30)
    finally:
        server.process.kill()
    assert status == 0, server.log_tail()
    assert "which the master did not send" not in server.log_tail()
