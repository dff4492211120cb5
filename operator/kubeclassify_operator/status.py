"""Pure functions from the children's observed state to the ImageClassifier's status.

The models here also generate the status part of the CRD schema.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubeclassify_operator.builders import CONTAINER_NAME, selector_string
from kubeclassify_operator.spec import ImageClassifierSpec

READY = "Ready"
DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
SERVICE_READY = "ServiceReady"
CONDITION_TYPES = (READY, DEPLOYMENT_AVAILABLE, SERVICE_READY)
CHILD_CONFLICT = "ChildConflict"

# Waiting reasons of a container that mean "this will not fix itself soon".
_IMAGE_PULL_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName"}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Condition(_Model):
    """A condition in the standard Kubernetes form (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class ImageClassifierStatus(_Model):
    """What the operator observed; `ready` is the `ready/desired` text for `kubectl get`."""

    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    ready: str | None = None
    selector: str | None = None
    endpoint: str | None = None
    url: str | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


@dataclass(frozen=True)
class Observed:
    """The children as last read from the API (None when a child does not exist).

    `hpa` is only read when the spec asks for autoscaling (None otherwise).
    """

    deployment: dict[str, Any] | None
    service: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    hpa: dict[str, Any] | None = None

    def foreign(self, uid: str) -> list[dict[str, Any]]:
        """The children that exist but are not controlled by the classifier with this uid."""
        children = (self.deployment, self.service, self.hpa)
        return [c for c in children if c is not None and not controlled_by(c, uid)]

    def own(self, uid: str) -> "Observed":
        """Only what this classifier controls: a same-name stranger is not its child."""
        mine = [
            c if c is None or controlled_by(c, uid) else None
            for c in (self.deployment, self.service, self.hpa)
        ]
        return Observed(mine[0], mine[1], self.pods, mine[2])


@dataclass(frozen=True)
class Verdict:
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


def controlled_by(child: dict[str, Any], uid: str) -> bool:
    """Whether the child's controller ownerReference points to the object with this uid."""
    refs = child.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


def conflict_verdict(foreign: list[dict[str, Any]]) -> Verdict | None:
    """Ready=False/ChildConflict naming each same-name object the operator must not touch."""
    if not foreign:
        return None
    names = ", ".join(f"{c.get('kind', 'object')} {c['metadata']['name']}" for c in foreign)
    return Verdict(
        "False",
        CHILD_CONFLICT,
        f"{names} already exists and is not owned by this ImageClassifier; the operator leaves"
        " it alone: delete or rename it, or rename the ImageClassifier",
    )


def pod_problem(pods: list[dict[str, Any]]) -> Verdict | None:
    """The most telling reason why the instance's pods cannot become ready, if any."""
    found: dict[str, str] = {}
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status", {})
        for cond in status.get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                found.setdefault("Unschedulable", f"pod {name}: {cond.get('message', '')}".strip())
        for cstat in status.get("containerStatuses", []):
            if cstat.get("name") != CONTAINER_NAME:
                continue
            waiting = cstat.get("state", {}).get("waiting", {})
            terminated = cstat.get("state", {}).get("terminated", {})
            last_terminated = cstat.get("lastState", {}).get("terminated", {})
            if "OOMKilled" in (terminated.get("reason"), last_terminated.get("reason")):
                found.setdefault(
                    "OOMKilled",
                    f"pod {name}: the model server ran out of memory"
                    " (raise resources.limits.memory)",
                )
            reason = waiting.get("reason")
            detail = f"pod {name}: {waiting.get('message', reason)}"
            if reason in _IMAGE_PULL_REASONS:
                found.setdefault("ImagePullBackOff", detail)
            elif reason == "CrashLoopBackOff":
                found.setdefault("CrashLoopBackOff", detail)
    # OOM explains a crash loop better than the loop itself does.
    for reason in ("OOMKilled", "ImagePullBackOff", "CrashLoopBackOff", "Unschedulable"):
        if reason in found:
            return Verdict("False", reason, found[reason])
    return None


def desired_replicas(deployment: dict[str, Any]) -> int:
    return int(deployment.get("spec", {}).get("replicas", 1))


def deployment_verdict(deployment: dict[str, Any] | None) -> Verdict:
    if deployment is None:
        return Verdict("False", "DeploymentMissing", "the Deployment does not exist yet")
    for cond in deployment.get("status", {}).get("conditions", []):
        if cond.get("type") == "Available":
            return Verdict(
                "True" if cond.get("status") == "True" else "False",
                cond.get("reason") or "Unknown",
                cond.get("message", ""),
            )
    return Verdict("Unknown", "Pending", "the Deployment has not reported availability yet")


def endpoint_of(service: dict[str, Any] | None) -> str | None:
    """Where clients reach the classifier: the LB address, else the in-cluster DNS name."""
    if service is None:
        return None
    meta = service["metadata"]
    spec = service.get("spec", {})
    port = spec.get("ports", [{}])[0].get("port", 80)
    if spec.get("type") == "LoadBalancer":
        for ingress in service.get("status", {}).get("loadBalancer", {}).get("ingress", []):
            host = ingress.get("ip") or ingress.get("hostname")
            if host:
                return f"{host}:{port}"
        return None
    return f"{meta['name']}.{meta['namespace']}.svc.cluster.local:{port}"


def service_verdict(service: dict[str, Any] | None) -> Verdict:
    if service is None:
        return Verdict("False", "ServiceMissing", "the Service does not exist yet")
    if endpoint_of(service) is None:
        return Verdict("False", "LoadBalancerPending", "waiting for the load balancer's address")
    return Verdict("True", "EndpointAssigned", f"reachable at {endpoint_of(service)}")


def ready_verdict(observed: Observed) -> Verdict:
    """Ready only when every desired replica is ready; otherwise the real reason."""
    deployment = observed.deployment
    if deployment is None:
        return Verdict("False", "DeploymentMissing", "the Deployment does not exist yet")
    problem = pod_problem(observed.pods)
    if problem is not None:
        return problem
    desired = desired_replicas(deployment)
    ready = int(deployment.get("status", {}).get("readyReplicas", 0))
    if desired == 0:
        return Verdict("False", "ScaledToZero", "replicas is 0: nothing serves requests")
    if ready < desired:
        return Verdict("False", "ReplicasNotReady", f"{ready}/{desired} replicas are ready")
    if observed.service is None:
        return Verdict("False", "ServiceMissing", "the Service does not exist yet")
    return Verdict("True", "AllReplicasReady", f"{ready}/{desired} replicas are ready")


def merge_conditions(
    previous: list[dict[str, Any]],
    verdicts: dict[str, Verdict],
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions from verdicts, keeping lastTransitionTime while a condition's status holds."""
    before = {c.get("type"): c for c in previous}
    merged = []
    for type_, verdict in verdicts.items():
        old = before.get(type_)
        unchanged = old is not None and old.get("status") == verdict.status
        cond = Condition(
            type=type_,
            status=verdict.status,
            reason=verdict.reason,
            message=verdict.message,
            last_transition_time=old["lastTransitionTime"] if unchanged and old else now,
            observed_generation=generation,
        )
        merged.append(cond.model_dump(by_alias=True, exclude_none=True))
    return merged


def compute_status(
    *,
    name: str,
    uid: str,
    spec: ImageClassifierSpec,
    observed: Observed,
    previous: dict[str, Any],
    generation: int | None,
    now: str,
) -> dict[str, Any]:
    """The full status of a valid ImageClassifier from its children.

    A same-name object this classifier does not control is reported, never counted as its own.
    """
    conflict = conflict_verdict(observed.foreign(uid))
    mine = observed.own(uid)
    deployment = mine.deployment
    desired = desired_replicas(deployment) if deployment else None
    ready = int(deployment.get("status", {}).get("readyReplicas", 0)) if deployment else 0
    endpoint = endpoint_of(mine.service)
    verdicts = {
        READY: conflict or ready_verdict(mine),
        DEPLOYMENT_AVAILABLE: deployment_verdict(deployment),
        SERVICE_READY: service_verdict(mine.service),
    }
    if conflict is not None and mine.deployment is not observed.deployment:
        verdicts[DEPLOYMENT_AVAILABLE] = conflict
    if conflict is not None and mine.service is not observed.service:
        verdicts[SERVICE_READY] = conflict
    status = ImageClassifierStatus(
        observed_generation=generation,
        replicas=desired if desired is not None else spec.replicas,
        ready_replicas=ready,
        ready=f"{ready}/{desired if desired is not None else spec.replicas}",
        selector=selector_string(name),
        endpoint=endpoint,
        url=f"http://{endpoint}/predict" if endpoint else None,
    )
    result = status.model_dump(by_alias=True, exclude_none=True, exclude={"conditions"})
    result["conditions"] = merge_conditions(
        previous.get("conditions", []), verdicts, generation=generation, now=now
    )
    return result


def invalid_status(
    *, previous: dict[str, Any], message: str, generation: int | None, now: str
) -> dict[str, Any]:
    """Status for a spec the operator rejects: Ready=False/InvalidSpec, the rest kept as seen."""
    conditions = {c.get("type"): c for c in previous.get("conditions", [])}
    ready = merge_conditions(
        previous.get("conditions", []),
        {READY: Verdict("False", "InvalidSpec", message)},
        generation=generation,
        now=now,
    )
    others = [conditions[t] for t in CONDITION_TYPES if t != READY and t in conditions]
    return {**previous, "observedGeneration": generation, "conditions": ready + others}


def ready_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c.get("type") == READY), None)


def in_conflict(status: dict[str, Any]) -> bool:
    """Whether Ready is False because a same-name stranger blocks a child."""
    ready = ready_condition(status)
    return ready is not None and ready.get("reason") == CHILD_CONFLICT
