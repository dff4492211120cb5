"""Pure functions from the children's observed state to the ImageClassifier's status.

The models here also generate the status part of the CRD schema.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubeclassify_operator.children import (
    CHILDREN,
    DEPLOYMENT,
    ROUTE,
    SERVICE,
    ChildKind,
    Object,
    Verdict,
    controlled_by,
    endpoint_of,
)
from kubeclassify_operator.names import (
    CONTAINER_NAME,
    FETCH_CONTAINERS,
    FETCH_MODEL,
    GRPC_PORT_NAME,
    TEMPLATE_HASH,
    TRACK_LABEL,
    ConditionType,
    Reason,
    Track,
    selector_string,
)
from kubeclassify_operator.routes import route_gateway
from kubeclassify_operator.spec import ImageClassifierSpec
from kubeclassify_operator.uris import redacted, redacted_in

READY = ConditionType.READY
# Ready, then each child's condition in the registry's order.
CONDITION_TYPES = (READY, *(child.condition[0] for child in CHILDREN if child.condition))

# What the model server logs, last, when it cannot load its model and stops.
LOAD_FAILURE_MARK = "cannot serve: "
MESSAGE_LIMIT = 512
IMAGENET_CLASSES = 1000
# The most telling first: OOM explains a crash loop better than the loop itself does; so does
# a model that failed to download or load.
_PROBLEM_ORDER = (
    Reason.OOM_KILLED,
    Reason.IMAGE_PULL_BACK_OFF,
    Reason.MODEL_DOWNLOAD_FAILED,
    Reason.MODEL_LOAD_FAILED,
    Reason.CRASH_LOOP_BACK_OFF,
    Reason.UNSCHEDULABLE,
)

# The kubelet's waiting reasons of a container that mean "this will not fix itself soon".
_IMAGE_PULL_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName"}


class _Model(BaseModel):
    """The docstring under each field is its description in the CRD (`kubectl explain`)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, use_attribute_docstrings=True
    )


class Condition(_Model):
    """A condition in the standard Kubernetes form (metav1.Condition)."""

    type: str
    """Ready (the classifier serves), DeploymentAvailable or ServiceReady."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """Why, in one CamelCase word (e.g. AllReplicasReady, ImagePullBackOff, InvalidSpec)."""
    message: str = ""
    """Why, in a sentence for people."""
    last_transition_time: str
    """When the status last changed."""
    observed_generation: int | None = None
    """The spec generation this condition was computed from."""


class ModelStatus(_Model):
    """The model the pods serve, and how."""

    name: str
    """The name the server serves it under (/v1/models/<name>, /v2/models/<name>, gRPC's
    model_name): the built-in model's, or the model file's name without its extension."""
    source: str
    """The built-in model's name, or spec.modelSource.storageUri (without its query)."""
    format: str | None = None
    """keras, tflite or openvino, for a model from spec.modelSource."""
    sha256: str | None = None
    """The sha256 of the model file a current pod downloaded (its fetch-model init
    container's termination message); absent for the built-in model, pvc:// and file://."""
    labels: int | None = None
    """How many labels the model has, where known (1000 for the built-in ImageNet model)."""
    backend: str
    """The backend spec.runtime asks for; with auto the server picks per node (GET
    /v1/models/<name> on a pod says which)."""
    precision: str
    """The precision spec.runtime asks for; with auto the server picks per node (GET
    /v1/models/<name> on a pod says which)."""
    summary: str
    """The source and the precision, as kubectl get shows them in the MODEL column."""


class TrackStatus(_Model):
    """One track of pods: the stable one, or the canary's."""

    name: Literal["stable", "canary"]
    """stable or canary."""
    deployment: str
    """The track's Deployment."""
    replicas: int
    """Pods the track's Deployment wants."""
    ready_replicas: int
    """Its pods that are ready to serve."""
    model: str
    """What its pods serve: the model's source and the precision asked for."""
    traffic_percent: int
    """The share of the requests it takes now, in percent: its ready pods out of all ready
    pods (the Service spreads connections evenly over them), or the HTTPRoute's weight with
    spec.gateway."""


class CanaryStatus(_Model):
    """The canary, while spec.canary is set or its Deployment is being removed."""

    state: Literal["Progressing", "Serving", "RolledBack", "Promoting", "Removing"]
    """Progressing (its pods are not all ready: no shrinking of the stable track yet),
    Serving (it takes its share), RolledBack (it failed: no pods, no traffic, until its spec
    changes), Promoting or Removing (spec.canary is gone: it serves until the stable track
    has all its pods ready, then its Deployment is deleted)."""
    traffic_percent: int
    """The share of the requests it takes now, in percent (kubectl get's CANARY column)."""
    requested_percent: int | None = None
    """spec.canary.trafficPercent."""
    spec_hash: str
    """A digest of what its pods run: a rollback holds for this canary spec only, and a
    stable spec that equals it after spec.canary is removed is a promotion."""
    reason: str | None = None
    """Why it was rolled back: CrashLoopBackOff, ModelLoadFailed, OOMKilled or
    CanaryNotReady (not all its pods ready for longer than maxUnreadySeconds)."""
    message: str | None = None
    """Why, in a sentence for people."""
    unready_since: str | None = None
    """Since when its pods have not all been ready (the clock of maxUnreadySeconds)."""


class ImageClassifierStatus(_Model):
    """What the operator observed; `ready` is the `ready/desired` text for `kubectl get`."""

    observed_generation: int | None = None
    """The spec generation the operator last acted on."""
    replicas: int | None = None
    """Pods the Deployment has (the scale subresource reads it)."""
    ready_replicas: int | None = None
    """Pods that are ready to serve."""
    ready: str | None = None
    """Ready pods out of the desired number, e.g. 2/3."""
    selector: str | None = None
    """The label selector of the pods (the scale subresource and HPAs read it)."""
    endpoint: str | None = None
    """host:port of the Service, once it has an address."""
    url: str | None = None
    """The prediction URL (http://endpoint/predict), once the Service has an address."""
    grpc_endpoint: str | None = None
    """host:port of the Service's gRPC port (Open Inference Protocol), once the Service has an
    address; absent while spec.server.grpc is false."""
    model: ModelStatus | None = None
    """The model the (stable track's) pods serve."""
    tracks: list[TrackStatus] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Per track (stable, and the canary's while there is one): pods, model and traffic."""
    canary: CanaryStatus | None = None
    """The canary, while there is one (spec.canary, or its Deployment being removed)."""
    gateway: str | None = None
    """namespace/name of the Gateway the classifier's HTTPRoute (named after it) is attached
    to, while the operator has one (spec.gateway)."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """The latest observations: Ready, DeploymentAvailable and ServiceReady."""


@dataclass(frozen=True)
class Observed:
    """The children as last read from the API, by kind (None, or no entry: there is none),
    and the pods of the classifier.

    A pass leaves out a child the spec does not want (an HPA with autoscaling off)."""

    children: Mapping[str, Object] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, child: ChildKind) -> Object:
        return self.children.get(child.key)

    def track_pods(self, track: Track) -> list[dict[str, Any]]:
        """The pods of one track (the pods the pass lists are the classifier's, both tracks'):
        a pod without the label is the stable track's (made before there were tracks)."""
        return [pod for pod in self.pods if track_of(pod) is track]

    def foreign(self, uid: str) -> list[dict[str, Any]]:
        """The children that exist but are not controlled by the classifier with this uid."""
        return [c for c in self.children.values() if c is not None and not controlled_by(c, uid)]

    def own(self, uid: str) -> "Observed":
        """Only what this classifier controls: a same-name stranger is not its child."""
        mine = {
            kind: c if c is None or controlled_by(c, uid) else None
            for kind, c in self.children.items()
        }
        return Observed(mine, self.pods)


def track_of(pod: dict[str, Any]) -> Track:
    labels = pod.get("metadata", {}).get("labels") or {}
    return Track.CANARY if labels.get(TRACK_LABEL) == Track.CANARY else Track.STABLE


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in pod.get("status", {}).get("conditions", [])
    )


def conflict_verdict(foreign: list[dict[str, Any]]) -> Verdict | None:
    """Ready=False/ChildConflict naming each same-name object the operator must not touch."""
    if not foreign:
        return None
    names = ", ".join(f"{c.get('kind', 'object')} {c['metadata']['name']}" for c in foreign)
    return Verdict(
        "False",
        Reason.CHILD_CONFLICT,
        f"{names} already exists and is not owned by this ImageClassifier; the operator leaves"
        " it alone: delete or rename it, or rename the ImageClassifier",
    )


def current_pods(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods that show how the current spec fares: not terminating, of the current template.

    A lingering pod of a replaced template (say, of a reverted bad image) says nothing about
    the spec now. Pods carry the hash of the template they were made from (see builders).
    """
    template = deployment.get("spec", {}).get("template", {}).get("metadata", {})
    current = (template.get("annotations") or {}).get(TEMPLATE_HASH)
    return [
        pod
        for pod in pods
        if not pod.get("metadata", {}).get("deletionTimestamp")
        and (pod.get("metadata", {}).get("annotations") or {}).get(TEMPLATE_HASH) == current
    ]


def _server_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The model server's container statuses (sidecars such as a mesh proxy are not ours)."""
    statuses = pod.get("status", {}).get("containerStatuses", [])
    return [cstat for cstat in statuses if cstat.get("name") == CONTAINER_NAME]


def _oom_killed(pod: dict[str, Any], cstat: dict[str, Any]) -> bool:
    """Whether the container is down from an OOM kill now: killed, or not back since.

    The OOM kill before it came back is history (see `restart_note`), not a verdict.
    """
    if cstat.get("state", {}).get("terminated", {}).get("reason") == "OOMKilled":
        return True
    last = cstat.get("lastState", {}).get("terminated", {})
    return last.get("reason") == "OOMKilled" and not _served_since_start(pod, cstat)


def _served_since_start(pod: dict[str, Any], cstat: dict[str, Any]) -> bool:
    """Whether the running container has been ready since it (re)started: it is ready now, or
    the pod's ContainersReady turned False after it started, so it was True in between.

    Not `started`: a container that only passed its startup probe has not served a request,
    and a model's first batches can still take a limit that is too small."""
    running = cstat.get("state", {}).get("running")
    if running is None:
        return False
    if cstat.get("ready"):
        return True
    since = running.get("startedAt") or ""
    return any(
        cond.get("type") == "ContainersReady" and (cond.get("lastTransitionTime") or "") > since
        for cond in pod.get("status", {}).get("conditions", [])
    )


def _memory_limit(pod: dict[str, Any]) -> str | None:
    """The model server's memory limit in the pod's spec, if it has one."""
    for container in pod.get("spec", {}).get("containers", []):
        if container.get("name") == CONTAINER_NAME:
            limit = container.get("resources", {}).get("limits", {}).get("memory")
            return str(limit) if limit is not None else None
    return None


def _fetch_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The statuses of the operator's download init containers (see builders)."""
    statuses = pod.get("status", {}).get("initContainerStatuses") or []
    return [cstat for cstat in statuses if cstat.get("name") in FETCH_CONTAINERS]


def _failed_download(cstat: dict[str, Any]) -> str | None:
    """Why a download init container failed (its termination message), or None if it has
    not failed or has since succeeded."""
    now = cstat.get("state", {}).get("terminated")
    if now is not None and now.get("exitCode") == 0:
        return None
    waiting = cstat.get("state", {}).get("waiting") or {}
    if waiting.get("reason") == "CreateContainerConfigError":  # e.g. no such Secret
        return "cannot start: " + _clean(waiting.get("message", waiting["reason"]))
    last = cstat.get("lastState", {}).get("terminated")
    for ended in (now, last):
        if ended is not None and ended.get("exitCode"):
            return (
                _last_line(ended.get("message", ""))
                or ended.get("reason")
                or "exit code " + str(ended["exitCode"])
            )
    return None


def _load_failure(cstat: dict[str, Any]) -> str | None:
    """Why the model server could not load its model: the line it logs before it stops
    (`cannot serve: ...`), which FallbackToLogsOnError makes the termination message."""
    for state in (cstat.get("state", {}), cstat.get("lastState", {})):
        message = state.get("terminated", {}).get("message", "")
        lines = [line for line in message.splitlines() if LOAD_FAILURE_MARK in line]
        if lines:
            return _clean(lines[-1].split(LOAD_FAILURE_MARK, 1)[1])
    return None


def _last_line(message: str) -> str:
    lines = [line for line in message.splitlines() if line.strip()]
    return _clean(lines[-1]) if lines else ""


def _clean(text: str) -> str:
    """A message fit for a condition: no credentials in URIs (user:password@, a presigned
    query), one line, at most MESSAGE_LIMIT characters."""
    text = redacted_in(text.strip())
    text = re.sub(r"(?i)\b(\w*(?:secret|token|password|key)\w*)=\S+", r"\1=…", text)
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


def pod_problem(pods: list[dict[str, Any]]) -> Verdict | None:
    """The most telling reason why the instance's pods cannot become ready, if any."""
    found: dict[Reason, str] = {}
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        for cond in pod.get("status", {}).get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                found.setdefault(
                    Reason.UNSCHEDULABLE, f"pod {name}: {cond.get('message', '')}".strip()
                )
        for cstat in _fetch_statuses(pod):
            failure = _failed_download(cstat)
            if failure:
                found.setdefault(
                    Reason.MODEL_DOWNLOAD_FAILED, f"pod {name}: {cstat['name']} failed: {failure}"
                )
        for cstat in _server_statuses(pod) + _fetch_statuses(pod):
            waiting = cstat.get("state", {}).get("waiting", {})
            if cstat.get("name") == CONTAINER_NAME and _oom_killed(pod, cstat):
                limit = _memory_limit(pod)
                found.setdefault(
                    Reason.OOM_KILLED,
                    f"pod {name}: the model server ran out of memory"
                    + (f" at its limit of {limit}" if limit else "")
                    + ": raise spec.resources.limits.memory",
                )
            load_failure = cstat.get("name") == CONTAINER_NAME and _load_failure(cstat)
            if load_failure:
                found.setdefault(
                    Reason.MODEL_LOAD_FAILED,
                    f"pod {name}: the model server cannot serve: {load_failure}",
                )
            reason = waiting.get("reason")
            detail = f"pod {name}: {waiting.get('message', reason)}"
            if reason in _IMAGE_PULL_REASONS:
                found.setdefault(Reason.IMAGE_PULL_BACK_OFF, detail)
            elif reason == Reason.CRASH_LOOP_BACK_OFF and cstat.get("name") == CONTAINER_NAME:
                found.setdefault(Reason.CRASH_LOOP_BACK_OFF, detail)
    for reason in _PROBLEM_ORDER:
        if reason in found:
            return Verdict("False", reason, found[reason])
    return None


def restart_note(pods: list[dict[str, Any]]) -> str | None:
    """The model server's past restarts and the latest termination, for the Ready message."""
    restarts = 0
    latest: tuple[str, str, str] | None = None  # (finishedAt, pod, reason)
    for pod in pods:
        for cstat in _server_statuses(pod):
            ended = cstat.get("lastState", {}).get("terminated")
            restarts += int(cstat.get("restartCount", 1 if ended else 0))
            if ended:
                seen = (ended.get("finishedAt", ""), pod["metadata"]["name"], ended.get("reason"))
                latest = max(latest, seen) if latest else seen
    if latest is None:
        return None
    finished, name, reason = latest
    when = f" at {finished}" if finished else ""
    return f"{restarts} restart(s) so far, the last in pod {name}: {reason or 'Error'}{when}"


def desired_replicas(deployment: dict[str, Any]) -> int:
    return int(deployment.get("spec", {}).get("replicas", 1))


def rollout_verdict(deployment: dict[str, Any], older_pods: bool) -> Verdict | None:
    """Why the Deployment has not finished rolling out its spec, or None if it has.

    As `kubectl rollout status` decides: the controller must have seen the latest spec and
    replaced every pod of an older template. A Deployment no controller has reported on yet
    (no observedGeneration) is new, not rolling out; a generation not seen yet matters only
    while pods of an older template run (a scale alone bumps it too, and changes no pod).
    """
    status = deployment.get("status", {})
    observed = status.get("observedGeneration")
    if observed is None:
        return None
    generation = int(deployment.get("metadata", {}).get("generation", observed))
    if older_pods and generation > int(observed):
        return Verdict(
            "False", Reason.ROLLING_OUT, "the Deployment controller has not seen the spec yet"
        )
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            message = cond.get("message") or "the rollout made no progress in time"
            return Verdict("False", Reason.PROGRESS_DEADLINE_EXCEEDED, message)
    updated = int(status.get("updatedReplicas", 0))
    old = int(status.get("replicas", 0)) - updated
    if old > 0:
        return Verdict(
            "False",
            Reason.ROLLING_OUT,
            f"{updated}/{desired_replicas(deployment)} pods run the current spec,"
            f" {old} of an older one remain",
        )
    return None


def ready_verdict(observed: Observed) -> Verdict:
    """Ready when clients can call it: every desired replica of the current spec is ready and
    the Service has an address; otherwise the real reason. Past restarts are noted."""
    deployment = observed[DEPLOYMENT]
    if deployment is None:
        return Verdict("False", Reason.DEPLOYMENT_MISSING, "the Deployment does not exist yet")
    stable = observed.track_pods(Track.STABLE)
    pods = current_pods(deployment, stable)
    live = [pod for pod in stable if not pod.get("metadata", {}).get("deletionTimestamp")]
    verdict = _readiness(deployment, observed[SERVICE], pods, older_pods=len(live) > len(pods))
    return with_note(verdict, restart_note(pods))


def _readiness(
    deployment: dict[str, Any],
    service: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    older_pods: bool,
) -> Verdict:
    problem = pod_problem(pods)
    if problem is not None:
        return problem
    desired = desired_replicas(deployment)
    ready = int(deployment.get("status", {}).get("readyReplicas", 0))
    if desired == 0:
        return Verdict("False", Reason.SCALED_TO_ZERO, "replicas is 0: nothing serves requests")
    rollout = rollout_verdict(deployment, older_pods)
    if rollout is not None and rollout.reason != Reason.ROLLING_OUT:
        return rollout  # stuck: says more than a count of ready replicas
    if ready < desired:
        return Verdict("False", Reason.REPLICAS_NOT_READY, f"{ready}/{desired} replicas are ready")
    if rollout is not None:
        return rollout  # the ready replicas include pods of an older spec
    if service is None:
        return Verdict("False", Reason.SERVICE_MISSING, "the Service does not exist yet")
    if endpoint_of(service) is None:
        return Verdict(
            "False",
            Reason.LOAD_BALANCER_PENDING,
            f"{ready}/{desired} replicas are ready; waiting for the load balancer's address",
        )
    return Verdict("True", Reason.ALL_REPLICAS_READY, f"{ready}/{desired} replicas are ready")


def with_note(verdict: Verdict, note: str | None) -> Verdict:
    return replace(verdict, message=f"{verdict.message}; {note}") if note else verdict


def replicas_notice(spec: ImageClassifierSpec) -> str | None:
    """Why `kubectl scale` changes nothing while autoscaling is on: the HPA owns the count."""
    if spec.autoscaling is None:
        return None
    return (
        f"spec.replicas ({spec.replicas}) is ignored while spec.autoscaling is set: the"
        " HorizontalPodAutoscaler sets the replica count (change autoscaling.minReplicas or"
        " maxReplicas instead)"
    )


def replicas_news(spec: ImageClassifierSpec, previous: dict[str, Any]) -> str | None:
    """The notice to post as an Event: once per change of spec.replicas while autoscaling is on.

    The previous Ready message carries the notice already told; a new classifier has none to
    change (its Ready message says it).
    """
    notice = replicas_notice(spec)
    told = (ready_condition(previous) or {}).get("message", "")
    if notice is None or not previous.get("conditions") or notice in told:
        return None
    return notice


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
    tracks: list[TrackStatus] | None = None,
    canary: CanaryStatus | None = None,
) -> dict[str, Any]:
    """The full status of a valid ImageClassifier from its children, with the tracks and the
    canary as `canary.tracks` sees them.

    A same-name object this classifier does not control is reported, never counted as its own.
    The counts are both tracks'; Ready is the stable track's (a canary's trouble rolls it back,
    and the classifier serves on).
    """
    conflict = conflict_verdict(observed.foreign(uid))
    mine = observed.own(uid)
    deployment, service = mine[DEPLOYMENT], mine[SERVICE]
    desired = desired_replicas(deployment) if deployment else None
    ready = int(deployment.get("status", {}).get("readyReplicas", 0)) if deployment else 0
    if canary is not None and desired is not None:
        canary_track = [track for track in tracks or [] if track.name == Track.CANARY.value]
        desired += sum(track.replicas for track in canary_track)
        ready += sum(track.ready_replicas for track in canary_track)
    endpoint = endpoint_of(service)
    verdicts: dict[str, Verdict] = {
        READY: with_note(conflict or ready_verdict(mine), replicas_notice(spec))
    }
    for child in CHILDREN:
        if child.condition is not None:
            type_, judge = child.condition
            # A stranger in this child's place: the condition names it, not what it says.
            stranger = mine[child] is not observed[child]
            verdicts[type_] = conflict if conflict is not None and stranger else judge(mine[child])
    status = ImageClassifierStatus(
        observed_generation=generation,
        replicas=desired if desired is not None else spec.replicas,
        ready_replicas=ready,
        ready=f"{ready}/{desired if desired is not None else spec.replicas}",
        selector=selector_string(name),
        endpoint=endpoint,
        url=f"http://{endpoint}/predict" if endpoint else None,
        grpc_endpoint=endpoint_of(service, GRPC_PORT_NAME) if spec.server.grpc else None,
        model=model_status(
            spec, current_pods(deployment, mine.track_pods(Track.STABLE)) if deployment else []
        ),
        tracks=tracks or None,
        canary=canary,
        gateway=route_gateway(mine[ROUTE]),
    )
    result = status.model_dump(by_alias=True, exclude_none=True, exclude={"conditions"})
    result["conditions"] = merge_conditions(
        previous.get("conditions", []), verdicts, generation=generation, now=now
    )
    return result


def model_status(spec: ImageClassifierSpec, pods: list[dict[str, Any]]) -> ModelStatus:
    """What the pods serve: the source and runtime from the spec (the operator does not call
    the server), the sha256 from the download's termination message."""
    runtime, source = spec.runtime, spec.model_source
    shown = redacted(source.storage_uri) if source else spec.model
    return ModelStatus(
        name=source.served_name if source else spec.model,
        source=shown,
        format=source.model_format if source else None,
        sha256=downloaded_sha256(pods) if source else None,
        labels=None if source else IMAGENET_CLASSES,
        backend=runtime.backend,
        precision=runtime.precision,
        summary=f"{shown} ({runtime.precision})",
    )


def downloaded_sha256(pods: list[dict[str, Any]]) -> str | None:
    """The model file's sha256 as `modelserver fetch` reported it (`fetched URI to PATH: N
    bytes, sha256 HEX`, the model's line first) in a pod's fetch-model termination message."""
    for pod in pods:
        for cstat in _fetch_statuses(pod):
            ended = cstat.get("state", {}).get("terminated") or {}
            if cstat["name"] == FETCH_MODEL and ended.get("exitCode") == 0:
                found = re.search(r"sha256 ([0-9a-f]{64})", ended.get("message", ""))
                if found:
                    return found.group(1)
    return None


def invalid_status(
    *, previous: dict[str, Any], message: str, generation: int | None, now: str
) -> dict[str, Any]:
    """Status for a spec the operator rejects: Ready=False/InvalidSpec, the rest kept as seen."""
    conditions = {c.get("type"): c for c in previous.get("conditions", [])}
    ready = merge_conditions(
        previous.get("conditions", []),
        {READY: Verdict("False", Reason.INVALID_SPEC, message)},
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
    return ready is not None and ready.get("reason") == Reason.CHILD_CONFLICT


def needs_recheck(status: dict[str, Any]) -> bool:
    """Whether to look again though no event may come: a same-name stranger blocks a child
    (it may go without an event telling us), or a canary's unready clock runs (a pod that
    stays Pending changes nothing when the bound passes)."""
    running = (status.get("canary") or {}).get("state") == "Progressing"
    return in_conflict(status) or running
