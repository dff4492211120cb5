"""The kubelet's (and a cloud controller's) part on a control plane that has neither.

The plane of the operator tests runs no kubelet: this writes Nodes, pod status and a
LoadBalancer's address with admin rights, the way those components would, so every status
reason the operator reports can be reached on demand.
"""

import datetime
from typing import Any

from operators import Cluster, Namespace


class Kubelet:
    """Plays the kubelet (and the cloud controller) with admin rights: Nodes, pod and
    LoadBalancer status, written the way those components would."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.nodes: list[str] = []

    def add_node(self, name: str = "node-1", cpu: str = "8", memory: str = "32Gi") -> None:
        """A Ready, untainted Node the scheduler can bind pods to."""
        self.cluster.create("/api/v1/nodes", {"metadata": {"name": name}})
        self.nodes.append(name)
        resources = {"cpu": cpu, "memory": memory, "pods": "110"}
        now = _now()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        self.cluster.patch(
            f"/api/v1/nodes/{name}/status",
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": [ready],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                }
            },
        )
        # Admission taints a new Node not-ready; the node lifecycle controller (off) would lift it.
        self.cluster.patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})

    def remove_nodes(self) -> None:
        for name in self.nodes:
            self.cluster.delete(f"/api/v1/nodes/{name}")
        self.nodes.clear()

    def wait_pods(
        self, ns: Namespace, instance: str, count: int, scheduled: bool = True, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """The classifier's `count` pods, once they exist (and are bound to a node)."""

        def probe() -> list[dict[str, Any]] | None:
            pods = ns.pods(instance)
            ok = len(pods) == count and all(
                p["spec"].get("nodeName") or not scheduled for p in pods
            )
            return pods if ok else None

        return self.cluster.wait(probe, timeout, f"{count} pods of {instance}")

    def container_status(
        self,
        ns: Namespace,
        pod: str,
        state: dict[str, Any],
        ready: bool = False,
        restarts: int = 0,
        last_state: dict[str, Any] | None = None,
    ) -> None:
        """Write the pod's status as the kubelet would: phase Running, the conditions, and one
        container status per container with this `state` (`{"running": {...}}`, ...)."""
        obj = ns.get("pods", pod)
        assert obj is not None, f"pod {pod} not found"
        flag = "True" if ready else "False"
        now = _now()
        conditions = [
            {"type": type_, "status": status, "lastTransitionTime": now}
            for type_, status in [
                ("PodScheduled", "True"),
                ("Initialized", "True"),
                ("ContainersReady", flag),
                ("Ready", flag),
            ]
        ]
        statuses = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": ready,
                "started": "running" in state,
                "restartCount": restarts,
                "state": state,
                "lastState": last_state or {},
            }
            for container in obj["spec"]["containers"]
        ]
        self.cluster.patch(
            ns.path("pods", pod, "status"),
            {
                "status": {
                    "phase": "Running",
                    "conditions": conditions,
                    "containerStatuses": statuses,
                    "startTime": now,
                }
            },
        )

    def run(self, ns: Namespace, pod: str, ready: bool = True) -> None:
        self.container_status(ns, pod, {"running": {"startedAt": _now()}}, ready=ready)

    def crash_loop(self, ns: Namespace, pod: str) -> None:
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed"}
        exited = {"terminated": {"reason": "Error", "exitCode": 1}}
        self.container_status(ns, pod, {"waiting": waiting}, restarts=3, last_state=exited)

    def oom_killed(self, ns: Namespace, pod: str) -> None:
        killed = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": _now()}
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed"}
        self.container_status(
            ns, pod, {"waiting": waiting}, restarts=1, last_state={"terminated": killed}
        )

    def image_pull_backoff(self, ns: Namespace, pod: str) -> None:
        waiting = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
        self.container_status(ns, pod, {"waiting": waiting})

    def assign_ingress(self, ns: Namespace, service: str, ip: str = "203.0.113.7") -> None:
        """What a cloud controller writes once a LoadBalancer Service has its address."""
        self.cluster.patch(
            ns.path("services", service, "status"),
            {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
        )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
