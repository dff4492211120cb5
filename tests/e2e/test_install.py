"""The operator installed as users install it (`kubectl apply -k` of deploy/, only the image
swapped), run by the real kubelet: two pods, one leader, and a liveness probe really called."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from control_plane import OPERATOR_NAMESPACE
from kubeclassify_operator.cli import LEASE_NAME
from node import NODE_NAME, NodeCluster

pytestmark = pytest.mark.usefixtures("operator_installed")

SELECTOR = "app.kubernetes.io/name=kubeclassify-operator"


def operator_pods(node_cluster: NodeCluster) -> list[dict[str, Any]]:
    return node_cluster.pods(OPERATOR_NAMESPACE, SELECTOR)


def condition(pod: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in pod["status"]["conditions"] if c["type"] == kind), None)


def lease_holder(node_cluster: NodeCluster, timeout: float = 60) -> str:
    """Who holds the operator's Lease, once someone does (the pods are Ready as soon as they
    start: the election comes after)."""
    deadline = time.monotonic() + timeout
    while True:
        lease = node_cluster.get("lease", LEASE_NAME, OPERATOR_NAMESPACE)
        holder: str | None = (lease or {}).get("spec", {}).get("holderIdentity")
        if holder:
            return holder
        assert time.monotonic() < deadline, f"nobody holds the Lease {LEASE_NAME}: {lease}"
        time.sleep(1)


def test_both_operator_pods_run_the_built_image_and_one_leads(node_cluster: NodeCluster) -> None:
    pods = operator_pods(node_cluster)
    names = {pod["metadata"]["name"] for pod in pods}
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running" and condition(pod, "Ready") == "True"
        assert pod["spec"]["nodeName"] == NODE_NAME
        [container] = pod["spec"]["containers"]
        assert container["image"] == node_cluster.images.operator

    leader = lease_holder(node_cluster)
    assert leader in names
    [standby] = names - {leader}

    # The leader says it acts; the standby that it waits for the leader (kubectl logs: the
    # API server asks the node's kubelet).
    def logs(pod: str) -> str:
        return node_cluster.kubectl("logs", pod, "--namespace", OPERATOR_NAMESPACE).stdout

    assert f"as {leader}: this replica acts" in logs(leader)
    standby_logs = logs(standby)
    assert f"is held by {leader}" in standby_logs and "this replica acts" not in standby_logs


def liveness_probes(node_cluster: NodeCluster, pod: str) -> dict[str, float]:
    """The kubelet's own count of the liveness probes it ran on `pod`, by result."""
    metrics = node_cluster.kubectl(
        "get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/metrics/probes"
    ).stdout
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        labels = re.match(r"prober_probe_total\{(.*)\} (\S+)$", line)
        if labels and f'pod="{pod}"' in line and 'probe_type="Liveness"' in line:
            result = re.search(r'result="(\w+)"', labels.group(1))
            assert result is not None, line
            counts[result.group(1)] = float(labels.group(2))
    return counts


def test_the_kubelet_probes_the_operators_liveness_endpoint(node_cluster: NodeCluster) -> None:
    """deploy/'s probe (GET /healthz on port `health`, after 10 s, every 20 s) succeeds: a
    wrong path, port or a dead endpoint would count failures (and restart the pod)."""
    pods = [pod["metadata"]["name"] for pod in operator_pods(node_cluster)]
    deadline = time.monotonic() + 90
    while True:
        counts = {pod: liveness_probes(node_cluster, pod) for pod in pods}
        if all(count.get("successful", 0) >= 1 for count in counts.values()):
            break
        assert time.monotonic() < deadline, f"no successful liveness probe yet: {counts}"
        time.sleep(5)
    assert all(count.get("failed", 0) == 0 for count in counts.values()), counts
    for pod in operator_pods(node_cluster):
        [status] = pod["status"]["containerStatuses"]
        assert status["restartCount"] == 0, status
