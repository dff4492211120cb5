"""Fixtures for the operator tests: the real operator against a real control plane or an emulator.

The operator is always the real `kubeclassify-operator` console command in a subprocess.
- `plane_*` fixtures: a real Kubernetes control plane (`../shared/k8s`: API server, controllers,
  scheduler; no kubelet, so `kubelet` plays one), the operator authenticated as its ServiceAccount
  so the API server enforces deploy/rbac.yaml, and an audit log of every request.
- `emulator`, `cluster`, `ns`, `journal`, `faults`: kmock's API emulator in a background thread,
  kept for the faults a real API server will not produce on demand (429, 5xx, stalls, cut watches).
Tests drive either over HTTP, the way kubectl and controllers would.
The types the fixtures give (`Cluster`, `Namespace`, `Journal`, `OperatorProcess`) are in
tests/support/operators.py, shared with tests/helm; `Kubelet` is in tests/support/kubelet.py.
"""

import contextlib
import itertools
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_plane import OPERATOR_NAMESPACE, OPERATOR_SA, RUN_ENV, ControlPlane
from kube_emulator import EmulatorThread, Fault, write_kubeconfig
from kubelet import Kubelet
from operators import (
    Cluster,
    Journal,
    Namespace,
    NamespaceMaker,
    OperatorLauncher,
    OperatorProcess,
)


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorThread]:
    thread = EmulatorThread()
    thread.start_and_wait()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def cluster(emulator: EmulatorThread) -> Cluster:
    return Cluster(emulator.url)


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


@pytest.fixture
def kubelet(plane_cluster: Cluster) -> Iterator[Kubelet]:
    """The kubelet's part on the real plane; the Nodes it added are deleted after the test."""
    player = Kubelet(plane_cluster)
    yield player
    player.remove_nodes()
