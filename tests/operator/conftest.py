"""Fixtures for the operator tests: the real operator against a real control plane or an emulator.

The operator is always the real `kubeclassify-operator` console command in a subprocess.
- `plane_*` fixtures: a real Kubernetes control plane (`../shared/k8s`: API server, controllers,
  scheduler; no kubelet, so `kubelet` plays one), the operator authenticated as its ServiceAccount
  so the API server enforces deploy/rbac.yaml, and an audit log of every request.
- `emulator`, `cluster`, `ns`, `journal`, `faults`: kmock's API emulator in a background thread,
  kept for the faults a real API server will not produce on demand (429, 5xx, stalls, cut watches).
Tests drive either over HTTP, the way kubectl and controllers would.
"""

import contextlib
import ctypes
import datetime
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import requests
from control_plane import OPERATOR_NAMESPACE, OPERATOR_SA, RUN_ENV, ControlPlane
from kube_emulator import IC_PATH, ApiServerEmulator, Call, EmulatorThread, Fault, write_kubeconfig
from kubeclassify_operator.kube import USER_AGENT
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


class Namespace:
    """Paths and shortcuts for one test's namespace in the shared cluster (real or emulated)."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def path(self, kind: str, name: str = "", sub: str = "") -> str:
        prefix = {
            "imageclassifiers": IC_PATH,
            "deployments": "/apis/apps/v1",
            "replicasets": "/apis/apps/v1",
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

    def items_of(self, kind: str) -> list[dict[str, Any]]:
        """Every object of `kind` in the namespace."""
        return self.cluster.items(self.path(kind))

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
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch and wait until kopf serves its liveness endpoint."""
        running = self.process is not None and self.process.poll() is None
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


class OperatorLauncher(Protocol):
    """Starts a named operator process (`POD_ID`) with extra command-line arguments."""

    def __call__(self, name: str, *args: str) -> OperatorProcess: ...


@contextlib.contextmanager
def _operators(kubeconfig: Path, workdir: Path, *defaults: str) -> Iterator[OperatorLauncher]:
    """Start the installed `kubeclassify-operator` command (default: cluster-wide, electing a
    leader in the Lease kubeclassify-system/kubeclassify-operator), `defaults` before `args`."""
    command = shutil.which("kubeclassify-operator", path=str(Path(sys.executable).parent))
    assert command, "install the operator: pip install -e operator"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    started: list[OperatorProcess] = []

    def launch(name: str, *args: str) -> OperatorProcess:
        # POD_ID: the replica's name in the Lease, as in deploy/.
        operator = OperatorProcess(
            [command, *defaults, *args], {**env, "POD_ID": name}, workdir / f"{name}.log"
        )
        started.append(operator)
        operator.start()
        return operator

    try:
        yield launch
    finally:
        for operator in started:
            operator.stop()


@pytest.fixture(scope="session")
def kubeconfig(emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig for the emulator, as kubectl and the operator read it."""
    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", emulator.url)


@pytest.fixture(scope="session")
def launch_operator(
    kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorLauncher]:
    """Operators against the emulator (standalone: kmock serves no Leases to elect in)."""
    with _operators(kubeconfig, tmp_path_factory.mktemp("operator"), "--standalone") as launch:
        yield launch


@pytest.fixture(scope="session")
def operator_process(launch_operator: OperatorLauncher) -> OperatorProcess:
    """The operator every emulator test talks to."""
    return launch_operator("operator-1")


_namespaces = itertools.count(1)


@pytest.fixture
def ns(cluster: Cluster, operator_process: OperatorProcess) -> Namespace:
    """A fresh namespace per test in the shared emulated cluster, with the operator running."""
    return Namespace(cluster, f"test-{next(_namespaces)}")


# ---------------------------------------------------------------- the real control plane


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlane]:
    """A real control plane with the CRDs, namespace, ServiceAccount and RBAC of
    deploy/ applied. Reuses the plane `.ci/run` started (KUBECLASSIFY_K8S_RUN), else starts one
    of its own (free ports, own run directory) and stops it after the session."""
    reuse = os.environ.get(RUN_ENV)
    control_plane = ControlPlane.attach(Path(reuse)) if reuse else ControlPlane.start()
    try:
        control_plane.install()
        yield control_plane
    finally:
        if control_plane.owned:
            control_plane.down()


@pytest.fixture(scope="session")
def plane_cluster(plane: ControlPlane) -> Cluster:
    """The admin's client for the real API server (cluster-admin; not subject to the RBAC)."""
    return Cluster(plane.url, cert=plane.admin_cert, ca=str(plane.ca_cert))


@pytest.fixture(scope="session")
def operator_kubeconfig(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig acting as deploy/'s ServiceAccount (TokenRequest token, valid 24 h)."""
    path = tmp_path_factory.mktemp("plane") / "operator.kubeconfig"
    return plane.token_kubeconfig(path, OPERATOR_SA, OPERATOR_NAMESPACE)


@pytest.fixture(scope="session")
def launch_plane_operator(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorLauncher]:
    """`launch("name", *args)`: more operators on the real plane, as the ServiceAccount;
    every one is stopped at the end of the session (or by the test)."""
    with _operators(operator_kubeconfig, tmp_path_factory.mktemp("plane-operator")) as launch:
        yield launch


@pytest.fixture(scope="session")
def plane_operator(launch_plane_operator: OperatorLauncher) -> OperatorProcess:
    """The operator (cluster-wide, leader of the Lease) the real-plane tests share."""
    return launch_plane_operator("plane-operator-1")


NamespaceMaker = Callable[[], Namespace]


@pytest.fixture
def plane_namespaces(plane_cluster: Cluster) -> Iterator[NamespaceMaker]:
    """`make()`: a fresh namespace on the real plane each call; all deleted after the test."""
    made: list[str] = []

    def make() -> Namespace:
        name = f"t{next(_namespaces)}-{secrets.token_hex(3)}"
        plane_cluster.create("/api/v1/namespaces", {"metadata": {"name": name}})
        made.append(name)
        return Namespace(plane_cluster, name)

    yield make
    for name in made:
        plane_cluster.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def plane_namespace(plane_namespaces: NamespaceMaker) -> Namespace:
    """A fresh namespace on the real plane, deleted (in the background) after the test."""
    return plane_namespaces()


@pytest.fixture
def plane_ns(plane_namespace: Namespace, plane_operator: OperatorProcess) -> Namespace:
    """A fresh namespace on the real plane, with the shared operator running."""
    return plane_namespace


@pytest.fixture
def operator_paused(plane_operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The shared operator stopped during the test (started again after it): for tests that
    need no operator at all, or only one of their own (e.g. `--namespace` mode)."""
    plane_operator.stop()
    yield plane_operator
    plane_operator.start()


class Kubelet:
    """Plays the kubelet (and the cloud controller) with admin rights: Nodes, pod and
    LoadBalancer status, written the way those components would."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.nodes: list[str] = []

    def add_node(self, name: str = "node-1", cpu: str = "8", memory: str = "32Gi") -> None:
        """A Ready, untainted Node the scheduler can bind pods to."""
        self.cluster.create("/api/v1/nodes", {"metadata": {"name": name}})
        self.nodes.append(name)
        resources = {"cpu": cpu, "memory": memory, "pods": "110"}
        now = _now()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        self.cluster.patch(
            f"/api/v1/nodes/{name}/status",
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": [ready],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                }
            },
        )
        # Admission taints a new Node not-ready; the node lifecycle controller (off) would lift it.
        self.cluster.patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})

    def remove_nodes(self) -> None:
        for name in self.nodes:
            self.cluster.delete(f"/api/v1/nodes/{name}")
        self.nodes.clear()

    def wait_pods(
        self, ns: Namespace, instance: str, count: int, scheduled: bool = True, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """The classifier's `count` pods, once they exist (and are bound to a node)."""

        def probe() -> list[dict[str, Any]] | None:
            pods = ns.pods(instance)
            ok = len(pods) == count and all(
                p["spec"].get("nodeName") or not scheduled for p in pods
            )
            return pods if ok else None

        return self.cluster.wait(probe, timeout, f"{count} pods of {instance}")

    def container_status(
        self,
        ns: Namespace,
        pod: str,
        state: dict[str, Any],
        ready: bool = False,
        restarts: int = 0,
        last_state: dict[str, Any] | None = None,
    ) -> None:
        """Write the pod's status as the kubelet would: phase Running, the conditions, and one
        container status per container with this `state` (`{"running": {...}}`, ...)."""
        obj = ns.get("pods", pod)
        assert obj is not None, f"pod {pod} not found"
        flag = "True" if ready else "False"
        now = _now()
        conditions = [
            {"type": type_, "status": status, "lastTransitionTime": now}
            for type_, status in [
                ("PodScheduled", "True"),
                ("Initialized", "True"),
                ("ContainersReady", flag),
                ("Ready", flag),
            ]
        ]
        statuses = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": ready,
                "started": "running" in state,
                "restartCount": restarts,
                "state": state,
                "lastState": last_state or {},
            }
            for container in obj["spec"]["containers"]
        ]
        self.cluster.patch(
            ns.path("pods", pod, "status"),
            {
                "status": {
                    "phase": "Running",
                    "conditions": conditions,
                    "containerStatuses": statuses,
                    "startTime": now,
                }
            },
        )

    def run(self, ns: Namespace, pod: str, ready: bool = True) -> None:
        self.container_status(ns, pod, {"running": {"startedAt": _now()}}, ready=ready)

    def crash_loop(self, ns: Namespace, pod: str) -> None:
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed"}
        exited = {"terminated": {"reason": "Error", "exitCode": 1}}
        self.container_status(ns, pod, {"waiting": waiting}, restarts=3, last_state=exited)

    def oom_killed(self, ns: Namespace, pod: str) -> None:
        killed = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": _now()}
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed"}
        self.container_status(
            ns, pod, {"waiting": waiting}, restarts=1, last_state={"terminated": killed}
        )

    def image_pull_backoff(self, ns: Namespace, pod: str) -> None:
        waiting = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
        self.container_status(ns, pod, {"waiting": waiting})

    def assign_ingress(self, ns: Namespace, service: str, ip: str = "203.0.113.7") -> None:
        """What a cloud controller writes once a LoadBalancer Service has its address."""
        self.cluster.patch(
            ns.path("services", service, "status"),
            {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
        )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def kubelet(plane_cluster: Cluster) -> Iterator[Kubelet]:
    """The kubelet's part on the real plane; the Nodes it added are deleted after the test."""
    player = Kubelet(plane_cluster)
    yield player
    player.remove_nodes()
