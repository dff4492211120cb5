"""Deleting a classifier on a real cluster: the real garbage collector removes its children,
whichever propagation the user asks for, and whether or not the operator runs; the operator
never resurrects a child of a classifier that is going away.

(Background propagation, the API's default, is in test_integration.py.)
"""

from control_plane import OPERATOR_USER, ControlPlane, rbac_triple
from operators import Namespace, OperatorProcess

WAIT = 30
CHILDREN = ("deployments", "replicasets", "pods", "services", "horizontalpodautoscalers")


def make(ns: Namespace, name: str) -> None:
    """A classifier with every kind of child, once the real controllers have made the pods."""
    ns.create_classifier(name, {"autoscaling": {"minReplicas": 2, "maxReplicas": 3}})
    for kind in ("deployments", "services", "horizontalpodautoscalers"):
        ns.wait_for(kind, name, timeout=WAIT)
    ns.cluster.wait(lambda: len(ns.pods(name)) == 2, WAIT, "the 2 pods")


def wait_all_collected(ns: Namespace) -> None:
    for kind in CHILDREN:
        ns.wait_empty(kind, WAIT)


def creates_by_operator(plane: ControlPlane, namespace: str) -> list[str]:
    """The resources the operator created in `namespace`, as the audit log says."""
    return [
        triple[1]
        for event in plane.audit_events(OPERATOR_USER)
        if event.get("objectRef", {}).get("namespace") == namespace
        and (triple := rbac_triple(event))
        and triple[2] == "create"
        and triple[1] != "events"
        and event["responseStatus"]["code"] < 300
    ]


def test_foreground_deletion_collects_every_child_first(
    plane_ns: Namespace, plane: ControlPlane
) -> None:
    """Foreground: the classifier stays (deletionTimestamp set) until the collector has deleted
    the children that block it; meanwhile the operator must not make them again."""
    ns = plane_ns
    make(ns, "fore")
    ns.cluster.delete(ns.path("imageclassifiers", "fore"), propagation="Foreground")
    ns.cluster.wait(lambda: ns.get("imageclassifiers", "fore") is None, WAIT, "the classifier gone")
    wait_all_collected(ns)
    assert sorted(creates_by_operator(plane, ns.name)) == [
        "deployments",
        "horizontalpodautoscalers",
        "services",
    ]


def test_orphan_deletion_leaves_the_children_to_the_user(plane_ns: Namespace) -> None:
    """Orphan: the user asked to keep the children; they lose their owner and stay."""
    ns = plane_ns
    make(ns, "orphans")
    ns.cluster.delete(ns.path("imageclassifiers", "orphans"), propagation="Orphan")
    ns.cluster.wait(
        lambda: ns.get("imageclassifiers", "orphans") is None, WAIT, "the classifier gone"
    )
    for kind in ("deployments", "services", "horizontalpodautoscalers"):
        child = ns.wait_for(
            kind,
            "orphans",
            lambda c: not c["metadata"].get("ownerReferences"),
            f"the {kind} orphaned",
            WAIT,
        )
        assert child["metadata"]["labels"]["app.kubernetes.io/instance"] == "orphans"


def test_children_are_collected_with_the_operator_stopped(
    plane_ns: Namespace, plane_operator: OperatorProcess, plane: ControlPlane
) -> None:
    """Deletion needs no operator (no finalizer): it works while the operator is down, and
    the operator, started again, makes nothing for the classifier that is gone."""
    ns = plane_ns
    make(ns, "orphaned")
    plane_operator.stop()
    try:
        ns.cluster.delete(ns.path("imageclassifiers", "orphaned"))
        ns.cluster.wait(
            lambda: ns.get("imageclassifiers", "orphaned") is None, WAIT, "the classifier gone"
        )
        wait_all_collected(ns)
        created = len(creates_by_operator(plane, ns.name))
    finally:
        plane_operator.start()
    ns.create_classifier("canary", {})  # once the operator has made this, it has caught up
    ns.wait_for("deployments", "canary", timeout=WAIT)
    ns.wait_for("services", "canary", timeout=WAIT)
    assert ns.get("deployments", "orphaned") is None
    assert ns.get("services", "orphaned") is None
    assert len(creates_by_operator(plane, ns.name)) - created == 2  # the canary's two children
