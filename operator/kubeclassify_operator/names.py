"""The names the operator writes on its children and reads back: labels, annotations, ports,
container names, condition types and reasons.

One place for each, so the builders that write a name and the status and handlers that read it
cannot drift apart.
"""

from enum import StrEnum

from kubeclassify_operator.spec import GROUP

APP_NAME = "kubeclassify"
MANAGER = "kubeclassify-operator"
COMPONENT = "modelserver"

# Labels (the recommended app.kubernetes.io set).
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"  # the classifier's name, on every child and pod
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# What every child carries, and so what the watches of children select.
MANAGED = {MANAGED_BY_LABEL: MANAGER}
# Which track a pod serves (see Track): on the pod templates, and in the canary's selector.
TRACK_LABEL = f"{GROUP}/track"

# Annotations.
# The manifest the operator applied last, so the next patch can remove dropped fields.
LAST_APPLIED = f"{GROUP}/last-applied"
# Names the pod template a pod was made from, so the status can ignore an older template's pods.
TEMPLATE_HASH = f"{GROUP}/template-hash"
# Names the model source the pods were made for, so a changed source rolls them out.
MODEL_SOURCE_HASH = f"{GROUP}/model-source-hash"

# Ports: the container's, named so that the probes and the Service follow a renumbering.
CONTAINER_PORT = 5000
PORT_NAME = "http"
GRPC_PORT = 8081
GRPC_PORT_NAME = "grpc"

# Containers: the model server, and the init containers that download spec.modelSource.
CONTAINER_NAME = "modelserver"
FETCH_MODEL, FETCH_WEIGHTS, FETCH_LABELS = "fetch-model", "fetch-weights", "fetch-labels"
FETCH_CONTAINERS = (FETCH_MODEL, FETCH_WEIGHTS, FETCH_LABELS)


def selector_labels(name: str) -> dict[str, str]:
    """The immutable Deployment selector: the smallest set that identifies one instance."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name}


def selector_string(name: str) -> str:
    """The selector in the `a=b,c=d` form the scale subresource and HPAs expect."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(name).items()))


def common_labels(name: str) -> dict[str, str]:
    return {**selector_labels(name), COMPONENT_LABEL: COMPONENT, **MANAGED}


class Track(StrEnum):
    """The two Deployments of a classifier: the stable one, named after it, and a canary's,
    `<name>-canary`. The Service selects the pods of both (selector_labels)."""

    STABLE = "stable"
    CANARY = "canary"

    def deployment(self, name: str) -> str:
        """The name of this track's Deployment."""
        return name if self is Track.STABLE else f"{name}-{self.value}"


def track_labels(name: str, track: Track) -> dict[str, str]:
    """The labels that select one track's pods (the canary's selector, a track's Service)."""
    return {**selector_labels(name), TRACK_LABEL: track.value}


class ConditionType(StrEnum):
    """The classifier's conditions: Ready, and one per child that has a say (see children)."""

    READY = "Ready"
    DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
    SERVICE_READY = "ServiceReady"


class Reason(StrEnum):
    """Why a condition is what it is, in the classifier's status (and its Events' reasons).

    Some repeat the kubelet's own reason for a container (CrashLoopBackOff, ...): the status
    passes on what the pods say."""

    INVALID_SPEC = "InvalidSpec"
    CHILD_CONFLICT = "ChildConflict"
    # The pods.
    OOM_KILLED = "OOMKilled"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    MODEL_DOWNLOAD_FAILED = "ModelDownloadFailed"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    UNSCHEDULABLE = "Unschedulable"
    # The Deployment.
    DEPLOYMENT_MISSING = "DeploymentMissing"
    PENDING = "Pending"
    UNKNOWN = "Unknown"
    ROLLING_OUT = "RollingOut"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    SCALED_TO_ZERO = "ScaledToZero"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ALL_REPLICAS_READY = "AllReplicasReady"
    # The Service.
    SERVICE_MISSING = "ServiceMissing"
    LOAD_BALANCER_PENDING = "LoadBalancerPending"
    ENDPOINT_ASSIGNED = "EndpointAssigned"
    # The canary (besides the pods' reasons, which roll it back).
    CANARY_NOT_READY = "CanaryNotReady"


class EventReason(StrEnum):
    """The reasons of the Events a pass posts besides a condition's (see reconcile)."""

    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"
    READY = "Ready"
    REPLICAS_IGNORED = "ReplicasIgnored"
    CANARY_STARTED = "CanaryStarted"
    CANARY_PROMOTED = "CanaryPromoted"
    CANARY_REMOVED = "CanaryRemoved"
    CANARY_ROLLED_BACK = "CanaryRolledBack"
