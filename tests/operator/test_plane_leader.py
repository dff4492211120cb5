"""High availability on the real control plane: replicas elect a leader through a Lease.

deploy/ runs two replicas; one acts, the other stands by and takes over when the leader dies
(after the Lease expires) or stops (at once: the leader releases it). A takeover reconciles
everything that changed meanwhile. A leader that cannot renew stops acting; SIGTERM ends the
process within the Deployment's grace period even while the API server does not answer.
"""

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from control_plane import OPERATOR_NAMESPACE, OPERATOR_SA, ControlPlane
from kubeclassify_operator.kube import Kube
from kubeclassify_operator.leader import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    Elector,
    LeaseUnavailable,
    lease_path,
)
from operators import Cluster, Namespace, OperatorLauncher, OperatorProcess

REPO = Path(__file__).resolve().parents[2]
LEASE = lease_path(OPERATOR_NAMESPACE, "kubeclassify-operator")
WAIT = 30


def grace_period() -> float:
    """The operator Deployment's terminationGracePeriodSeconds (deploy/operator.yaml)."""
    deployment = yaml.safe_load((REPO / "deploy" / "operator.yaml").read_text())
    return float(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def holder(cluster: Cluster, path: str = LEASE) -> str:
    return str(((cluster.get(path) or {}).get("spec") or {}).get("holderIdentity") or "")


def log_of(operator: OperatorProcess) -> str:
    text: str = operator.log_path.read_text()
    return text


def wait_logged(operator: OperatorProcess, text: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_of(operator):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{log_of(operator)}"
        assert operator.process.poll() is None, f"exited:\n{log_of(operator)}"
        time.sleep(0.2)


def exit_code(operator: OperatorProcess, timeout: float) -> int:
    try:
        code: int = operator.process.wait(timeout)
    except Exception:
        pytest.fail(f"still running after {timeout}s:\n{log_of(operator)}")
    return code


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP a process (a hung leader, or an API server that accepts and never answers)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def apiserver_pid(plane: ControlPlane) -> int:
    return int((plane.run_dir / "pids" / "kube-apiserver.pid").read_text())


@pytest.fixture
def shared_operator(
    plane_operator: OperatorProcess, plane_cluster: Cluster
) -> Iterator[OperatorProcess]:
    """The session's operator; started again after the test if the test ended it."""
    yield plane_operator
    if plane_operator.process.poll() is not None:
        plane_operator.start()
    plane_cluster.wait(
        lambda: holder(plane_cluster) == plane_operator.env["POD_ID"],
        LEASE_DURATION + WAIT,
        "the shared operator to lead again",
    )


def test_a_standby_takes_over_and_catches_up(
    plane_ns: Namespace, shared_operator: OperatorProcess, launch_plane_operator: OperatorLauncher
) -> None:
    """The leader hangs: the standbys do nothing while its Lease is valid, then one takes
    over and restores what changed meanwhile (a deleted Service, a new spec); when that one
    stops, it hands the Lease over at once."""
    ns, cluster = plane_ns, plane_ns.cluster
    ns.create_classifier("ha", {})
    ns.wait_for("services", "ha", timeout=WAIT)
    leader = shared_operator.env["POD_ID"]
    cluster.wait(lambda: holder(cluster) == leader, WAIT, f"{leader} to hold the Lease")
    standbys = {
        name: launch_plane_operator(name)
        for name in (f"standby-{os.getpid()}-1", f"standby-{os.getpid()}-2")
    }
    try:
        for standby in standbys.values():
            wait_logged(standby, f"is held by {leader}")

        with frozen(shared_operator.process.pid):
            frozen_at = time.monotonic()
            cluster.delete(ns.path("services", "ha"))
            cluster.patch(ns.path("imageclassifiers", "ha"), {"spec": {"replicas": 2}})
            time.sleep(3)  # well within the Lease: the standbys must not act yet
            assert ns.get("services", "ha") is None, "a standby acted while the Lease was held"
            deployment = ns.get("deployments", "ha")
            assert deployment is not None and deployment["spec"]["replicas"] == 1
            ns.wait_for("services", "ha", timeout=LEASE_DURATION + WAIT)
            took = time.monotonic() - frozen_at
            new_leader = holder(cluster)
            assert new_leader in standbys
            ns.wait_for("deployments", "ha", lambda d: d["spec"]["replicas"] == 2, timeout=WAIT)
            ns.wait_for(
                "imageclassifiers",
                "ha",
                lambda ic: (
                    ic.get("status", {}).get("observedGeneration") == ic["metadata"]["generation"]
                ),
                "the status of the new spec",
                WAIT,
            )
        print(f"standby {new_leader} restored the Service {took:.1f}s after the leader hung")
        # The old leader wakes up without its Lease: it stops acting and exits.
        assert exit_code(shared_operator, WAIT) == 1
        assert "Lost the leadership" in log_of(shared_operator)

        # A clean stop hands over at once (the Lease is released, not left to expire).
        (other,) = (name for name in standbys if name != new_leader)
        stopped_at = time.monotonic()
        standbys[new_leader].stop()
        assert standbys[new_leader].process.returncode == 0
        cluster.wait(lambda: holder(cluster) == other, LEASE_DURATION, f"{other} to take over")
        handover = time.monotonic() - stopped_at
        cluster.delete(ns.path("services", "ha"))
        ns.wait_for("services", "ha", timeout=WAIT)
        print(f"clean handover to {other} in {handover:.1f}s")
        for standby in standbys.values():
            assert "Traceback" not in log_of(standby), log_of(standby)
    finally:
        for standby in standbys.values():
            standby.stop()


def test_sigterm_while_the_api_server_hangs_exits_within_the_grace_period(
    plane: ControlPlane,
    plane_namespace: Namespace,
    shared_operator: OperatorProcess,
    launch_plane_operator: OperatorLauncher,
) -> None:
    """Stopping must not wait on an API server that does not answer: exit 0, one line per
    thing given up, no traceback, within terminationGracePeriodSeconds."""
    ns = plane_namespace
    operator = launch_plane_operator(f"sigterm-{ns.name}", "--namespace", ns.name)
    ns.create_classifier("busy", {})
    ns.wait_for("services", "busy", timeout=WAIT)  # it acts: kopf is up, its watches open
    with frozen(apiserver_pid(plane)):
        time.sleep(1)
        stopping = time.monotonic()
        operator.process.send_signal(signal.SIGTERM)
        code = exit_code(operator, grace_period() + 10)
        took = time.monotonic() - stopping
    print(f"exited {took:.1f}s after SIGTERM with the API server hung")
    assert code == 0, log_of(operator)
    assert took < grace_period()
    assert "Traceback" not in log_of(operator), log_of(operator)


def test_a_leader_that_cannot_renew_stops_acting(
    plane: ControlPlane,
    plane_namespace: Namespace,
    shared_operator: OperatorProcess,
    launch_plane_operator: OperatorLauncher,
) -> None:
    """Cut off from the API server past the renew deadline, the leader exits (its Lease may
    go to a standby any moment after): exit code 1, its last line says why, no traceback."""
    ns = plane_namespace
    operator = launch_plane_operator(f"cutoff-{ns.name}", "--namespace", ns.name)
    wait_logged(operator, "this replica acts")
    with frozen(apiserver_pid(plane)):
        code = exit_code(operator, RENEW_DEADLINE + WAIT)
    assert code == 1
    last = log_of(operator).splitlines()[-1]
    assert "[ERROR" in last and "Lost the leadership" in last, log_of(operator)
    assert f"Lease {OPERATOR_NAMESPACE}/kubeclassify-operator-{ns.name}" in last
    assert "Traceback" not in log_of(operator)


@pytest.fixture
def admin_kube(plane: ControlPlane) -> Kube:
    config = str(plane.admin_kubeconfig)
    return Kube(kubernetes.config.new_client_from_config(config_file=config))  # type: ignore[no-untyped-call]


def test_two_electors_race_for_a_free_lease_and_one_wins(
    admin_kube: Kube, plane_namespace: Namespace
) -> None:
    """The API server's resourceVersion check decides: never two holders; an expired Lease
    (by the standby's own clock) is taken over; a release frees it at once."""
    now = [0.0]
    a, b = (
        Elector(admin_kube, plane_namespace.name, "race", name, clock=lambda: now[0])
        for name in ("a", "b")
    )
    assert a.try_acquire()
    assert not b.try_acquire()  # held, and b has only just seen it
    assert a.renew()
    now[0] += LEASE_DURATION - 1
    assert not b.try_acquire()  # b saw a's renewal: the Lease is not stale to it yet
    now[0] += LEASE_DURATION
    assert b.try_acquire()  # a stopped renewing (as far as b can tell): b takes over
    assert not a.renew()  # a has lost it, and knows
    lease = plane_namespace.cluster.get(lease_path(plane_namespace.name, "race"))
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    b.release()
    assert a.try_acquire()  # no holder: no need to wait for it to expire


def test_a_missing_lease_namespace_is_a_setup_error(admin_kube: Kube) -> None:
    elector = Elector(admin_kube, "no-such-namespace", "kubeclassify-operator", "me")
    with pytest.raises(
        LeaseUnavailable, match=r"namespace no-such-namespace not found.*--standalone"
    ):
        elector.try_acquire()


def test_a_leader_whose_lease_grant_is_revoked_stops_acting(
    plane_namespace: Namespace, launch_plane_operator: OperatorLauncher
) -> None:
    """Renewal refused by RBAC is a lost Lease too (not a renewal thread dying quietly while
    the operator acts on): exit code 1, the last line names the Lease and the fix."""
    ns = plane_namespace
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + ns.name
    meta = {"name": "leases", "namespace": ns.name}
    ns.cluster.create(
        f"{rbac}/roles",
        {
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "create", "update"],
                }
            ],
        },
    )
    ns.cluster.create(
        f"{rbac}/rolebindings",
        {
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases"},
            "subjects": [
                {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}
            ],
        },
    )
    operator = launch_plane_operator(
        f"revoked-{ns.name}", "--namespace", ns.name, "--lease-namespace", ns.name
    )
    wait_logged(operator, "this replica acts")
    ns.cluster.delete(f"{rbac}/rolebindings/leases")
    assert exit_code(operator, RENEW_DEADLINE + WAIT) == 1
    last = log_of(operator).splitlines()[-1]
    assert "Lost the leadership" in last and f"Lease {ns.name}/" in last, log_of(operator)
    assert "deploy/rbac.yaml" in last
    assert "Traceback" not in log_of(operator)
