"""`--namespace NS` mode on a real cluster, as its ServiceAccount: the operator acts in the
namespaces it was given and nowhere else."""

from operators import NamespaceMaker, OperatorLauncher, OperatorProcess

WAIT = 30


def test_namespace_mode_acts_only_in_its_namespaces(
    plane_namespaces: NamespaceMaker,
    operator_paused: OperatorProcess,
    launch_plane_operator: OperatorLauncher,
) -> None:
    first, second, elsewhere = plane_namespaces(), plane_namespaces(), plane_namespaces()
    operator = launch_plane_operator(
        "namespaced", "--namespace", first.name, "--namespace", second.name
    )
    try:
        for ns in (first, second, elsewhere):
            ns.create_classifier("local", {})
        for ns in (first, second):
            ns.wait_for("deployments", "local", timeout=WAIT)
            ns.wait_for("services", "local", timeout=WAIT)
            ns.wait_condition("local", "Ready", "False", "Unschedulable", timeout=WAIT)
        # Passes in the watched namespaces are done; the other one was never touched.
        assert elsewhere.get("deployments", "local") is None
        assert elsewhere.get("services", "local") is None
        assert "status" not in (elsewhere.get("imageclassifiers", "local") or {})
        assert elsewhere.events("local") == []
    finally:
        operator.stop()
