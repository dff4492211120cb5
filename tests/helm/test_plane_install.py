"""The chart installed by Helm on a real control plane, then the operator run as the chart's
ServiceAccount, under the chart's RBAC: it takes every path that writes, and the API server
refuses none of its requests (its audit log, read as tests/operator/test_security.py reads it).

No kubelet runs, so no pod does: the operator runs as a local process with the command line and
environment the chart's Deployment gives its container, and a token of the chart's
ServiceAccount, as the operator tests run it.
"""

import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import helm
import pytest
from control_plane import ControlPlane, rbac_triple, service_account_user
from kubeclassify_operator.cli import lease_name
from operators import Cluster, Namespace, OperatorProcess

WAIT = 30
# What the scenario must have made the operator do, or it proved nothing: every kind of write.
WRITES = {
    ("apps", "deployments", "create"),
    ("", "services", "create"),
    ("", "services", "patch"),
    ("autoscaling", "horizontalpodautoscalers", "create"),
    ("autoscaling", "horizontalpodautoscalers", "delete"),
    ("kubeclassify.io", "imageclassifiers/status", "patch"),
    ("", "events", "create"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
}


def start_operator(
    plane: ControlPlane,
    values: dict[str, Any],
    release: str,
    namespace: str,
    workdir: Path,
) -> OperatorProcess:
    """The chart's operator container as a local process: the image's entry point (the
    console command), the container's args and env, the pod's ServiceAccount."""
    manifests = helm.render(values, release=release, namespace=namespace)
    (deployment,) = (m for m in manifests if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_name = f"{deployment['metadata']['name']}-0"
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    kubeconfig = plane.token_kubeconfig(
        workdir / "operator.kubeconfig", pod["serviceAccountName"], namespace
    )
    env = {name: value for name, value in os.environ.items() if name != "KUBERNETES_SERVICE_HOST"}
    env |= {
        var["name"]: fields[var["valueFrom"]["fieldRef"]["fieldPath"]] for var in container["env"]
    }
    env["KUBECONFIG"] = str(kubeconfig)
    command = shutil.which("kubeclassify-operator", path=str(Path(sys.executable).parent))
    assert command, "install the operator: pip install -e operator"
    # start() adds a --liveness of its own, last: this machine's port 8080 may be taken.
    operator = OperatorProcess([command, *container["args"]], env, workdir / f"{pod_name}.log")
    operator.start()
    return operator


def every_write(ns: Namespace) -> None:
    """Create all the children, restore a drifted one, delete the HPA, post an Event and the
    status (the scenario of test_security.py, shortened)."""
    ns.create_classifier("chart", {"autoscaling": {"maxReplicas": 3}})
    ns.wait_for("horizontalpodautoscalers", "chart", timeout=WAIT)
    ns.cluster.patch(ns.path("services", "chart"), {"spec": {"type": "NodePort"}})
    ns.wait_for(
        "services", "chart", lambda s: s["spec"]["type"] == "LoadBalancer", "restored", WAIT
    )
    ns.cluster.patch(ns.path("imageclassifiers", "chart"), {"spec": {"autoscaling": None}})
    ns.cluster.wait(lambda: ns.get("horizontalpodautoscalers", "chart") is None, WAIT, "HPA gone")
    ns.wait_condition("chart", "Ready", "False", "Unschedulable", timeout=WAIT)  # no node
    ns.cluster.wait(lambda: ns.events("chart"), WAIT, "an Event")


def refusals(plane: ControlPlane, user: str) -> list[str]:
    """The requests of `user` that RBAC refused, as the audit log records them."""
    return [
        f"{event['verb']} {event['requestURI']}"
        for event in plane.audit_events(user)
        if event.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]


@pytest.mark.parametrize("watch", ["cluster", "namespaces"])
def test_the_operator_runs_under_the_charts_rbac_with_no_refusal(
    watch: str, plane: ControlPlane, admin: Cluster, tmp_path: Path
) -> None:
    release = f"helm-{watch}-{secrets.token_hex(3)}"  # fresh: cluster-scoped names, audit user
    namespace = f"{release}-system"
    watched = Namespace(admin, f"{release}-classifiers")
    admin.create("/api/v1/namespaces", {"metadata": {"name": watched.name}})
    values = {"watchNamespaces": [watched.name]} if watch == "namespaces" else {}
    user = service_account_user(namespace, f"{release}-operator")
    helm.install(plane.admin_kubeconfig, values, release=release, namespace=namespace)
    try:
        plane.wait_crds_established()
        operator = start_operator(plane, values, release, namespace, tmp_path)
        try:
            every_write(watched)
            lease = admin.get(
                f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/"
                + lease_name(values.get("watchNamespaces", []))
            )
            assert lease is not None, "the operator took no Lease"
            assert lease["spec"]["holderIdentity"] == operator.env["POD_ID"]
        finally:
            operator.stop()
            # Even when the scenario failed: a refusal is then the likeliest reason.
            assert refusals(plane, user) == [], "the API server refused the operator"
    finally:
        helm.uninstall(plane.admin_kubeconfig, release=release, namespace=namespace)
        for name in (namespace, watched.name):
            admin.delete(f"/api/v1/namespaces/{name}")
    used = {triple for event in plane.audit_events(user) if (triple := rbac_triple(event))}
    assert sorted(WRITES - used) == [], "the scenario did not take every path that writes"
