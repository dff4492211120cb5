"""The kinds of object a classifier owns, each described once: where it lives, how it is
built, which of its fields come from which spec field, and what its condition says.

The pass (reconcile), the status, the watches (handlers), the refusals (rejections) and the RBAC
check all iterate `CHILDREN`: adding a child is an entry here and its builder.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubeclassify_operator import routes
from kubeclassify_operator.builders import (
    Owner,
    build_deployment,
    build_hpa,
    build_service,
    keep_template_hash,
    last_applied,
    user_env_start,
)
from kubeclassify_operator.images import ServerImages
from kubeclassify_operator.kube import DEPLOYMENTS, HPAS, HTTPROUTES, PODS, SERVICES, Kind
from kubeclassify_operator.names import ConditionType, Reason, Track
from kubeclassify_operator.spec import ImageClassifierSpec

Object = dict[str, Any] | None  # a child as read from the API; None: there is none


@dataclass(frozen=True)
class Split:
    """What a pass decided about the tracks (see `canary.split`): each Deployment's replicas,
    and the share of the requests a gateway sends to the canary."""

    stable: int
    canary: int | None = None
    """None: no canary Deployment (one the operator made is deleted)."""
    canary_weight: int = 0
    """The percent of requests an HTTPRoute sends to the canary: its trafficPercent while
    all its pods are ready, else 0."""
    keep_canary: bool = False
    """The canary is being removed (rolled back or promoted): its Deployment is left as it
    is, serving, until the stable track has its full count of ready pods."""


@dataclass(frozen=True)
class Context:
    """What the builders need besides the spec: the images to choose from, and the split."""

    images: ServerImages
    split: Split


Builder = Callable[[Owner, ImageClassifierSpec, Object, Context], dict[str, Any] | None]
"""build(owner, spec, current, context): the child as the spec wants it, given the one that
exists; None when the spec wants none."""


@dataclass(frozen=True)
class Verdict:
    """What a condition says: its status, reason and message."""

    status: Literal["True", "False", "Unknown"]
    reason: str  # a Reason, or a reason a child reports itself
    message: str


@dataclass(frozen=True)
class ChildKind:
    """One kind of child: one per classifier, named after it."""

    kind: str  # the manifest's kind; what `status.Observed` is keyed by
    api: Kind
    build: Builder
    # Where the builder puts each spec field in the child (child path -> spec path), for
    # naming the classifier's field in the API server's refusals.
    spec_fields: Callable[[ImageClassifierSpec], Mapping[str, str]]
    # The classifier's condition about this child, and how the child as found decides it.
    condition: tuple[ConditionType, Callable[[Object], Verdict]] | None = None
    # For a child a spec may not want: whether this one does (the builder is not asked when
    # not), and the note of the Event when the operator deletes the one it made.
    optional: tuple[Callable[[ImageClassifierSpec, Context], bool], str] | None = None
    # The key of the child this one acts on: never written while that one is a stranger's.
    acts_on: str | None = None
    # The track whose Deployment this is: it names the child, `<name>` or `<name>-canary`.
    track: Track = Track.STABLE
    # A child named `<name>-<suffix>` whatever its kind (a track's Service in Gateway mode).
    suffix: str | None = None
    # Whether its changes start a pass. Not for a kind from a CRD a cluster may lack: kopf
    # cannot watch a kind the API server does not have. Such a child is only read and written
    # in a pass (and a hand edit of it is undone at the next pass, not at once).
    watched: bool = True
    # The kind the child needs the API server to have, and the refusal if it does not (asked,
    # with Kube.serves, before the child is created): a clear status, not a 404 per pass.
    requires: tuple[Kind, str] | None = None

    @property
    def key(self) -> str:
        """What `status.Observed` is keyed by: the kind, and the track if not the stable one
        (or the suffix)."""
        if self.suffix:
            return f"{self.kind}/{self.suffix}"
        return self.kind if self.track is Track.STABLE else f"{self.kind}/{self.track.value}"

    def name(self, classifier: str) -> str:
        if self.suffix:
            return f"{classifier}-{self.suffix}"
        return self.track.deployment(classifier)

    def verbs(self) -> tuple[str, ...]:
        """What the operator does with it: watch it, read, create and patch it in a pass,
        and delete an optional one the spec no longer wants."""
        watch = ("list", "watch") if self.watched else ()
        return ("get", *watch, "create", "patch", *(("delete",) if self.optional else ()))


def controlled_by(child: dict[str, Any], uid: str) -> bool:
    """Whether the child's controller ownerReference points to the object with this uid."""
    refs = child.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


def endpoint_of(service: Object, port_name: str | None = None) -> str | None:
    """Where clients reach the classifier: the LB address, else the in-cluster DNS name, with
    the Service port named `port_name` (by default the first; None if there is no such port)."""
    if service is None:
        return None
    meta = service["metadata"]
    spec = service.get("spec", {})
    ports = [
        p for p in spec.get("ports") or [{}] if port_name is None or p.get("name") == port_name
    ]
    if not ports:
        return None
    port = ports[0].get("port", 80)
    if spec.get("type") == "LoadBalancer":
        for ingress in service.get("status", {}).get("loadBalancer", {}).get("ingress", []):
            host = ingress.get("ip") or ingress.get("hostname")
            if host:
                return f"{host}:{port}"
        return None
    return f"{meta['name']}.{meta['namespace']}.svc.cluster.local:{port}"


def deployment_verdict(deployment: Object) -> Verdict:
    """DeploymentAvailable: the Deployment's own Available condition."""
    if deployment is None:
        return Verdict("False", Reason.DEPLOYMENT_MISSING, "the Deployment does not exist yet")
    for cond in deployment.get("status", {}).get("conditions", []):
        if cond.get("type") == "Available":
            return Verdict(
                "True" if cond.get("status") == "True" else "False",
                cond.get("reason") or Reason.UNKNOWN,
                cond.get("message", ""),
            )
    return Verdict("Unknown", Reason.PENDING, "the Deployment has not reported availability yet")


def service_verdict(service: Object) -> Verdict:
    """ServiceReady: the Service has an address clients can use."""
    if service is None:
        return Verdict("False", Reason.SERVICE_MISSING, "the Service does not exist yet")
    endpoint = endpoint_of(service)
    if endpoint is None:
        return Verdict(
            "False", Reason.LOAD_BALANCER_PENDING, "waiting for the load balancer's address"
        )
    return Verdict("True", Reason.ENDPOINT_ASSIGNED, f"reachable at {endpoint}")


def _deployment(
    owner: Owner, spec: ImageClassifierSpec, current: Object, context: Context
) -> dict[str, Any]:
    """The stable Deployment with the split's count (an HPA's, with autoscaling), keeping the
    current template's hash."""
    built = build_deployment(owner, spec, images=context.images, replicas=context.split.stable)
    return keep_template_hash(built, current)


def _canary(
    owner: Owner, spec: ImageClassifierSpec, current: Object, context: Context
) -> dict[str, Any] | None:
    """The canary's Deployment: what `spec.canary_spec()` runs, with the split's count; the
    one that exists, as it was applied, while it is being removed."""
    split = context.split
    if split.keep_canary and current is not None:
        return last_applied(current) or None
    if split.canary is None:
        return None
    built = build_deployment(
        owner, spec.canary_spec(), images=context.images, replicas=split.canary, track=Track.CANARY
    )
    return keep_template_hash(built, current)


def _service(
    owner: Owner, spec: ImageClassifierSpec, current: Object, context: Context
) -> dict[str, Any]:
    return build_service(owner, spec)


def _hpa(
    owner: Owner, spec: ImageClassifierSpec, current: Object, context: Context
) -> dict[str, Any] | None:
    return build_hpa(owner, spec)


def _track_service(track: str) -> Builder:
    def build(
        owner: Owner, spec: ImageClassifierSpec, current: Object, context: Context
    ) -> dict[str, Any]:
        return routes.build_track_service(owner, spec, track)

    return build


def _route(
    owner: Owner, spec: ImageClassifierSpec, current: Object, context: Context
) -> dict[str, Any] | None:
    """The HTTPRoute, weighted as the split says: the canary's percent once all its pods are
    ready (0 until then), and the stable backend alone without a canary (none, at 0 percent
    or rolled back). A canary being removed keeps the share the route gives it until the
    stable track is back at its full count, ready, as it keeps its pods: the stable track alone
    at once would take every request on fewer pods."""
    if spec.gateway is None:
        return None
    split = context.split
    if spec.canary is None and split.keep_canary and current is not None:
        kept = routes.route_share(current) or 0
        return routes.build_route(
            owner, spec.gateway, spec.service.port, kept, canary_ready=True, rolled_back=not kept
        )
    return routes.build_route(
        owner,
        spec.gateway,
        spec.service.port,
        spec.canary.traffic_percent if spec.canary else 0,
        canary_ready=split.canary_weight > 0,
        rolled_back=not split.canary,
    )


_POD = "spec.template.spec"
_CONTAINER = f"{_POD}.containers[0]"


def _deployment_fields(spec: ImageClassifierSpec) -> dict[str, str]:
    """The user's variables come after the operator's in the container's env: env[N] is
    spec.env[N - start], and the operator's own are no spec.env entry."""
    start = user_env_start(spec)
    env = {f"{_CONTAINER}.env[{start + i}]": f"spec.env[{i}]" for i in range(len(spec.env))}
    return {
        "metadata.name": "metadata.name",
        "spec.replicas": "spec.replicas",
        "spec.template.metadata.annotations": "spec.podAnnotations",
        "spec.template.metadata.labels": "spec.podLabels",
        **env,
        f"{_CONTAINER}.image": "spec.image",
        f"{_CONTAINER}.imagePullPolicy": "spec.imagePullPolicy",
        f"{_CONTAINER}.resources": "spec.resources",
        f"{_POD}.affinity": "spec.affinity",
        f"{_POD}.imagePullSecrets": "spec.imagePullSecrets",
        f"{_POD}.nodeSelector": "spec.nodeSelector",
        f"{_POD}.tolerations": "spec.tolerations",
    }


_SERVICE_FIELDS = {
    "metadata.name": "metadata.name",
    "metadata.annotations": "spec.service.annotations",
    "spec.loadBalancerSourceRanges": "spec.service.loadBalancerSourceRanges",
    "spec.ports[0].port": "spec.service.port",
    "spec.type": "spec.service.type",
}
_HPA_FIELDS = {
    "metadata.name": "metadata.name",
    "spec.minReplicas": "spec.autoscaling.minReplicas",
    "spec.maxReplicas": "spec.autoscaling.maxReplicas",
    "spec.metrics": "spec.autoscaling.targetCPUUtilizationPercentage",
}

DEPLOYMENT = ChildKind(
    kind="Deployment",
    api=DEPLOYMENTS,
    build=_deployment,
    spec_fields=_deployment_fields,
    condition=(ConditionType.DEPLOYMENT_AVAILABLE, deployment_verdict),
)
CANARY = ChildKind(
    kind="Deployment",
    api=DEPLOYMENTS,
    build=_canary,
    spec_fields=_deployment_fields,
    optional=(
        lambda spec, context: context.split.canary is not None or context.split.keep_canary,
        "canary removed",
    ),
    track=Track.CANARY,
)
SERVICE = ChildKind(
    kind="Service",
    api=SERVICES,
    build=_service,
    spec_fields=lambda spec: _SERVICE_FIELDS,
    condition=(ConditionType.SERVICE_READY, service_verdict),
)
HPA = ChildKind(
    kind="HorizontalPodAutoscaler",
    api=HPAS,
    build=_hpa,
    spec_fields=lambda spec: _HPA_FIELDS,
    optional=(lambda spec, context: spec.autoscaling is not None, "autoscaling off"),
    acts_on=DEPLOYMENT.key,  # never autoscale someone else's Deployment
)
# Gateway mode (issue 20): while spec.gateway is set, an HTTPRoute on that Gateway, and a
# Service per track for it to send the requests to: the stable track's always, the canary's
# while there is a canary (the route, applied after it, is the one that refers to it).
_GATEWAY_MODE = (lambda spec, context: spec.gateway is not None, "no spec.gateway")
_CANARY_GATEWAY_MODE = (
    lambda spec, context: (
        spec.gateway is not None and (spec.canary is not None or context.split.keep_canary)
    ),
    "no spec.gateway or no spec.canary",
)
_GATEWAY_API = (
    HTTPROUTES,
    "spec.gateway: the Gateway API is not installed in this cluster (the API server has"
    " no HTTPRoute in gateway.networking.k8s.io/v1): install its CRDs, or remove"
    " spec.gateway",
)
_TRACK_SERVICE_FIELDS = {
    "metadata.name": "metadata.name",
    "spec.ports[0].port": "spec.service.port",
}
_ROUTE_FIELDS = {
    "metadata.name": "metadata.name",
    "spec.parentRefs[0]": "spec.gateway",
    "spec.rules[0].backendRefs": "spec.canary.trafficPercent",
}
STABLE_SERVICE, CANARY_SERVICE = (
    ChildKind(
        kind="Service",
        api=SERVICES,
        build=_track_service(track),
        spec_fields=lambda spec: _TRACK_SERVICE_FIELDS,
        optional=wanted,
        suffix=track,
        requires=_GATEWAY_API,  # no use without the route
    )
    for track, wanted in zip(routes.TRACKS, (_GATEWAY_MODE, _CANARY_GATEWAY_MODE), strict=True)
)
ROUTE = ChildKind(
    kind="HTTPRoute",
    api=HTTPROUTES,
    build=_route,
    spec_fields=lambda spec: _ROUTE_FIELDS,
    optional=_GATEWAY_MODE,
    watched=False,
    requires=_GATEWAY_API,
)
GATEWAY_CHILDREN = (STABLE_SERVICE, CANARY_SERVICE, ROUTE)
# In the order a pass creates and patches them (an HPA after the Deployment it scales, the
# route after the Services it sends requests to) and their conditions appear in the status;
# a pass deletes the ones the spec no longer wants after that, in the reverse order (the route
# no longer refers to a track Service when the Service goes).
CHILDREN = (DEPLOYMENT, CANARY, SERVICE, HPA, *GATEWAY_CHILDREN)
# The child an API server's refusal of a kind is about: the stable track's for a Deployment
# (the canary's fields are the same ones, under spec.canary where it overrides them).
BY_KIND = {child.kind: child for child in reversed(CHILDREN)}

# The pods are the Deployment's, not the operator's: only listed and watched, to tell why they
# are not ready.
POD_VERBS = ("list", "watch")
# Whose changes start a pass.
WATCHED = tuple(dict.fromkeys((*(child.api for child in CHILDREN if child.watched), PODS)))


def grants() -> set[tuple[str, str, str]]:
    """The (apiGroup, resource, verb) triples the operator needs on the children and pods."""
    needed = {(c.api.group, c.api.plural, verb) for c in CHILDREN for verb in c.verbs()}
    return needed | {(PODS.group, PODS.plural, verb) for verb in POD_VERBS}
