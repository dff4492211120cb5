"""Pure builders for Gateway mode (spec.gateway): a Service per track and an HTTPRoute that
sends the requests to them, split by weight while there is a canary (issue 20).

The weights are the Gateway API's convention for traffic splitting (KServe, Argo Rollouts and
the Gateway implementations use it). One guardrail is the reason this module exists: a canary
with no ready pod gets weight 0 (KServe 0.20 sent traffic to unready canaries, kserve#5983),
and a canary at 0 percent or rolled back is no backend at all.
"""

from typing import Any, Protocol

from kubeclassify_operator.builders import Owner, owner_reference
from kubeclassify_operator.names import (
    GRPC_PORT_NAME,
    PORT_NAME,
    Track,
    common_labels,
    track_labels,
)
from kubeclassify_operator.spec import ImageClassifierSpec

GATEWAY_GROUP = "gateway.networking.k8s.io"
ROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"
# HTTPRoute's spec.rules[].backendRefs[].weight: an int32 in [0, 1000000] (the CRD's schema).
MAX_WEIGHT = 1_000_000
# The two tracks: the pods of the classifier's spec, and those of spec.canary.
STABLE, CANARY = Track.STABLE.value, Track.CANARY.value
TRACKS = (STABLE, CANARY)


class ParentRef(Protocol):
    """The Gateway the route attaches to (spec.gateway)."""

    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def section_name(self) -> str | None: ...


def track_service_name(name: str, track: str) -> str:
    """`<name>-stable`, `<name>-canary`: the Services the route sends requests to."""
    return f"{name}-{track}"


def track_selector(name: str, track: str) -> dict[str, str]:
    """The pods of one track of one classifier (every pod carries its track's label)."""
    return track_labels(name, Track(track))


def _metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": common_labels(owner.name),  # the instance label: a watch finds the owner
        "ownerReferences": [owner_reference(owner)],
    }


def build_track_service(owner: Owner, spec: ImageClassifierSpec, track: str) -> dict[str, Any]:
    """A ClusterIP Service in front of one track's pods, with the main Service's ports (the
    Gateway reaches it in the cluster: no load balancer, none of spec.service's annotations,
    which are usually a load balancer's)."""
    ports: list[dict[str, Any]] = [
        {"name": PORT_NAME, "port": spec.service.port, "targetPort": PORT_NAME, "protocol": "TCP"}
    ]
    if spec.server.grpc:
        ports.append(
            {
                "name": GRPC_PORT_NAME,
                "port": spec.service.grpc_port,
                "targetPort": GRPC_PORT_NAME,
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, track_service_name(owner.name, track)),
        "spec": {
            "type": "ClusterIP",
            "selector": track_selector(owner.name, track),
            "ports": ports,
        },
    }


def weights(percent: int, canary_ready: bool, rolled_back: bool = False) -> tuple[int, int] | None:
    """(stable, canary) weights for `percent` of the requests to the canary; None: the stable
    backend alone (0 percent, or rolled back). A canary with no ready pod gets 0, whatever the
    percent: a Gateway would send its share to a backend that cannot answer."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in 0..100, not {percent}")
    if percent == 0 or rolled_back:
        return None
    canary = percent if canary_ready else 0
    return 100 - canary, canary


def _backend(name: str, port: int, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}


def parent_ref(gateway: ParentRef) -> dict[str, Any]:
    """spec.gateway as an HTTPRoute parentRef (group and kind spelled out: they are
    the schema's defaults, which the API server would add)."""
    ref: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        ref["namespace"] = gateway.namespace
    if gateway.section_name:
        ref["sectionName"] = gateway.section_name
    return ref


def build_route(
    owner: Owner,
    gateway: ParentRef,
    port: int,
    percent: int,
    canary_ready: bool,
    rolled_back: bool = False,
) -> dict[str, Any]:
    """The HTTPRoute `<name>`: every request that reaches `gateway` for it goes to the track
    Services' `port`, split by `weights` (the stable Service alone at 0 percent: no canary)."""
    split = weights(percent, canary_ready, rolled_back)
    stable = track_service_name(owner.name, STABLE)
    if split is None:
        backends = [_backend(stable, port, 100)]
    else:
        canary = track_service_name(owner.name, CANARY)
        backends = [_backend(stable, port, split[0]), _backend(canary, port, split[1])]
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": _metadata(owner, owner.name),
        "spec": {"parentRefs": [parent_ref(gateway)], "rules": [{"backendRefs": backends}]},
    }


def route_share(route: dict[str, Any] | None) -> int | None:
    """The canary's share of the requests, in percent, that the HTTPRoute as it stands gives
    (its first rule's weights: an unset weight is the schema's default, 1); None without a
    route or weights (no backend, or every weight 0)."""
    if route is None:
        return None
    rules = route.get("spec", {}).get("rules") or []
    backends = (rules[0].get("backendRefs") or []) if rules else []
    name = route.get("metadata", {}).get("name", "")
    canary_name = track_service_name(name, CANARY)
    total = canary = 0
    for backend in backends:
        weight = int(backend.get("weight", 1))
        total += weight
        if backend.get("name") == canary_name and not backend.get("namespace"):
            canary += weight
    if total == 0:
        return None
    return round(100 * canary / total)


def route_gateway(route: dict[str, Any] | None) -> str | None:
    """`namespace/name` of the Gateway the HTTPRoute as it stands attaches to (its first
    parentRef; no namespace: the route's); None without a route or parentRef."""
    if route is None:
        return None
    refs = route.get("spec", {}).get("parentRefs") or []
    if not refs:
        return None
    namespace = refs[0].get("namespace") or route.get("metadata", {}).get("namespace", "")
    return f"{namespace}/{refs[0].get('name', '')}"
