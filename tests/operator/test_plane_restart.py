"""The API server and etcd die mid-reconcile and come back (same data): the operator rides it
out, resumes its watches, and leaves every classifier with exactly its children."""

import time

from control_plane import ControlPlane
from operators import Namespace, OperatorLauncher, OperatorProcess

WAIT = 60  # the API server's restart included
NAMES = [f"restart-{i}" for i in range(5)]


def test_an_api_server_restart_mid_reconcile(
    plane: ControlPlane,
    plane_namespace: Namespace,
    operator_paused: OperatorProcess,
    launch_plane_operator: OperatorLauncher,
) -> None:
    ns = plane_namespace
    # --standalone: a leader that cannot renew its Lease exits by design (another replica
    # takes over); this test is about one process riding out the outage.
    operator = launch_plane_operator("restart", "--standalone")
    try:
        for name in NAMES:
            ns.create_classifier(name, {"server": {"topK": 2}})
        plane.stop_apiserver()  # the passes for those classifiers are under way
        time.sleep(5)
        assert operator.process.poll() is None, "the operator died with the API server"
        plane.up()

        for name in NAMES:
            deployment = ns.wait_for("deployments", name, timeout=WAIT)
            ns.wait_for("services", name, timeout=WAIT)
            ns.wait_condition(name, "Ready", "False", "Unschedulable", timeout=WAIT)
            assert deployment["metadata"]["ownerReferences"][0]["name"] == name
        # Exactly one child of each kind per classifier, and one ReplicaSet per Deployment.
        for kind in ("deployments", "services", "replicasets"):
            owners = sorted(
                item["metadata"]["labels"]["app.kubernetes.io/instance"]
                for item in ns.items_of(kind)
            )
            assert owners == sorted(NAMES), kind
        # The watches came back: a change made after the restart is acted on.
        ns.cluster.patch(ns.path("imageclassifiers", NAMES[0]), {"spec": {"server": {"topK": 9}}})
        ns.wait_for(
            "deployments",
            NAMES[0],
            lambda d: (
                {"name": "TOP_K", "value": "9"}
                in d["spec"]["template"]["spec"]["containers"][0]["env"]
            ),
            "TOP_K=9 after the restart",
            WAIT,
        )
        assert operator.process.poll() is None
    finally:
        operator.stop()
