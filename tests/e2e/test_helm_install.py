"""The operator installed through the chart (issue 21), once, on the real node: the chart's
Deployment runs as two real pods (in-cluster config, the chart's ServiceAccount and RBAC), one
leads, and it serves a classifier through a real Service; `helm uninstall` takes the release's
objects away and leaves the CRD, and the classifier keeps serving.

The session's operator (`kubectl apply -k tests/e2e/overlay`) watches the whole cluster, so it
is scaled to 0 for the test's duration: two operators would reconcile the same classifier and
the test could not tell whose work it saw. It is scaled back to deploy/'s replicas afterwards,
whatever happened, and the test returns once one of its pods leads again.

The chart goes in as another release (its objects `<release>-operator`, no name shared with the
overlay's) in a namespace Helm creates, in namespaced mode, watching one test namespace:
- the chart's default, cluster-wide, renders exactly deploy/ (tests/helm holds them equal, object
  by object), which every e2e session runs already; the namespaced mode (Roles in the watched
  namespace, a ClusterRole that only lists CRDs and namespaces, `--namespace`, its own Lease) is
  what the chart adds, and what only this test runs in real pods;
- on a cluster shared with other tests, the release can act only in a namespace this test owns,
  so a release left behind by a failed run fights nobody over their classifiers.
Meanwhile every other classifier on the cluster keeps serving, unreconciled until the session's
operator is back (its first pass catches up with whatever changed).
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import time
from collections.abc import Iterator
from typing import Any

import helm
import pytest
import requests
import yaml
from control_plane import OPERATOR_NAMESPACE, REPO_ROOT, service_account_user
from kubeclassify_operator.cli import LEASE_NAME, lease_name
from node import NODE_NAME, OPERATOR_DEPLOYMENT, NodeCluster, wait_for

pytestmark = pytest.mark.usefixtures("operator_installed")

DOG = (REPO_ROOT / "examples" / "images" / "dog.jpg").read_bytes()
CLASSIFIER = "resnet"  # examples/minimal.yaml's
CRD = "imageclassifiers.kubeclassify.io"
OVERLAY_SELECTOR = "app.kubernetes.io/name=kubeclassify-operator"
DEPLOYED = yaml.safe_load((REPO_ROOT / "deploy" / "operator.yaml").read_text())
DEPLOY_REPLICAS: int = DEPLOYED["spec"]["replicas"]


def live_pods(node_cluster: NodeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods matching `selector` that are not terminating."""
    pods = node_cluster.pods(namespace, selector)
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def lease_holder(node_cluster: NodeCluster, namespace: str, name: str) -> str:
    lease = node_cluster.get("lease", name, namespace) or {}
    return str(lease.get("spec", {}).get("holderIdentity") or "")


def run_notes_line(node_cluster: NodeCluster, notes: str, line: str) -> str:
    """Run a command NOTES.txt prints (what `helm install` tells the user to do next); its
    stderr, where kubectl puts warnings."""
    assert line in notes, f"NOTES.txt no longer says `{line}`:\n{notes}"
    return node_cluster.kubectl(*shlex.split(line)[1:], timeout=330).stderr


@contextlib.contextmanager
def overlay_operator_stopped(node_cluster: NodeCluster) -> Iterator[None]:
    """The session's operator scaled to 0 (its pods gone, so it acts no more), then back to
    deploy/'s replicas, rolled out, and one of its pods leading, whatever happened."""
    where = ["--namespace", OPERATOR_NAMESPACE]
    node_cluster.kubectl("scale", f"deployment/{OPERATOR_DEPLOYMENT}", "--replicas=0", *where)
    try:
        wait_for(
            "the overlay's operator pods gone",
            lambda: node_cluster.pods(OPERATOR_NAMESPACE, OVERLAY_SELECTOR) == [],
            90,
        )
        yield
    finally:
        node_cluster.kubectl(
            "scale", f"deployment/{OPERATOR_DEPLOYMENT}", f"--replicas={DEPLOY_REPLICAS}", *where
        )
        node_cluster.kubectl(
            "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "--timeout=300s", *where,
            timeout=330,
        )  # fmt: skip

        def leads() -> bool:
            pods = live_pods(node_cluster, OPERATOR_NAMESPACE, OVERLAY_SELECTOR)
            holder = lease_holder(node_cluster, OPERATOR_NAMESPACE, LEASE_NAME)
            return holder in {pod["metadata"]["name"] for pod in pods}

        wait_for("one of the overlay's operator pods leading again", leads, 60)


def refusals(node_cluster: NodeCluster, user: str) -> list[str]:
    """The requests of `user` that RBAC refused, as the plane's audit log records them."""
    return [
        f"{event['verb']} {event['requestURI']}"
        for event in node_cluster.plane.audit_events(user)
        if event.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]


def predict(http: requests.Session, url: str) -> None:
    answer = http.post(f"{url}/predict", files={"image": ("dog.jpg", DOG)}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 5


def chart_operator_running(
    node_cluster: NodeCluster, release: str, home: str, watched: str, notes: str
) -> tuple[str, str]:
    """NOTES' next steps run, the release's two pods checked; (leader, standby) once one
    holds the Lease of the watched namespace."""
    name = f"{release}-operator"
    run_notes_line(node_cluster, notes, f"kubectl -n {home} rollout status deployment/{name}")
    # Helm made a bare namespace: NOTES' Pod Security label, which the pods running there must
    # already meet (kubectl warns of each pod that violates it).
    label = "pod-security.kubernetes.io/enforce=restricted"
    warnings = run_notes_line(node_cluster, notes, f"kubectl label namespace {home} {label}")
    assert "violate" not in warnings, warnings

    pods = node_cluster.pods(home, f"app.kubernetes.io/name={name}")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running", pod["status"]
        assert pod["spec"]["nodeName"] == NODE_NAME
        [container] = pod["spec"]["containers"]
        assert container["image"] == node_cluster.images.operator
        assert container["imagePullPolicy"] == "Never"
        assert container["args"][-3:] == ["--namespace", watched, "--verbose"]
        [status] = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0, status
    names = {pod["metadata"]["name"] for pod in pods}
    lease = lease_name([watched])
    leader = wait_for("a chart pod leading", lambda: lease_holder(node_cluster, home, lease), 60)
    assert leader in names
    [standby] = names - {leader}
    return leader, standby


def test_the_chart_runs_the_operator_that_serves_a_classifier_and_uninstalls(
    node_cluster: NodeCluster, http: requests.Session
) -> None:
    release = f"e2e-helm-{secrets.token_hex(3)}"  # fresh: cluster-scoped names, audit user
    home = f"{release}-system"  # made by Helm (--create-namespace), as the docs do
    name = f"{release}-operator"
    kubeconfig = node_cluster.plane.admin_kubeconfig
    repository, _, tag = node_cluster.images.operator.rpartition(":")
    crd_uid = (node_cluster.get("crd", CRD, "") or {})["metadata"]["uid"]
    started = time.monotonic()
    with node_cluster.namespace() as watched, overlay_operator_stopped(node_cluster):
        values = {
            # Imported into the node's containerd, never pulled.
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "serverImages": {
                "openvino": node_cluster.images.server,
                "tensorflow": node_cluster.images.tensorflow,
            },
            "watchNamespaces": [watched],
            "logLevel": "debug",  # logs every pass: the leader's logs show it reconciled ours
        }
        notes = helm.notes(values, release=release, namespace=home)
        try:
            helm.install(kubeconfig, values, release=release, namespace=home)
            leader, standby = chart_operator_running(node_cluster, release, home, watched, notes)

            node_cluster.apply(node_cluster.example("minimal"), watched)
            # Its pod ready, it says what it lacks; then a load balancer's address, as a
            # bare-metal provider would give it, and NOTES' wait for Ready.
            node_cluster.wait_condition(
                CLASSIFIER, watched, status="False", reason="LoadBalancerPending", timeout=600
            )
            node_cluster.assign_load_balancer(CLASSIFIER, watched)
            wait = f"kubectl wait -n {watched} --for=condition=Ready ic/{CLASSIFIER} --timeout=5m"
            run_notes_line(node_cluster, notes, wait)
            url = node_cluster.url(CLASSIFIER, watched)
            predict(http, url)

            # Whose work it was: the overlay's operator has no pod, the leader logged the pass,
            # the standby only waited.
            assert node_cluster.pods(OPERATOR_NAMESPACE, OVERLAY_SELECTOR) == []

            def logs(pod: str) -> str:
                return node_cluster.kubectl("logs", pod, "--namespace", home).stdout

            assert f"[{watched}/{CLASSIFIER}] Reconciled: " in logs(leader)
            standby_logs = logs(standby)
            assert f"is held by {leader}" in standby_logs
            assert "this replica acts" not in standby_logs
            assert refusals(node_cluster, service_account_user(home, name)) == []
        finally:
            helm.uninstall(kubeconfig, release=release, namespace=home)
            wait_for(
                "the chart's pods gone",
                lambda: node_cluster.pods(home, f"app.kubernetes.io/name={name}") == [],
                90,
            )
            node_cluster.kubectl("delete", "namespace", home, "--wait=false", "--ignore-not-found")

        # Nothing of the release is left but the CRD (Helm never deletes crds/); the
        # classifier, unmanaged now, keeps serving.
        for kind, namespace in (
            ("clusterrole", ""), ("clusterrolebinding", ""), ("role", watched),
            ("rolebinding", watched),
        ):  # fmt: skip
            assert node_cluster.get(kind, name, namespace) is None, f"{kind} {name} left"
        assert (node_cluster.get("crd", CRD, "") or {})["metadata"]["uid"] == crd_uid
        predict(http, url)
    print(f"\nthe chart installed, serving and uninstalled in {time.monotonic() - started:.0f} s")
