"""The operator tests' API clients, request journal and operator process, shared with tests/helm.

A module rather than tests/operator/conftest.py, which pytest keeps to its own directory and
test modules cannot import: the chart's tests run the operator the same way, with the same
clients, and test functions name these types in their signatures.
"""

import ctypes
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import requests
from kube_emulator import ApiServerEmulator, Call
from kubeclassify_operator.children import CHILDREN, WATCHED
from kubeclassify_operator.kube import CLASSIFIERS, USER_AGENT, Kind
from kubeclassify_operator.spec import GROUP, KIND, VERSION
from serving import free_port

T = TypeVar("T")
HANDLED = f"{GROUP}/last-handled-configuration"  # kopf's diff-base annotation (handlers.py)


class Cluster:
    """A thin HTTP client for the API (real or emulated), plus polling for eventual consistency.

    On the real plane it authenticates as the admin (client certificate, CA from the plane).
    """

    def __init__(
        self, url: str, cert: tuple[str, str] | None = None, ca: str | None = None
    ) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.cert = cert
        self.session.verify = ca or True
        # Else requests prefers REQUESTS_CA_BUNDLE to the plane's CA (and may send loopback to
        # a proxy).
        self.session.trust_env = ca is None

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

    def delete(self, path: str, propagation: str | None = None) -> None:
        """Delete; `propagation` is the API's propagationPolicy (Foreground, Background, Orphan)."""
        body = {"propagationPolicy": propagation} if propagation else None
        self._call("DELETE", path, body).raise_for_status()

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


# Where each kind the tests read lives: the operator's own table (the children, watched or not,
# and the pods), and the Deployments' ReplicaSets.
KINDS = {
    kind.plural: kind
    for kind in (
        CLASSIFIERS,
        *WATCHED,
        *(child.api for child in CHILDREN),
        Kind("apps", "v1", "replicasets"),
    )
}


class Namespace:
    """Paths and shortcuts for one test's namespace in the shared cluster (real or emulated)."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def path(self, kind: str, name: str = "", sub: str = "") -> str:
        """`kind` is a plural: the classifiers, the operator's children and pods (from its
        registry), ReplicaSets, or any other core kind."""
        found = KINDS.get(kind) or Kind("", "v1", kind)
        return found.path(self.name, name, sub)

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

    def items_of(self, kind: str) -> list[dict[str, Any]]:
        """Every object of `kind` in the namespace."""
        return self.cluster.items(self.path(kind))

    def wait_empty(self, kind: str, timeout: float = 15) -> None:
        """Until no object of `kind` is left in the namespace (collected, say)."""
        self.cluster.wait(lambda: not self.items_of(kind), timeout, f"{kind} collected")

    def pods(self, instance: str) -> list[dict[str, Any]]:
        """The pods of the classifier `instance` (by the label its Deployment gives them)."""
        selector = f"app.kubernetes.io/instance={instance}"
        return self.cluster.items(f"{self.path('pods')}?labelSelector={selector}")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events about the classifier `name`, oldest first."""
        return [
            event
            for event in self.cluster.items(self.path("events"))
            if event.get("involvedObject", {}).get("name") == name
            and event.get("involvedObject", {}).get("kind") == KIND
        ]


NamespaceMaker = Callable[[], Namespace]
"""`make()`: a fresh namespace on the real plane (the `plane_namespaces` fixture)."""

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


_PRCTL = ctypes.CDLL(None).prctl  # looked up here: the child after fork only calls it


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test session dies, killed or not (Linux prctl
    PR_SET_PDEATHSIG), so no operator outlives it acting on a plane."""
    _PRCTL(1, signal.SIGTERM)


class OperatorProcess:
    """One `kubeclassify-operator` process; it can be killed and started again (same identity)."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.liveness_url = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The process of the latest start()."""
        assert self._process is not None, "never started"
        return self._process

    def start(self) -> None:
        """Launch and wait until kopf serves its liveness endpoint."""
        running = self._process is not None and self._process.poll() is None
        assert not running, "already running: a second start would orphan the first process"
        self.liveness_url = f"http://127.0.0.1:{free_port()}/healthz"
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [*self.command, "--liveness", self.liveness_url],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._process = process

        def alive() -> bool:
            assert process.poll() is None, self.log_path.read_text()
            try:
                return requests.get(self.liveness_url, timeout=1).ok
            except requests.ConnectionError:
                return False

        Cluster.wait(alive, timeout=30, what=f"the liveness endpoint of {self.env['POD_ID']}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye to the peers, in-flight requests cut."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


class OperatorLauncher(Protocol):
    """Starts a named operator process (`POD_ID`) with extra command-line arguments."""

    def __call__(self, name: str, *args: str) -> OperatorProcess: ...
