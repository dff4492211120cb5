"""The status on a real control plane: the real operator (as its ServiceAccount), the real
scheduler, Deployment and ReplicaSet controllers; the tests play the kubelet and the cloud's
load balancer by writing Node, pod and Service status, and check that the status follows."""

import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest
from control_plane import ControlPlane
from kubeclassify_operator.names import LAST_APPLIED, TEMPLATE_HASH
from kubelet import Kubelet
from operators import Namespace

WAIT = 30  # seconds for the status to follow a change (the plane shares 2 CPUs)
IMAGE = "ghcr.io/kubeclassify/modelserver:0.1.0"
ADDRESS = "203.0.113.7"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(autouse=True)
def pods_finish(plane_ns: Namespace, plane: ControlPlane) -> Iterator[None]:
    """After the test, finish deleting its pods, as a kubelet would: a bound pod stays
    Terminating without one, and would keep its CPU on a node of that name for good."""
    yield
    plane.kubectl(
        "delete", "pods", "--all", "-n", plane_ns.name, "--grace-period=0", "--force", check=False
    )


def add_node(ns: Namespace, kubelet: Kubelet) -> None:
    """A node of this test's own (other tests' leftover pods may sit on theirs)."""
    kubelet.add_node(f"node-{ns.name}")


def serve(ns: Namespace, kubelet: Kubelet, name: str) -> str:
    """A node, the classifier's one pod running and ready, an address: Ready=True. The pod."""
    add_node(ns, kubelet)
    (pod,) = kubelet.wait_pods(ns, name, 1)
    kubelet.run(ns, pod["metadata"]["name"])
    ns.wait_for("services", name, timeout=WAIT)
    kubelet.assign_ingress(ns, name, ADDRESS)
    ns.wait_condition(name, "Ready", "True", "AllReplicasReady", timeout=WAIT)
    return str(pod["metadata"]["name"])


def new_pod(ns: Namespace, kubelet: Kubelet, name: str, image: str) -> str:
    """The pod the Deployment controller made for the new template, once it is scheduled."""

    def probe() -> str | None:
        for pod in ns.pods(name):
            if pod["spec"]["containers"][0]["image"] == image and pod["spec"].get("nodeName"):
                return str(pod["metadata"]["name"])
        return None

    found: str = kubelet.cluster.wait(probe, WAIT, f"a scheduled pod of {name} running {image}")
    return found


def set_image(ns: Namespace, name: str, image: str) -> None:
    ns.cluster.patch(ns.path("imageclassifiers", name), {"spec": {"image": image}})


def kubectl_wait_ready(plane: ControlPlane, ns: Namespace, name: str, timeout: str) -> bool:
    done = plane.kubectl(
        "wait",
        "-n",
        ns.name,
        "--for=condition=Ready",
        f"ic/{name}",
        f"--timeout={timeout}",
        check=False,
    )
    return done.returncode == 0


def test_status_follows_the_scheduler_and_the_kubelet(
    plane_ns: Namespace, kubelet: Kubelet
) -> None:
    """No node: the real scheduler leaves the pod Pending and the status says Unschedulable;
    then each failure the kubelet reports becomes the reason, naming the pod."""
    ns = plane_ns
    ns.create_classifier("cats", {"replicas": 1})
    (pod,) = kubelet.wait_pods(ns, "cats", 1, scheduled=False)
    unschedulable = ns.wait_condition("cats", "Ready", "False", "Unschedulable", timeout=WAIT)
    assert "no nodes available" in unschedulable["message"]  # the scheduler's own words

    add_node(ns, kubelet)
    (pod,) = kubelet.wait_pods(ns, "cats", 1)
    name = pod["metadata"]["name"]
    kubelet.run(ns, name, ready=False)  # started, warming up: not a failure
    ns.wait_condition("cats", "Ready", "False", "ReplicasNotReady", timeout=WAIT)
    for play, reason in [
        (kubelet.crash_loop, "CrashLoopBackOff"),
        (kubelet.image_pull_backoff, "ImagePullBackOff"),
        (kubelet.oom_killed, "OOMKilled"),
    ]:
        play(ns, name)
        condition = ns.wait_condition("cats", "Ready", "False", reason, timeout=WAIT)
        assert name in condition["message"]
    kubelet.run(ns, name)
    kubelet.assign_ingress(ns, "cats", ADDRESS)
    ns.wait_condition("cats", "Ready", "True", "AllReplicasReady", timeout=WAIT)


def test_a_recovered_oom_kill_and_the_load_balancer_address(
    plane_ns: Namespace, kubelet: Kubelet, plane: ControlPlane
) -> None:
    """OOM-killed, then running and ready again: Ready (the kill is history in the message),
    but only once the LoadBalancer has an address, since Ready means "you can call it"."""
    ns = plane_ns
    ns.create_classifier("cats", {"replicas": 1})
    add_node(ns, kubelet)
    (pod,) = kubelet.wait_pods(ns, "cats", 1)
    name = pod["metadata"]["name"]
    kubelet.oom_killed(ns, name)
    ns.wait_condition("cats", "Ready", "False", "OOMKilled", timeout=WAIT)

    killed = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": now()}}
    running = {"running": {"startedAt": now()}}
    kubelet.container_status(ns, name, running, ready=True, restarts=1, last_state=killed)
    pending = ns.wait_condition("cats", "Ready", "False", "LoadBalancerPending", timeout=WAIT)
    assert "1/1 replicas are ready" in pending["message"]
    status = (ns.get("imageclassifiers", "cats") or {})["status"]
    assert "url" not in status and status["ready"] == "1/1"
    assert not kubectl_wait_ready(plane, ns, "cats", "2s")

    kubelet.assign_ingress(ns, "cats", ADDRESS)
    ready = ns.wait_condition("cats", "Ready", "True", "AllReplicasReady", timeout=WAIT)
    assert f"1 restart(s) so far, the last in pod {name}: OOMKilled" in ready["message"]
    status = (ns.get("imageclassifiers", "cats") or {})["status"]
    assert status["url"] == f"http://{ADDRESS}:80/predict"
    assert kubectl_wait_ready(plane, ns, "cats", "10s")


def test_ready_waits_for_the_pods_of_a_new_spec(plane_ns: Namespace, kubelet: Kubelet) -> None:
    """A changed spec rolls out: while only the old pod is ready, the status says RollingOut."""
    ns = plane_ns
    ns.create_classifier("dogs", {"replicas": 1, "image": IMAGE})
    serve(ns, kubelet, "dogs")

    newer = IMAGE.replace("0.1.0", "0.1.1")
    set_image(ns, "dogs", newer)
    rolling = ns.wait_condition("dogs", "Ready", "False", "RollingOut", timeout=WAIT)
    assert rolling["observedGeneration"] == 2
    assert (ns.get("deployments", "dogs") or {})["status"]["readyReplicas"] == 1  # the old pod
    pod = new_pod(ns, kubelet, "dogs", newer)
    kubelet.run(ns, pod, ready=False)
    ns.wait_condition("dogs", "Ready", "False", "RollingOut", timeout=WAIT)

    kubelet.run(ns, pod)
    ns.wait_condition("dogs", "Ready", "True", "AllReplicasReady", timeout=WAIT)


LINGER = "kubeclassify.io/test-linger"


@pytest.fixture
def lingering(plane_ns: Namespace) -> Iterator[list[str]]:
    """Pods given a finalizer so they linger once deleted; released after the test."""
    pods: list[str] = []
    yield pods
    for pod in pods:
        plane_ns.cluster.patch(plane_ns.path("pods", pod), {"metadata": {"finalizers": None}})


def test_a_reverted_bad_image_leaves_no_pull_failure_behind(
    plane_ns: Namespace, kubelet: Kubelet, lingering: list[str]
) -> None:
    """The bad image's pod, terminating but lingering, is not the current spec's."""
    ns = plane_ns
    ns.create_classifier("birds", {"replicas": 1, "image": IMAGE})
    serve(ns, kubelet, "birds")

    bad_image = "ghcr.io/kubeclassify/modelserver:no-such-tag"
    set_image(ns, "birds", bad_image)
    bad = new_pod(ns, kubelet, "birds", bad_image)
    ns.cluster.patch(ns.path("pods", bad), {"metadata": {"finalizers": [LINGER]}})
    lingering.append(bad)
    kubelet.image_pull_backoff(ns, bad)
    ns.wait_condition("birds", "Ready", "False", "ImagePullBackOff", timeout=WAIT)

    set_image(ns, "birds", IMAGE)
    ns.wait_for("pods", bad, lambda p: "deletionTimestamp" in p["metadata"], timeout=WAIT)
    ns.wait_condition("birds", "Ready", "True", "AllReplicasReady", timeout=WAIT)
    still = ns.get("pods", bad) or {}
    (container,) = still["status"]["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "ImagePullBackOff"  # lingering, ignored


def test_kubectl_scale_under_autoscaling_is_said_to_be_ignored(
    plane_ns: Namespace, kubelet: Kubelet, plane: ControlPlane
) -> None:
    """`kubectl scale` prints "scaled" but the HPA owns the count: the Ready message and one
    Warning Event per change of spec.replicas say so, however many passes follow."""
    ns = plane_ns
    ns.create_classifier("owls", {"autoscaling": {"minReplicas": 1, "maxReplicas": 4}})
    ns.wait_for("horizontalpodautoscalers", "owls", timeout=WAIT)

    def ignored_events() -> list[dict[str, Any]]:
        return [e for e in ns.events("owls") if e["reason"] == "ReplicasIgnored"]

    def scale(replicas: int) -> None:
        done = plane.kubectl("scale", "-n", ns.name, "ic/owls", f"--replicas={replicas}")
        assert "scaled" in done.stdout
        notice = f"spec.replicas ({replicas}) is ignored while spec.autoscaling is set"
        ns.wait_for(
            "imageclassifiers",
            "owls",
            lambda ic: any(notice in c["message"] for c in ic["status"]["conditions"]),
            f"the Ready message to say {notice}",
            timeout=WAIT,
        )
        (event,) = ns.cluster.wait(
            lambda: [e for e in ignored_events() if notice in e["message"]],
            WAIT,
            f"a ReplicasIgnored Event for {replicas}",
        )
        assert event["type"] == "Warning"

    scale(3)
    serve(ns, kubelet, "owls")  # many more passes: pods, Deployment, Service, status
    assert len(ignored_events()) == 1
    assert (ns.get("deployments", "owls") or {})["spec"]["replicas"] == 1  # the HPA's minimum
    ready = ns.condition("owls", "Ready") or {}
    assert "spec.replicas (3) is ignored" in ready["message"]

    scale(2)
    assert len(ignored_events()) == 2


def test_a_deployment_without_the_template_hash_is_not_rolled_for_it(
    plane_ns: Namespace,
) -> None:
    """A Deployment made by an operator that set no template hash (an upgrade) keeps its pods:
    the hash alone is no reason to patch the pod template, which would roll every pod."""
    ns = plane_ns
    ns.create_classifier("hares", {"replicas": 1, "image": IMAGE})
    made = ns.wait_for("deployments", "hares", timeout=WAIT)
    # As the older operator left it: no hash in the template, nor in its last-applied record.
    applied = json.loads(made["metadata"]["annotations"][LAST_APPLIED])
    del applied["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH]
    ns.cluster.patch(
        ns.path("deployments", "hares"),
        {
            "metadata": {"annotations": {LAST_APPLIED: json.dumps(applied, sort_keys=True)}},
            "spec": {"template": {"metadata": {"annotations": {TEMPLATE_HASH: None}}}},
        },
    )
    older = ns.get("deployments", "hares") or {}
    # A spec change that leaves the pod template alone: the pass that makes it has compared
    # the Deployment too.
    ns.cluster.patch(ns.path("imageclassifiers", "hares"), {"spec": {"service": {"port": 8080}}})
    ns.wait_for("services", "hares", lambda s: s["spec"]["ports"][0]["port"] == 8080, timeout=WAIT)
    ns.wait_for(
        "imageclassifiers",
        "hares",
        lambda ic: ic.get("status", {}).get("observedGeneration") == 2,
        timeout=WAIT,
    )
    after = ns.get("deployments", "hares") or {}
    assert after["metadata"]["generation"] == older["metadata"]["generation"]
    assert TEMPLATE_HASH not in after["spec"]["template"]["metadata"]["annotations"]
