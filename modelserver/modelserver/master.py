"""gunicorn's master process, which stops when a worker is killed by a signal it did not send.

Plain gunicorn starts a new worker when one dies. Where the kernel's OOM killer took the worker
(SIGKILL, the container at its memory limit), that hides the kill: the container keeps
running, the kubelet sees no restart, and a memory limit too small for the model shows only as
a pod that never gets ready. Halting instead makes the container exit, so the runtime reports
`OOMKilled` (it saw the cgroup's OOM event) and the kubelet restarts it with back-off, as it
would a single-process server. Workers the master stops itself (its shutdown, a timeout, fewer
workers) are not halted on.

Run by `modelserver serve` as `python -m modelserver.master -c python:modelserver.gunicorn_conf`;
nothing here may import TensorFlow.
"""

from __future__ import annotations

import os
import signal

from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

# The signals the master sends to end a worker (SIGUSR1, which reopens logs, is not one).
_ENDING = {signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGABRT, signal.SIGKILL}


def killed_by(pid: int) -> int | None:
    """The signal that killed this exited (not yet reaped) child, or None; it stays unreaped."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None or info.si_code not in (os.CLD_KILLED, os.CLD_DUMPED):
        return None
    return info.si_status


class StrictArbiter(Arbiter):  # type: ignore[misc]  # gunicorn is untyped
    """An Arbiter that halts, with status 128 + the signal, when a worker dies of a signal
    the master did not send it, instead of quietly starting another."""

    def __init__(self, app: WSGIApplication) -> None:
        super().__init__(app)
        self.ordered: set[int] = set()  # workers the master has told to stop
        self.stopping = False

    def kill_worker(self, pid: int, sig: int) -> None:
        if sig in _ENDING:
            self.ordered.add(pid)
        super().kill_worker(pid, sig)

    def stop(self, graceful: bool = True) -> None:
        self.stopping = True
        super().stop(graceful)

    def reap_workers(self) -> None:
        unexpected = [
            (pid, sig)
            for pid in list(self.WORKERS)
            if pid not in self.ordered and (sig := killed_by(pid)) is not None
        ]
        super().reap_workers()  # reaps and logs them as gunicorn does
        self.ordered &= set(self.WORKERS)
        if unexpected and not self.stopping:
            pid, sig = unexpected[0]
            name = signal.Signals(sig).name
            self.log.error(
                "Worker (pid:%s) was killed by %s, which the master did not send%s: stopping"
                " the server so that its container exits, is restarted and reports why",
                pid,
                name,
                " (the kernel's OOM killer, most likely: raise the memory limit)"
                if sig == signal.SIGKILL
                else "",
            )
            raise HaltServer(f"worker killed by {name}", 128 + sig)


def main() -> None:
    """gunicorn's own command line (`-c python:modelserver.gunicorn_conf`), this master."""
    StrictArbiter(WSGIApplication("%(prog)s [OPTIONS]", prog="modelserver serve")).run()


if __name__ == "__main__":
    main()
