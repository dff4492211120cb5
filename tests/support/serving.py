"""Starting and probing real model-server processes (`modelserver serve`, so gunicorn)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np
import requests
from modelserver.models.base import Classifier
from modelserver.models.cpu import native_bf16

if TYPE_CHECKING:
    from flask import Flask
    from modelserver.config import Settings
    from PIL import Image

# Expected top-1 for each photo in ../shared/images (its README: the Keras 0-999 index).
EXPECTED_TOP1 = {
    "dog.jpg": 162,
    "jemma.png": 162,
    "bmw.png": 511,
    "soccer_ball.jpg": 805,
    "cat_720p.jpg": 285,
    "parrot.jpg": 88,
    "hot_dog.jpg": 934,
    "grace_hopper.bmp": 652,
    "bird.bmp": 19,
    "dragonfly.bmp": 319,
    "mountain_bike.jpeg": 671,
}

# The page's model: the real MobileNetV2, its file named with HTML, and soccer_ball.jpg's top-1
# label a script (the labels file starts with 'background': its index is the Keras one plus 1).
PAGE_MODEL_STEM = 'mobilenet<i>"&amp;'
SCRIPT_LABEL = "<script>window.pwned=1</script>"
SCRIPT_LABEL_INDEX = EXPECTED_TOP1["soccer_ball.jpg"] + 1

# Every (backend, precision) this machine can serve. BF16 needs a CPU with native BF16;
# elsewhere tests/modelserver/test_runtime.py checks that asking for it is refused.
RUNTIMES = [
    ("tensorflow", "fp32"),
    ("openvino", "fp32"),
    *([("openvino", "bf16")] if native_bf16() else []),
    ("openvino", "int8"),
]


@dataclass
class RunningServer:
    """A `modelserver serve` process and where to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    grpc_target: str  # host:port of its gRPC server (the Open Inference Protocol)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def predict(self, *photos: Path, query: str = "") -> requests.Response:
        """POST the photos to /predict as the tutorial's clients do (multipart `image`)."""
        files = [("image", (photo.name, photo.read_bytes())) for photo in photos]
        return requests.post(f"{self.url}/predict{query}", files=files, timeout=60)

    def worker_boots(self) -> int:
        """How many workers gunicorn has started: more than 1 means one died."""
        return self.log.read_text(errors="replace").count("Booting worker")

    def metric(self, sample: str) -> float:
        """One sample of /metrics, e.g. `modelserver_batch_size_count` (0 when absent)."""
        text = requests.get(self.url + "/metrics", timeout=10).text
        found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(log_dir: Path, *flags: str, env: Mapping[str, str] = os.environ) -> RunningServer:
    """Start `modelserver serve` on free ports (HTTP and gRPC); does not wait for readiness."""
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "modelserver", "serve", *listen_flags(port, grpc_port)]
    process, log = spawn([*command, *flags], log_dir, port, env)
    return RunningServer(process, f"http://127.0.0.1:{port}", log, f"127.0.0.1:{grpc_port}")


def listen_flags(port: int, grpc_port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port)]


def spawn(
    command: list[str], log_dir: Path, port: int, env: Mapping[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    """Run a server's command in `log_dir`, its output in a log named by its port."""
    log = log_dir / f"server-{port}.log"
    process = subprocess.Popen(
        command,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=log_dir,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return process, log


def wait_ready(server: RunningServer, timeout_s: float = 180) -> list[int]:
    """Poll /readyz until 200; returns every status seen (0 for no answer yet).

    A server that never gets ready is killed, so no test leaves a process behind."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            seen.append(requests.get(server.url + "/readyz", timeout=30).status_code)
        except requests.ConnectionError:
            seen.append(0)
        if seen[-1] == 200:
            return seen
        time.sleep(0.1)
    server.process.kill()
    raise AssertionError(f"server not ready in {timeout_s}s:\n{server.log_tail()}")


def ready_app(settings: Settings, timeout_s: float = 120) -> Flask:
    """The Flask app in-process, once its model is loaded (a load failure fails the test).
    Imported here: the operator's tests use this module too, and need no model server."""
    from modelserver.app import create_app, service_of

    app = create_app(settings)
    client = app.test_client()
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert service_of(app).failure is None, service_of(app).failure
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return app


def app_without_model(settings: Settings) -> Flask:
    """The app alone, for what needs no model: its model refuses to load."""
    from modelserver.app import create_app
    from modelserver.models.base import ModelLoadError
    from modelserver.service import ModelService

    def refuse(settings: Settings) -> Classifier:
        raise ModelLoadError("no model in this test")

    return create_app(settings, ModelService(settings, load=refuse))


class WrappedClassifier(Classifier):
    """A real classifier (names, inputs, forward passes) that a test can add to."""

    def __init__(self, model: Classifier) -> None:
        self.name, self.labels, self.source = model.name, model.labels, model.source
        self.sha256, self.runtime = model.sha256, model.runtime
        self.model = model

    @property
    def input_size(self) -> tuple[int, int]:
        return self.model.input_size

    def to_input(self, image: Image.Image) -> np.ndarray:
        return self.model.to_input(image)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict_batch(batch)


class HeldClassifier(WrappedClassifier):
    """A real classifier whose forward passes wait while the test holds them, and whose batch
    sizes are recorded: a test can fill the queue behind a pass that "runs" for exactly as
    long as it needs, whatever the CPU's speed."""

    def __init__(self, model: Classifier) -> None:
        super().__init__(model)
        self.batches: list[int] = []
        self.released = threading.Event()
        self.released.set()
        self.passing = threading.Event()  # a pass has started (and waits while held)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        self.passing.set()
        assert self.released.wait(timeout=120), "the test never let the pass go"
        return super().predict_batch(batch)


@dataclass
class InProcessServer:
    """The app served over real HTTP (werkzeug, threaded) and gRPC, in this process, so a
    test can hold its model; stopped by `stop`."""

    url: str
    grpc_target: str
    held: HeldClassifier
    stop: Callable[[], None]


def serve_held(settings: Settings) -> InProcessServer:
    """`settings`' model behind a `HeldClassifier`, served on free HTTP and gRPC ports."""
    from modelserver.app import create_app, start_grpc
    from modelserver.models.registry import load_classifier
    from modelserver.service import ModelService
    from werkzeug.serving import make_server

    held: list[HeldClassifier] = []

    def load(loaded: Settings) -> Classifier:
        held.append(HeldClassifier(load_classifier(loaded)))
        return held[0]

    settings = dataclasses.replace(settings, host="127.0.0.1", grpc_port=free_port())
    app = create_app(settings, ModelService(settings, load=load))
    client = app.test_client()
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").get_json()
        time.sleep(0.05)
    start_grpc(app)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    def stop() -> None:
        http.shutdown()
        app.extensions["modelserver.grpc"].stop(None)

    return InProcessServer(
        f"http://127.0.0.1:{http.server_port}", f"127.0.0.1:{settings.grpc_port}", held[0], stop
    )


def wait_until(condition: Callable[[], object], failure: str, timeout_s: float = 60) -> None:
    """Poll `condition` until it holds; after `timeout_s`, fail with `failure`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.005)


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


# Where a held server's workers find their `ModelHold` (see `start_held_server`).
HOLD_ENV = "MODELSERVER_TEST_HOLD"


class ModelHold:
    """A hold on the models of a server's workers, which run in other processes: files in a
    folder both sides see. While `hold` exists a worker's model neither loads nor finishes a
    forward pass; a pass that waits on it touches `passing`; every pass appends its batch
    size to `batches`. The worker polls, every few ms and for two minutes at most."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._hold, self._passing = folder / "hold", folder / "passing"
        self._batches = folder / "batches"

    def hold(self) -> None:
        """Hold the model from now on; `passing` and `batches` start afresh."""
        self._passing.unlink(missing_ok=True)
        self._batches.write_text("")
        self._hold.touch()

    def release(self) -> None:
        self._hold.unlink(missing_ok=True)

    def wait_passing(self) -> None:
        wait_until(self._passing.exists, "no forward pass reached the held model")

    def batches(self) -> list[int]:
        """The batch sizes of the forward passes since `hold`, in order."""
        return [int(size) for size in self._batches.read_text().split()]

    def wait_while_held(self) -> None:
        """The worker's side: return once released."""
        wait_until(lambda: not self._hold.exists(), "the test never let the model go", 120)

    def forward_pass(self, size: int) -> None:
        """The worker's side, as a pass of `size` images starts: note it, wait while held."""
        with self._batches.open("a") as batches:
            batches.write(f"{size}\n")
        if self._hold.exists():
            self._passing.touch()
            self.wait_while_held()


class FileHeldClassifier(WrappedClassifier):
    """A real classifier in a server's worker, held by a test in another process."""

    def __init__(self, model: Classifier, hold: ModelHold) -> None:
        super().__init__(model)
        self.hold = hold

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        self.hold.forward_pass(len(batch))
        return super().predict_batch(batch)


def held_gunicorn_app() -> Flask:
    """What gunicorn serves under `modelserver serve` (`gunicorn_app`, failures and logging
    alike), with only the model's loader changed: it loads once the `ModelHold` in
    $MODELSERVER_TEST_HOLD lets it, and the model runs under that hold."""
    from modelserver.app import gunicorn_app
    from modelserver.models.registry import load_classifier
    from modelserver.service import ModelService

    hold = ModelHold(Path(os.environ[HOLD_ENV]))

    def load(settings: Settings) -> Classifier:
        hold.wait_while_held()
        return FileHeldClassifier(load_classifier(settings), hold)

    with mock.patch("modelserver.app.ModelService", functools.partial(ModelService, load=load)):
        return gunicorn_app()


@dataclass
class HeldServer(RunningServer):
    """A `modelserver serve` process whose workers' models the test holds."""

    hold: ModelHold

    def stop(self) -> int:
        self.hold.release()  # a test that failed with the model held must not hold up the stop
        return super().stop()


def start_held_server(log_dir: Path, *flags: str, held: bool = False) -> HeldServer:
    """`start_server`, its workers' models under the returned server's `hold` (`held`: from
    the start, so that the model does not even load until released).

    Started as `modelserver serve` starts gunicorn (the flags as its environment, our master),
    with tests/support/held_gunicorn_conf in place of modelserver.gunicorn_conf."""
    from modelserver.config import add_flags, flags_to_env

    hold = ModelHold(Path(tempfile.mkdtemp(prefix="hold-", dir=log_dir)))
    if held:
        hold.hold()
    port, grpc_port = free_port(), free_port()
    parser = argparse.ArgumentParser()
    add_flags(parser)
    env = {
        **os.environ,
        **flags_to_env(parser.parse_args([*listen_flags(port, grpc_port), *flags])),
        HOLD_ENV: str(hold.folder),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        ),
    }
    command = [sys.executable, "-P", "-m", "modelserver.master", "-c", "python:held_gunicorn_conf"]
    process, log = spawn(command, log_dir, port, env)
    return HeldServer(process, f"http://127.0.0.1:{port}", log, f"127.0.0.1:{grpc_port}", hold)


def wait_draining(server: RunningServer) -> None:
    """Wait until every worker has taken SIGTERM: each then reports not-ready and stops its
    gRPC server, so that nothing listens on the gRPC port any more."""
    port = int(server.grpc_target.rsplit(":", 1)[1])
    wait_until(lambda: not listening_inodes(port), "a worker still serves gRPC after SIGTERM")
