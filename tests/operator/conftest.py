"""Fixtures for the operator tests: a Kubernetes API emulator over real HTTP, and the operator.

The emulator is kmock's `KubernetesEmulator` in a background thread; the operator is the real
`kubeclassify-operator` console command in a subprocess, pointed at it with a kubeconfig.
Tests drive the "cluster" over HTTP, the way kubectl and controllers would.
"""

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from kube_emulator import IC_PATH, ApiServerEmulator, Call, EmulatorThread, Fault, write_kubeconfig
from kubeclassify_operator.kube import USER_AGENT
from kubeclassify_operator.spec import GROUP, KIND, VERSION

T = TypeVar("T")
HANDLED = f"{GROUP}/last-handled-configuration"  # kopf's diff-base annotation (handlers.py)


class Cluster:
    """A thin HTTP client for the emulated API, plus polling for eventual consistency."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        return self.session.request(method, self.url + path, json=body, headers=headers, timeout=10)

    def get(self, path: str) -> dict[str, Any] | None:
        response = self._call("GET", path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._call("POST", path, body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def patch(self, path: str, patch: dict[str, Any]) -> None:
        self._call("PATCH", path, patch).raise_for_status()

    def delete(self, path: str) -> None:
        self._call("DELETE", path).raise_for_status()

    def items(self, path: str) -> list[dict[str, Any]]:
        answer = self.get(path) or {}
        items: list[dict[str, Any]] = answer.get("items", [])
        return items

    @staticmethod
    def wait(probe: Callable[[], T | None], timeout: float = 15, what: str = "") -> T:
        """Poll until `probe` returns something truthy; fail with `what` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what or probe}")
            time.sleep(0.05)


class Namespace:
    """Paths and shortcuts for one test's namespace in the shared emulated cluster."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def path(self, kind: str, name: str = "", sub: str = "") -> str:
        prefix = {
            "imageclassifiers": IC_PATH,
            "deployments": "/apis/apps/v1",
            "horizontalpodautoscalers": "/apis/autoscaling/v2",
        }.get(kind, "/api/v1")
        return "/".join(
            part for part in (f"{prefix}/namespaces/{self.name}/{kind}", name, sub) if part
        )

    def create_classifier(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": self.name},
            "spec": spec,
        }
        return self.cluster.create(self.path("imageclassifiers"), body)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.cluster.get(self.path(kind, name))

    def wait_for(
        self,
        kind: str,
        name: str,
        check: Callable[[dict[str, Any]], bool] = lambda _: True,
        what: str = "",
        timeout: float = 15,
    ) -> dict[str, Any]:
        """The object once it exists and passes `check`."""

        def probe() -> dict[str, Any] | None:
            obj = self.get(kind, name)
            return obj if obj is not None and check(obj) else None

        return self.cluster.wait(probe, timeout, what or f"{kind}/{name}")

    def wait_handled(self, name: str) -> dict[str, Any]:
        """The classifier once kopf has recorded its creation (kopf's last write for it)."""
        return self.wait_for(
            "imageclassifiers",
            name,
            lambda ic: HANDLED in ic["metadata"].get("annotations", {}),
            f"kopf's {HANDLED} annotation on {name}",
        )

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        ic = self.get("imageclassifiers", name) or {}
        conditions = ic.get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == type_), None)

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str, timeout: float = 15
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cond = self.condition(name, type_)
            ok = cond and cond["status"] == status and cond["reason"] == reason
            return cond if ok else None

        return self.cluster.wait(probe, timeout, f"{type_}={status}/{reason} on {name}")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events about the classifier `name`, oldest first."""
        return [
            event
            for event in self.cluster.items(self.path("events"))
            if event.get("involvedObject", {}).get("name") == name
            and event.get("involvedObject", {}).get("kind") == KIND
        ]


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorThread]:
    thread = EmulatorThread()
    thread.start_and_wait()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def cluster(emulator: EmulatorThread) -> Cluster:
    return Cluster(emulator.url)


# kopf's own client and the operator's (kube.py); kubectl and the tests use other agents.
OPERATOR_AGENTS = ("kopf/", USER_AGENT)


class Journal:
    """The operator's requests as the emulator recorded them."""

    def __init__(self, api: ApiServerEmulator) -> None:
        self.api = api

    def mark(self) -> int:
        return len(self.api.calls)

    def since(self, mark: int = 0, namespace: str | None = None) -> list[Call]:
        return [
            call
            for call in self.api.calls[mark:]
            if call.agent.startswith(OPERATOR_AGENTS)
            and (namespace is None or call.namespace == namespace)
        ]

    def writes(self, mark: int = 0, namespace: str | None = None) -> list[Call]:
        return [call for call in self.since(mark, namespace) if call.is_write]


@pytest.fixture(scope="session")
def journal(emulator: EmulatorThread) -> Journal:
    assert emulator.emulator is not None
    return Journal(emulator.emulator)


@pytest.fixture
def faults(emulator: EmulatorThread) -> Iterator[list[Fault]]:
    """The emulator's fault list; whatever a test arms is disarmed (and released) after it."""
    assert emulator.emulator is not None
    armed = emulator.emulator.faults
    yield armed
    for fault in armed:
        if fault.hold is not None:
            fault.hold.set()
    armed.clear()


class OperatorProcess:
    """One `kubeclassify-operator` process; it can be killed and started again (same identity)."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.liveness_url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch and wait until kopf serves its liveness endpoint."""
        self.liveness_url = f"http://127.0.0.1:{_free_port()}/healthz"
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [*self.command, "--liveness", self.liveness_url],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.process = process

        def alive() -> bool:
            assert process.poll() is None, self.log_path.read_text()
            try:
                return requests.get(self.liveness_url, timeout=1).ok
            except requests.ConnectionError:
                return False

        Cluster.wait(alive, timeout=30, what=f"the liveness endpoint of {self.env['POD_ID']}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye to the peers, in-flight requests cut."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


OperatorLauncher = Callable[[str], OperatorProcess]


@pytest.fixture(scope="session")
def kubeconfig(emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig for the emulator, as kubectl and the operator read it."""
    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", emulator.url)


@pytest.fixture(scope="session")
def launch_operator(
    kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorLauncher]:
    """Start the installed `kubeclassify-operator` command (cluster-wide, with peering)."""
    workdir = tmp_path_factory.mktemp("operator")
    command = shutil.which("kubeclassify-operator", path=str(Path(sys.executable).parent))
    assert command, "install the operator: pip install -e operator"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    started: list[OperatorProcess] = []

    def launch(name: str) -> OperatorProcess:
        # POD_ID: kopf's identity among peers, as in deploy/.
        operator = OperatorProcess([command], {**env, "POD_ID": name}, workdir / f"{name}.log")
        started.append(operator)
        operator.start()
        return operator

    yield launch
    for operator in started:
        operator.stop()


@pytest.fixture(scope="session")
def operator_process(launch_operator: OperatorLauncher) -> OperatorProcess:
    """The operator every integration test talks to."""
    return launch_operator("operator-1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_namespaces = itertools.count(1)


@pytest.fixture
def ns(cluster: Cluster, operator_process: OperatorProcess) -> Namespace:
    """A fresh namespace per test in the shared cluster, with the operator running."""
    return Namespace(cluster, f"test-{next(_namespaces)}")
