"""Least privilege, checked against what the operator really does on a real API server.

The operator runs as deploy/'s ServiceAccount, so the API server enforces the ClusterRole: a
missing grant is a 403. The roles must grant exactly the (apiGroup, resource, verb)
triples the operator's requests need: every request the ServiceAccount made in this session,
as the API server's audit log records it, after a scenario that takes every code path that
writes, plus an operator in `--namespace` mode (which lists and watches namespaces and meets its
peers in its own namespace). One grant is checked at admission instead (see below).
"""

from pathlib import Path

import gateway_api
import yaml
from control_plane import OPERATOR_USER, ControlPlane, Triple, rbac_triple
from operators import Cluster, Namespace, OperatorLauncher

REPO = Path(__file__).resolve().parents[2]
WAIT = 30
# Checked by the API server's OwnerReferencesPermissionEnforcement admission (the children's
# blockOwnerDeletion), never requested, so never in the audit log; the plane enables that
# plugin, so without this grant every child the operator creates is refused.
CHECKED_AT_ADMISSION = {("kubeclassify.io", "imageclassifiers/finalizers", "update")}


def granted() -> set[Triple]:
    """What deploy/rbac.yaml's roles (the ClusterRole and any namespaced Role) grant."""
    docs = yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text())
    roles = [doc for doc in docs if doc["kind"] in ("ClusterRole", "Role")]
    return {
        (group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def run_namespace_mode(
    plane: ControlPlane, plane_cluster: Cluster, launch_plane_operator: OperatorLauncher
) -> None:
    """An operator watching one (empty) namespace, until it watches the classifiers there."""
    name = "rbac-namespace-mode"
    if plane_cluster.get(f"/api/v1/namespaces/{name}") is None:
        plane_cluster.create("/api/v1/namespaces", {"metadata": {"name": name}})
    operator = launch_plane_operator("rbac-namespace-mode", "--namespace", name)

    def watching() -> bool:
        seen = {
            (event["objectRef"].get("namespace"), event["objectRef"]["resource"])
            for event in plane.audit_events(OPERATOR_USER)
            if event["verb"] == "watch"
        }
        return {(name, "imageclassifiers"), (None, "namespaces")} <= seen

    try:
        plane_cluster.wait(watching, WAIT, "the namespaced operator's watches")
    finally:
        operator.stop()


def run_gateway_mode(plane: ControlPlane, ns: Namespace) -> None:
    """Gateway mode with a canary, with the Gateway API's CRDs (as the plane was, after): the
    route and track Services created, the route patched (to the stable backend alone at 0
    percent), and the route and both track Services deleted with spec.gateway. (Removing
    spec.canary would keep the canary's Service until the stable track's pods are ready, and
    no kubelet runs them here.)"""
    installed = gateway_api.served(plane)
    if not installed:
        gateway_api.install(plane)
    try:
        spec = {"gateway": {"name": "edge"}, "canary": {"trafficPercent": 10}}
        ns.create_classifier("gateway", spec)
        ns.wait_for("services", "gateway-canary", timeout=WAIT)
        ns.wait_for("httproutes", "gateway", timeout=WAIT)
        path = ns.path("imageclassifiers", "gateway")
        ns.cluster.patch(path, {"spec": {"canary": {"trafficPercent": 0}}})
        ns.wait_for(
            "httproutes",
            "gateway",
            lambda route: len(route["spec"]["rules"][0]["backendRefs"]) == 1,
            "the route patched to the stable backend alone",
            WAIT,
        )
        ns.cluster.patch(path, {"spec": {"gateway": None}})
        ns.cluster.wait(
            lambda: (
                ns.get("httproutes", "gateway") is None
                and ns.get("services", "gateway-stable") is None
                and ns.get("services", "gateway-canary") is None
            ),
            WAIT,
            "the route and the track Services deleted",
        )
    finally:
        if not installed:
            gateway_api.uninstall(plane)


def test_cluster_role_grants_exactly_what_the_operator_uses(
    plane_ns: Namespace,
    plane: ControlPlane,
    plane_cluster: Cluster,
    launch_plane_operator: OperatorLauncher,
) -> None:
    ns = plane_ns
    earlier = {event["auditID"] for event in plane.audit_events(OPERATOR_USER)}
    # Every write path: create all children, patch a drifted one, delete the HPA and a
    # canary's Deployment, post events; and Gateway mode's (see run_gateway_mode).
    ns.create_classifier("least", {"autoscaling": {"maxReplicas": 3}})
    ns.wait_for("horizontalpodautoscalers", "least", timeout=WAIT)
    for kind, drift, restored in [
        ("services", {"type": "NodePort"}, lambda s: s["spec"]["type"] == "LoadBalancer"),
        (
            "deployments",
            {"strategy": {"type": "Recreate", "rollingUpdate": None}},
            lambda d: "rollingUpdate" in d["spec"]["strategy"],
        ),
        ("horizontalpodautoscalers", {"maxReplicas": 9}, lambda h: h["spec"]["maxReplicas"] == 3),
    ]:
        ns.cluster.patch(ns.path(kind, "least"), {"spec": drift})
        ns.wait_for(kind, "least", restored, f"the drifted {kind} to be restored", WAIT)
    ns.cluster.patch(ns.path("imageclassifiers", "least"), {"spec": {"autoscaling": None}})
    ns.cluster.wait(lambda: ns.get("horizontalpodautoscalers", "least") is None, WAIT, "HPA gone")
    # A canary made and removed: its Deployment deleted (at 0 replicas, no kubelet needed).
    least = ns.path("imageclassifiers", "least")
    ns.cluster.patch(least, {"spec": {"replicas": 0, "canary": {"trafficPercent": 0}}})
    ns.wait_for("deployments", "least-canary", timeout=WAIT)
    ns.cluster.patch(least, {"spec": {"canary": None}})
    ns.cluster.wait(lambda: ns.get("deployments", "least-canary") is None, WAIT, "canary gone")
    ns.cluster.wait(lambda: ns.events("least"), WAIT, "an Event")
    run_gateway_mode(plane, ns)
    run_namespace_mode(plane, plane_cluster, launch_plane_operator)

    requests = plane.audit_events(OPERATOR_USER)  # the whole session, every operator
    # RBAC's own refusals (a write into a namespace being deleted is a 403 for another reason),
    # in this scenario only: other tests revoke grants or restart the API server on purpose,
    # and a restarted API server refuses everything until its RBAC caches have synced.
    refused = [
        f"{e['verb']} {e['requestURI']}"
        for e in requests
        if e["auditID"] not in earlier
        and e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert refused == [], "the API server refused the operator"
    used = {triple for event in requests if (triple := rbac_triple(event))}
    used |= CHECKED_AT_ADMISSION
    assert not any("*" in triple for triple in granted())
    assert sorted(granted() - used) == [], "granted but never used"
    assert sorted(used - granted()) == [], "used but not granted"
