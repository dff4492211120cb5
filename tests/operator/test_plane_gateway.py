"""The canary's Gateway mode on a real API server with the Gateway API's CRDs installed
(`../shared/gateway-api/`, the official standard channel; issue 20).

The API server judges the HTTPRoutes the operator builds with the Gateway API's own schema:
every route the builder makes is accepted, and the weights the schema refuses (negative, over
1,000,000, not an integer) are refused as it says, naming the field. No Gateway implementation
runs here, so nothing routes by them: what is checked is the objects.
"""

from collections.abc import Iterator
from typing import Any

import gateway_api
import pytest
from control_plane import OPERATOR_USER, ControlPlane
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.names import TRACK_LABEL
from kubeclassify_operator.routes import MAX_WEIGHT, build_route, weights
from kubelet import Kubelet
from operators import Cluster, Namespace

WAIT = 30

ROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes"
OWNER_UID = "0b7c3f9e-1111-2222-3333-444455556666"
# A spread of percents, both ends and the middle (the unit tests take every one).
PERCENTS = (0, 1, 5, 20, 50, 99, 100)


class Gateway:
    name = "edge"
    namespace: str | None = "infra"
    section_name: str | None = "http"


@pytest.fixture
def plane_without_gateway_api(plane: ControlPlane) -> Iterator[ControlPlane]:
    """The plane as most clusters are: no Gateway API (as it was, after)."""
    installed = gateway_api.served(plane)
    if installed:
        gateway_api.uninstall(plane)
    yield plane
    if installed:
        gateway_api.install(plane)


@pytest.fixture(scope="module")
def gateway_plane(plane: ControlPlane) -> Iterator[ControlPlane]:
    """The plane with the Gateway API installed for this module, and removed after it (the
    other tests run on a cluster without it, as most clusters are)."""
    if not gateway_api.available():
        pytest.fail(f"{gateway_api.GATEWAY_API}: the Gateway API CRDs are not there (../shared)")
    gateway_api.install(plane)
    yield plane
    gateway_api.uninstall(plane)


def dry_run_create(cluster: Cluster, namespace: str, route: dict[str, Any]) -> Any:
    """POST the route with dryRun=All: the whole admission (schema, CEL, defaults) and no
    write. The answer: the route as it would be stored (201), or the API server's Status."""
    response = cluster.session.post(
        cluster.url + ROUTES.format(namespace=namespace),
        params={"dryRun": "All"},
        json=route,
        timeout=10,
    )
    assert response.status_code in (201, 422), response.text
    return response.status_code, response.json()


@pytest.mark.parametrize("ready", [True, False], ids=["ready", "unready"])
@pytest.mark.parametrize("percent", PERCENTS)
def test_the_api_server_accepts_every_route_the_operator_builds(
    gateway_plane: ControlPlane,
    plane_cluster: Cluster,
    plane_namespace: Namespace,
    percent: int,
    ready: bool,
) -> None:
    owner = Owner("cats", plane_namespace.name, OWNER_UID)
    route = build_route(owner, Gateway(), 80, percent, ready)
    status, stored = dry_run_create(plane_cluster, plane_namespace.name, route)
    assert status == 201, stored
    split = weights(percent, ready)
    stored_weights = [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]]
    assert stored_weights == ([100] if split is None else list(split))
    assert stored["spec"]["parentRefs"] == route["spec"]["parentRefs"]


# The weight schema of HTTPRoute's backendRefs: int32, minimum 0, maximum 1000000.
FIELD = "spec.rules[0].backendRefs[1].weight"


@pytest.mark.parametrize(
    ("weight", "refusal"),
    [
        (-1, f"{FIELD}: Invalid value: -1: {FIELD} in body should be greater than or equal to 0"),
        (
            MAX_WEIGHT + 1,
            f"{FIELD}: Invalid value: {MAX_WEIGHT + 1}: {FIELD} in body should be less than or"
            f" equal to {MAX_WEIGHT}",
        ),
        (2.5, f'{FIELD}: Invalid value: "float64": {FIELD} in body must be of type int32'),
        ("10", f'{FIELD}: Invalid value: "string": {FIELD} in body must be of type integer'),
        (None, None),  # unset: the schema's default, 1
        (0, None),
        (MAX_WEIGHT, None),
    ],
    ids=["negative", "over-max", "fraction", "string", "unset", "zero", "max"],
)
def test_the_api_server_refuses_the_weights_the_schema_refuses(
    gateway_plane: ControlPlane,
    plane_cluster: Cluster,
    plane_namespace: Namespace,
    weight: object,
    refusal: str | None,
) -> None:
    owner = Owner("cats", plane_namespace.name, OWNER_UID)
    route = build_route(owner, Gateway(), 80, 50, True)
    backend = route["spec"]["rules"][0]["backendRefs"][1]
    if weight is None:
        del backend["weight"]
    else:
        backend["weight"] = weight
    status, answer = dry_run_create(plane_cluster, plane_namespace.name, route)
    if refusal is None:
        assert status == 201, answer
        stored = answer["spec"]["rules"][0]["backendRefs"][1]["weight"]
        assert stored == (1 if weight is None else weight)
        return
    assert status == 422
    causes = [f"{c['field']}: {c['message']}" for c in answer["details"]["causes"]]
    assert any(cause.startswith(refusal) for cause in causes), causes
    # The rest are field-less (<nil>): "some validation rules were not checked", and the like.
    assert {c["field"] for c in answer["details"]["causes"]} - {"<nil>"} == {FIELD}


# ---------------------------------------------------------------- the operator's passes

GATEWAY_SPEC = {
    "replicas": 2,
    "gateway": {"name": "edge", "sectionName": "http"},
    "canary": {"trafficPercent": 50},
}


GATEWAY_CHILDREN = (("httproutes", "gw"), ("services", "gw-stable"), ("services", "gw-canary"))


def backends(route: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(
        ref.get("controller") and ref["uid"] == uid for ref in obj["metadata"]["ownerReferences"]
    )


def test_without_the_gateway_api_gateway_mode_is_refused_in_the_status_and_nothing_watches_it(
    plane_without_gateway_api: ControlPlane, plane_ns: Namespace
) -> None:
    """Most clusters have no Gateway API: the classifier says so (Ready=False/InvalidSpec and
    a Warning Event), its stable track is made all the same, and the operator never asked to
    watch HTTPRoutes (kopf would retry a watch of a kind the API server lacks forever)."""
    ns = plane_ns
    ns.create_classifier("gw", GATEWAY_SPEC)
    ready = ns.wait_condition("gw", "Ready", "False", "InvalidSpec", timeout=WAIT)
    assert ready["message"].startswith("spec.gateway: the Gateway API is not installed")
    assert ns.get("deployments", "gw") is not None
    assert ns.get("services", "gw") is not None
    assert ns.get("services", "gw-stable") is None and ns.get("services", "gw-canary") is None
    ns.cluster.wait(
        lambda: [e for e in ns.events("gw") if e["reason"] == "InvalidSpec"], WAIT, "the Event"
    )
    watches = [
        event
        for event in plane_without_gateway_api.audit_events(OPERATOR_USER)
        if (event.get("objectRef") or {}).get("resource") == "httproutes"
        and event["verb"] in ("list", "watch")
    ]
    assert watches == []


def route_writes(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """The operator's writes of HTTPRoutes and Services in the namespace (as the audit log
    has them: one event per request, in the order the API server received them)."""
    return [
        event
        for event in plane.audit_events(OPERATOR_USER)
        if (event.get("objectRef") or {}).get("resource") in ("httproutes", "services")
        and event["objectRef"].get("namespace") == namespace
        and event["verb"] in ("create", "patch", "update", "delete")
    ]


def test_a_pass_makes_the_track_services_and_the_route_and_deletes_them_with_the_gateway(
    gateway_plane: ControlPlane, plane_ns: Namespace, kubelet: Kubelet
) -> None:
    """Made by the operator (as its ServiceAccount: the RBAC holds), owned by the classifier,
    accepted by the API server; the canary's weight 0 until all its pods are ready, its
    percent then; the route kept, with the stable backend alone, when spec.canary is removed
    (the canary's Service deleted only once the route no longer sends to it); the route and
    the stable track's Service deleted when spec.gateway is removed."""
    ns = plane_ns
    kubelet.add_node()
    uid = ns.create_classifier("gw", GATEWAY_SPEC)["metadata"]["uid"]
    route = ns.wait_for("httproutes", "gw", timeout=WAIT)
    assert owned_by(route, uid)
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "sectionName": "http",
        }
    ]
    assert backends(route) == [("gw-stable", 100), ("gw-canary", 0)]  # no pod ready yet
    for track in ("stable", "canary"):
        service = ns.wait_for("services", f"gw-{track}", timeout=WAIT)
        assert owned_by(service, uid)
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"][TRACK_LABEL] == track

    for pod in kubelet.wait_pods(ns, "gw", 3, timeout=WAIT):  # 2 stable, 1 canary
        kubelet.run(ns, pod["metadata"]["name"])
    route = ns.wait_for(
        "httproutes",
        "gw",
        lambda r: backends(r) == [("gw-stable", 50), ("gw-canary", 50)],
        "the canary's weight once its pod is ready",
        WAIT,
    )
    ns.wait_for(
        "imageclassifiers",
        "gw",
        lambda ic: ic.get("status", {}).get("canary", {}).get("trafficPercent") == 50,
        "the share in force in the status",
        WAIT,
    )

    # The API server's defaults (the rule's match of every path, ...) are no drift: the route
    # was written twice, made and weighted, however many passes ran.
    writes = [
        event["verb"]
        for event in route_writes(gateway_plane, ns.name)
        if event["objectRef"]["resource"] == "httproutes"
    ]
    assert writes == ["create", "patch"]

    # Rolled back (as promotion also does, spec.canary removed): the route stays; the canary
    # keeps its share until the stable track is back at 2 pods, ready; then the stable backend
    # alone at 100, and the canary's Service goes after that patch.
    ns.cluster.patch(ns.path("imageclassifiers", "gw"), {"spec": {"canary": None}})

    def stable_pod_back() -> list[dict[str, Any]]:
        """The stable track's new pod, bound to the node, that the played kubelet has not run."""
        return [
            pod
            for pod in ns.pods("gw")
            if pod["spec"].get("nodeName") and not pod.get("status", {}).get("containerStatuses")
        ]

    [new] = ns.cluster.wait(stable_pod_back, WAIT, "the stable track's pod back")
    kept = ns.get("httproutes", "gw")
    assert kept is not None and backends(kept) == [("gw-stable", 50), ("gw-canary", 50)]
    assert ns.get("services", "gw-canary") is not None
    kubelet.run(ns, new["metadata"]["name"])
    ns.cluster.wait(lambda: ns.get("services", "gw-canary") is None, WAIT, "the canary Service")
    kept = ns.get("httproutes", "gw")
    assert kept is not None and backends(kept) == [("gw-stable", 100)]
    assert ns.get("services", "gw-stable") is not None
    found = route_writes(gateway_plane, ns.name)
    (deleted,) = [
        e for e in found if e["verb"] == "delete" and e["objectRef"]["name"] == "gw-canary"
    ]
    patches = [
        e for e in found if e["verb"] == "patch" and e["objectRef"]["resource"] == "httproutes"
    ]
    assert len(patches) == 2  # the canary's weight, then the stable backend alone
    assert patches[-1]["stageTimestamp"] <= deleted["requestReceivedTimestamp"]
    ns.wait_for(
        "imageclassifiers",
        "gw",
        lambda ic: ic.get("status", {}).get("gateway") == f"{ns.name}/edge",
        "the route's Gateway in the status",
        WAIT,
    )

    ns.cluster.patch(ns.path("imageclassifiers", "gw"), {"spec": {"gateway": None}})
    ns.cluster.wait(
        lambda: all(
            ns.get(kind, name) is None
            for kind, name in (
                ("httproutes", "gw"),
                ("services", "gw-stable"),
                ("services", "gw-canary"),
            )
        ),
        WAIT,
        "the route and the track Services deleted",
    )
    assert ns.get("services", "gw") is not None
    ns.wait_for(
        "imageclassifiers",
        "gw",
        lambda ic: "gateway" not in ic.get("status", {}),
        "no Gateway in the status",
        WAIT,
    )
