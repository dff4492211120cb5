"""Two writers at once on a real API server: while a user changes a classifier's spec in a
burst, another controller keeps rewriting its Deployment with read-modify-write updates
(`resourceVersion`-checked, retried on 409 Conflict). Nobody's update is lost: the Deployment
ends with the last spec and with every one of the other writer's annotations."""

import threading

from operators import Namespace

WAIT = 30
BURST = 12


def other_controller(ns: Namespace, stop: threading.Event, written: list[str]) -> int:
    """Annotate the Deployment over and over with GET + PUT (optimistic concurrency), as a
    controller would; returns how many 409s it met."""
    path = ns.path("deployments", "busy")
    conflicts = 0
    while not stop.is_set():
        deployment = ns.cluster.get(path)
        assert deployment is not None
        key = f"other.example/write-{len(written)}"
        deployment["metadata"].setdefault("annotations", {})[key] = "kept"
        answer = ns.cluster.session.put(ns.cluster.url + path, json=deployment, timeout=10)
        if answer.status_code == 409:
            conflicts += 1
            continue
        answer.raise_for_status()
        written.append(key)
    return conflicts


def test_concurrent_writers_lose_no_update(plane_ns: Namespace) -> None:
    ns = plane_ns
    ns.create_classifier("busy", {"server": {"topK": 1}})
    ns.wait_for("deployments", "busy", timeout=WAIT)
    stop = threading.Event()
    written: list[str] = []
    conflicts: list[int] = []
    thread = threading.Thread(
        target=lambda: conflicts.append(other_controller(ns, stop, written)), daemon=True
    )
    thread.start()
    try:
        for top_k in range(2, BURST + 2):
            ns.cluster.patch(
                ns.path("imageclassifiers", "busy"),
                {"spec": {"server": {"topK": top_k}, "replicas": top_k % 3 + 1}},
            )
    finally:
        stop.set()
        thread.join(30)
    assert written, "the other writer never got a write in"

    last = BURST + 1
    generation = (ns.get("imageclassifiers", "busy") or {})["metadata"]["generation"]
    deployment = ns.wait_for(
        "deployments",
        "busy",
        lambda d: (
            {"name": "TOP_K", "value": str(last)}
            in d["spec"]["template"]["spec"]["containers"][0]["env"]
        ),
        f"TOP_K={last}, the last spec",
        WAIT,
    )
    assert deployment["spec"]["replicas"] == last % 3 + 1
    annotations = deployment["metadata"].get("annotations", {})
    assert [key for key in written if annotations.get(key) != "kept"] == [], "lost writes"
    ns.wait_for(
        "imageclassifiers",
        "busy",
        lambda ic: ic.get("status", {}).get("observedGeneration") == generation,
        "the status to observe the last generation",
        WAIT,
    )
    print(f"{len(written)} writes by the other controller, {sum(conflicts)} conflicts it retried")
