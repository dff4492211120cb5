"""The operator's runtime on the real control plane: conflict rechecks and what it logs."""

import time
from typing import Any

from operators import Cluster, Namespace, OperatorProcess

WAIT = 30


def owner_uid(child: dict[str, Any]) -> str | None:
    refs = child["metadata"].get("ownerReferences") or []
    return next((ref["uid"] for ref in refs if ref.get("controller")), None)


def log_since(operator: OperatorProcess, offset: int) -> str:
    text: str = operator.log_path.read_text()[offset:]
    return text


def test_a_conflict_recheck_creates_the_child_and_says_so(
    plane_ns: Namespace, plane_operator: OperatorProcess
) -> None:
    """The stranger goes; the recheck (no event tells the operator) creates our Deployment and
    posts its "Created" Event, from kopf's context (no LookupError in a thread of its own)."""
    ns = plane_ns
    offset = len(plane_operator.log_path.read_text())
    ns.cluster.create(
        ns.path("deployments"),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "clash", "namespace": ns.name},  # none of our labels
            "spec": {
                "selector": {"matchLabels": {"app": "theirs"}},
                "template": {
                    "metadata": {"labels": {"app": "theirs"}},
                    "spec": {"containers": [{"name": "theirs", "image": "theirs"}]},
                },
            },
        },
    )
    uid = ns.create_classifier("clash", {})["metadata"]["uid"]
    ns.wait_condition("clash", "Ready", "False", "ChildConflict", timeout=WAIT)
    ns.cluster.delete(ns.path("deployments", "clash"))
    ns.wait_for("deployments", "clash", lambda d: owner_uid(d) == uid, "ours", timeout=WAIT)
    created = ns.cluster.wait(
        lambda: [
            e
            for e in ns.events("clash")
            if e["reason"] == "Created" and e["message"] == "Created Deployment clash"
        ],
        WAIT,
        "the Created Event of the rechecked Deployment",
    )
    assert created[0]["type"] == "Normal"
    log = log_since(plane_operator, offset)
    assert "Traceback" not in log and "LookupError" not in log, log


def test_log_lines_name_the_classifier_and_routine_is_debug(
    plane_ns: Namespace, plane_operator: OperatorProcess
) -> None:
    """A rejected spec is one WARNING naming namespace/name and the field; passes that went
    well (kopf's "Handler ... succeeded.") are not logged at the default level."""
    ns = plane_ns
    offset = len(plane_operator.log_path.read_text())
    ns.create_classifier("fine", {})
    ns.wait_for("services", "fine", timeout=WAIT)
    # Accepted by the CRD, refused by the API server in the Deployment: InvalidSpec.
    ns.create_classifier("bad", {"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]})
    ns.wait_condition("bad", "Ready", "False", "InvalidSpec", timeout=WAIT)
    ns.cluster.patch(ns.path("services", "fine"), {"spec": {"type": "NodePort"}})  # more passes
    ns.wait_for("services", "fine", lambda s: s["spec"]["type"] == "LoadBalancer", timeout=WAIT)
    time.sleep(1)  # the passes the restore itself triggers
    lines = log_since(plane_operator, offset).splitlines()
    rejected = [line for line in lines if "Spec rejected" in line]
    assert len(rejected) == 1, lines
    assert "[WARNING" in rejected[0] and f"[{ns.name}/bad]" in rejected[0]
    assert "spec.tolerations[0]" in rejected[0]
    assert not [line for line in lines if "succeeded" in line], lines
    about_objects = [line for line in lines if " kopf.objects " in line or "Pass" in line]
    assert all(f"[{ns.name}/" in line for line in about_objects), about_objects


def test_a_namespace_being_deleted_is_left_alone_quietly(
    plane_cluster: Cluster, plane_operator: OperatorProcess
) -> None:
    """Deleting a namespace deletes the children before the classifier: re-creating them is
    refused (403, NamespaceTerminating). Nothing is left to do there: no error, no traceback,
    no Events retried into the namespace."""
    name = f"doomed-{time.monotonic_ns() % 10**6}"
    plane_cluster.create("/api/v1/namespaces", {"metadata": {"name": name}})
    path = f"/apis/kubeclassify.io/v1alpha1/namespaces/{name}/imageclassifiers"
    plane_cluster.create(
        path,
        {
            "apiVersion": "kubeclassify.io/v1alpha1",
            "kind": "ImageClassifier",
            "metadata": {"name": "doomed"},
            "spec": {},
        },
    )
    plane_cluster.wait(
        lambda: plane_cluster.get(f"/api/v1/namespaces/{name}/services/doomed"), WAIT, "children"
    )
    offset = len(plane_operator.log_path.read_text())
    plane_cluster.delete(f"/api/v1/namespaces/{name}")
    plane_cluster.wait(
        lambda: plane_cluster.get(f"/api/v1/namespaces/{name}") is None, 120, "namespace gone"
    )
    time.sleep(2)  # kopf would retry a refused Event within this
    lines = log_since(plane_operator, offset).splitlines()
    assert not [line for line in lines if "ERROR" in line or "Traceback" in line], lines
