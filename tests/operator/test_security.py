"""Least privilege, checked against what the operator really does.

The ClusterRole must grant exactly the (apiGroup, resource, verb) triples the operator's
requests need: every request the operator processes (kopf's and kube.py's, told apart from the
tests' and kubectl's by User-Agent) made against the emulator in this session, after a scenario
that takes every code path that writes.
"""

from pathlib import Path
from typing import Any

import yaml

Namespace = Any
Journal = Any
REPO = Path(__file__).resolve().parents[2]
Triple = tuple[str, str, str]

# `--namespace` mode, which the emulator cannot serve: kopf lists and watches the namespaces,
# and meets its peers in a namespaced KopfPeering instead of the ClusterKopfPeering.
NAMESPACED_PEERING = {"clusterkopfpeerings": "kopfpeerings"}
NAMESPACE_MODE = {("", "namespaces", "list"), ("", "namespaces", "watch")}


def granted() -> set[Triple]:
    docs = yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text())
    role = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_cluster_role_grants_exactly_what_the_operator_uses(
    ns: Namespace, journal: Journal
) -> None:
    # Every write path: create all children, patch a drifted one, delete the HPA, post events.
    ns.create_classifier("least", {"autoscaling": {"maxReplicas": 3}})
    ns.wait_for("horizontalpodautoscalers", "least")
    for kind, drift, restored in [
        ("services", {"type": "NodePort"}, lambda s: s["spec"]["type"] == "LoadBalancer"),
        (
            "deployments",
            {"strategy": {"type": "Recreate"}},
            lambda d: "rollingUpdate" in d["spec"]["strategy"],
        ),
        ("horizontalpodautoscalers", {"maxReplicas": 9}, lambda h: h["spec"]["maxReplicas"] == 3),
    ]:
        ns.cluster.patch(ns.path(kind, "least"), {"spec": drift})
        ns.wait_for(kind, "least", restored, f"the drifted {kind} to be restored")
    ns.cluster.patch(ns.path("imageclassifiers", "least"), {"spec": {"autoscaling": None}})
    ns.cluster.wait(lambda: ns.get("horizontalpodautoscalers", "least") is None, what="HPA gone")
    ns.cluster.wait(lambda: ns.events("least"), what="an Event")

    used = {(c.group, c.resource, c.verb) for c in journal.since(0)}  # the whole session
    used |= {(g, NAMESPACED_PEERING[r], v) for g, r, v in used if r in NAMESPACED_PEERING}
    used |= NAMESPACE_MODE
    assert not any("*" in triple for triple in granted())
    assert sorted(granted() - used) == [], "granted but never used"
    assert sorted(used - granted()) == [], "used but not granted"
