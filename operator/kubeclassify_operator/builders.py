"""Pure functions from a validated spec to the children's manifests (and to their patches).

Nothing here talks to the API: the same inputs always give the same dicts, so they are
unit-tested table-driven and validated against the official Kubernetes schemas.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import unquote

from kubernetes.utils import parse_quantity

from kubeclassify_operator.images import ServerImages, server_image
from kubeclassify_operator.names import (
    CONTAINER_NAME,
    CONTAINER_PORT,
    FETCH_LABELS,
    FETCH_MODEL,
    FETCH_WEIGHTS,
    GRPC_PORT,
    GRPC_PORT_NAME,
    LAST_APPLIED,
    MODEL_SOURCE_HASH,
    PORT_NAME,
    TEMPLATE_HASH,
    TRACK_LABEL,
    Track,
    common_labels,
    selector_labels,
    track_labels,
)
from kubeclassify_operator.spec import (
    GROUP,
    KIND,
    MODEL_FORMATS,
    REMOTE_SCHEMES,
    VERSION,
    ImageClassifierSpec,
    ModelSource,
    suffix_of,
)

# A model from spec.modelSource: downloads land in an emptyDir, claims are mounted here.
DOWNLOAD_VOLUME = "model"
DOWNLOAD_DIR = "/models"
PVC_ROOT = "/mnt/pvc"  # where `modelserver fetch` looks for pvc:// too (MODEL_PVC_ROOT)
# A streaming download needs little; the pod's request is the larger of this and the server's.
FETCH_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
# The file name a downloaded model takes: the server reads the format from the extension.
_FORMAT_SUFFIX = {fmt: suffix for suffix, fmt in MODEL_FORMATS.items()}

# SIGTERM makes the server drain in-flight requests for up to ~30 s; leave headroom. The pod's
# grace period is this after spec.shutdownDelaySeconds (the preStop sleep counts against it).
TERMINATION_GRACE_SECONDS = 45
# The startup probe asks /readyz every second, so a pod turns Ready within about a second of
# its model (the kubelet runs the readiness probe as soon as the startup probe passes; with
# /healthz, alive before the model loads, Ready waited for the next 5 s readiness tick). The
# default image loads in 1-3 s; a conversion at start-up (TensorFlow image) in 10-60 s: allow
# 1 s x 180 = 3 minutes before the kubelet gives up.
STARTUP_PERIOD_SECONDS = 1
STARTUP_FAILURE_THRESHOLD = 180
SERVER_USER_ID = 10001

DEFAULT_POD_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(CONTAINER_PORT),
    "prometheus.io/path": "/metrics",
}


@dataclass(frozen=True)
class Owner:
    """The identity of the ImageClassifier that owns (and names) every child."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "Owner":
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller reference, so deleting the ImageClassifier garbage-collects the child."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(owner: Owner) -> dict[str, Any]:
    return {
        "name": owner.name,
        "namespace": owner.namespace,
        "labels": common_labels(owner.name),
        "ownerReferences": [owner_reference(owner)],
    }


@dataclass(frozen=True)
class PodPart:
    """What one feature adds to the pod template: the pod is the sum of its parts.

    A feature (the server's settings, its scratch space, where the model comes from, ...) is
    one pure function from the spec to a part, instead of edits threaded through the
    container, the pod spec and the template."""

    env: tuple[dict[str, Any], ...] = ()
    ports: tuple[dict[str, Any], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    def __add__(self, other: "PodPart") -> "PodPart":
        return PodPart(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(PodPart)))


def _env(values: Mapping[str, object]) -> tuple[dict[str, Any], ...]:
    return tuple({"name": key, "value": str(value)} for key, value in values.items())


def _http_part(spec: ImageClassifierSpec) -> PodPart:
    """The HTTP port that the probes, the Service and Prometheus use."""
    return PodPart(
        env=_env({"PORT": CONTAINER_PORT}),
        ports=({"name": PORT_NAME, "containerPort": CONTAINER_PORT, "protocol": "TCP"},),
    )


def _model_part(spec: ImageClassifierSpec) -> PodPart:
    """The model to serve: the built-in one, or spec.modelSource's file (see `_source_part`)."""
    part = PodPart(env=_env({"MODEL_NAME": spec.model}))
    return part if spec.model_source is None else part + _source_part(spec, spec.model_source)


def _source_part(spec: ImageClassifierSpec, source: ModelSource) -> PodPart:
    """Where MODEL_FILE and MODEL_LABELS point, and how the files get there: downloads by init
    containers into an emptyDir, claims mounted read-only, image paths as they are.

    The pod template carries a hash of the source (of the fields set, so that a new optional
    field in a later version changes no hash), so a changed source rolls the pods out and an
    unchanged one never does."""
    model_file = f"{source.served_name}{_FORMAT_SUFFIX[source.model_format]}"
    model = _place(source.storage_uri, model_file)
    labels = None
    if source.labels_uri is not None:
        labels = _place(source.labels_uri, f"labels{suffix_of(source.labels_uri)}")
    env = {"MODEL_FILE": model.path} | ({"MODEL_LABELS": labels.path} if labels else {})
    part = PodPart(
        env=_env(env),
        annotations=((MODEL_SOURCE_HASH, digest(source.model_dump(exclude_defaults=True))),),
    )
    downloads: list[tuple[str, list[str]]] = []  # (init container, `modelserver fetch` args)
    if model.remote:
        args = [source.storage_uri, model.path]
        args += ["--sha256", source.sha256.lower()] if source.sha256 else []
        if labels and labels.remote:
            args += ["--labels-uri", labels.uri, "--labels-dest", labels.path]
        downloads.append((FETCH_MODEL, args))
        if source.model_format == "openvino":  # an IR's weights lie beside its .xml
            bin_uri = source.storage_uri.removesuffix(".xml") + ".bin"
            bin_path = f"{DOWNLOAD_DIR}/{source.served_name}.bin"
            downloads.append((FETCH_WEIGHTS, [bin_uri, bin_path]))
    elif labels and labels.remote:
        downloads.append((FETCH_LABELS, [labels.uri, labels.path]))
    if downloads:
        part += PodPart(
            mounts=({"name": DOWNLOAD_VOLUME, "mountPath": DOWNLOAD_DIR, "readOnly": True},),
            volumes=({"name": DOWNLOAD_VOLUME, "emptyDir": {"sizeLimit": str(source.size_limit)}},),
            init_containers=tuple(_fetcher(spec, source, name, args) for name, args in downloads),
        )
    claims = dict.fromkeys(place.claim for place in (model, labels) if place and place.claim)
    for index, claim in enumerate(claims):
        volume = f"claim-{index}"
        part += PodPart(
            mounts=({"name": volume, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True},),
            volumes=(
                {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
            ),
        )
    return part


@dataclass(frozen=True)
class _Place:
    """Where the server finds one file of the source (`path`), and whether it is downloaded
    there or is on a claim (`claim`) or in the image."""

    uri: str
    path: str
    remote: bool = False
    claim: str | None = None


def _place(uri: str, name: str) -> _Place:
    scheme, rest = uri.split("://", 1)
    if scheme in REMOTE_SCHEMES:
        return _Place(uri, f"{DOWNLOAD_DIR}/{name}", remote=True)
    if scheme == "pvc":
        claim, path = rest.split("/", 1)
        return _Place(uri, f"{PVC_ROOT}/{claim}/{unquote(path)}", claim=claim)
    return _Place(uri, unquote(rest))  # file:///path, in the image


def _fetcher(
    spec: ImageClassifierSpec, source: ModelSource, name: str, args: list[str]
) -> dict[str, Any]:
    """An init container running the server image's `modelserver fetch`: it writes the file
    atomically, and its termination message is the file's sha256 or why the download failed.
    Credentials come from the Secret by reference, to this container only."""
    container: dict[str, Any] = {
        "name": name,
        "imagePullPolicy": spec.image_pull_policy,  # the image: the server's (`_pod_spec`)
        "command": ["modelserver", "fetch"],
        "args": [*args, "--termination-log", "/dev/termination-log"],
        "resources": FETCH_RESOURCES,
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": DOWNLOAD_VOLUME, "mountPath": DOWNLOAD_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if source.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": source.credentials_secret}}]
    return container


def digest(value: Any) -> str:
    """A short stable digest of a JSON value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _grpc_part(spec: ImageClassifierSpec) -> PodPart:
    """The Open Inference Protocol's gRPC port, or none (GRPC_PORT=0 turns it off)."""
    if not spec.server.grpc:
        return PodPart(env=_env({"GRPC_PORT": 0}))
    return PodPart(
        env=_env({"GRPC_PORT": GRPC_PORT}),
        ports=({"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},),
    )


def _runtime_part(spec: ImageClassifierSpec) -> PodPart:
    """The backend and precision; the server sizes its threads from the CPU limit itself."""
    runtime = spec.runtime
    return PodPart(
        env=_env({"MODEL_BACKEND": runtime.backend, "MODEL_PRECISION": runtime.precision})
    )


def _settings_part(spec: ImageClassifierSpec) -> PodPart:
    """spec.server as the server's variables."""
    server = spec.server
    fixed: dict[str, object] = {
        "TOP_K": server.top_k,
        "BATCH_MAX_SIZE": server.max_batch_size,
        "BATCH_MAX_DELAY_MS": server.max_batch_delay_ms,
        "MAX_UPLOAD_BYTES": server.max_upload_bytes,
        "WORKERS": server.workers,
        "THREADS": server.threads,
    }
    if server.max_queue is not None:
        fixed["MAX_QUEUE"] = server.max_queue
    if not server.page:  # only then: a spec that leaves it on keeps its pod template as it was
        fixed["PAGE"] = "false"
    return PodPart(env=_env(fixed))


def _scratch_part(spec: ImageClassifierSpec) -> PodPart:
    """A writable /tmp: the root filesystem is read-only."""
    return PodPart(
        mounts=({"name": "tmp", "mountPath": "/tmp"},),
        volumes=({"name": "tmp", "emptyDir": {}},),
    )


def _user_env_part(spec: ImageClassifierSpec) -> PodPart:
    """The user's variables, last (the spec refuses one that would override the operator's:
    see `spec.OWNED_ENV`)."""
    return PodPart(env=tuple(var.model_dump(by_alias=True, exclude_none=True) for var in spec.env))


# The pod's features, in the order their variables, ports and volumes appear.
POD_PARTS = (
    _model_part,
    _http_part,
    _settings_part,
    _runtime_part,
    _grpc_part,
    _scratch_part,
    _user_env_part,
)


def pod_parts(spec: ImageClassifierSpec) -> PodPart:
    """Every feature's part of the pod, added up."""
    return sum((part(spec) for part in POD_PARTS), PodPart())


def server_env(spec: ImageClassifierSpec) -> list[dict[str, Any]]:
    """The model server's environment: the operator's variables, then the user's."""
    return list(pod_parts(spec).env)


def user_env_start(spec: ImageClassifierSpec) -> int:
    """The index of spec.env[0] in the server's environment: the operator's come first, and
    how many there are depends on the spec."""
    return len(pod_parts(spec).env) - len(spec.env)


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _probes() -> dict[str, Any]:
    return {
        "startupProbe": _probe(
            "/readyz", period=STARTUP_PERIOD_SECONDS, failures=STARTUP_FAILURE_THRESHOLD
        ),
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
    }


def _resources(spec: ImageClassifierSpec) -> dict[str, Any]:
    # The API server returns quantities as strings; send them as strings too.
    return {
        kind: {name: str(value) for name, value in amounts.items()}
        for kind, amounts in spec.resources.model_dump(by_alias=True).items()
    }


CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": SERVER_USER_ID,
    "runAsGroup": SERVER_USER_ID,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _container(spec: ImageClassifierSpec, parts: PodPart, image: str) -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": list(parts.ports),
        "env": list(parts.env),
        "resources": _resources(spec),
        **_probes(),
        "securityContext": CONTAINER_SECURITY,
        # A model that cannot load stops the server: its last log lines say why (ModelLoadFailed).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": list(parts.mounts),
        **_shutdown_delay(spec),
    }


def _shutdown_delay(spec: ImageClassifierSpec) -> dict[str, Any]:
    """A preStop sleep: a pod being deleted leaves the Services' endpoints at once, but kube-
    proxies and load balancers take a moment to stop sending it new connections, which a
    server that stopped accepting would refuse. The kubelet's own sleep (Kubernetes 1.30+)
    needs no `sleep` binary in the image."""
    if not spec.shutdown_delay_seconds:
        return {}
    return {"lifecycle": {"preStop": {"sleep": {"seconds": spec.shutdown_delay_seconds}}}}


def _scheduling(spec: ImageClassifierSpec) -> dict[str, Any]:
    """Where the pods may run, and how their image is pulled."""
    pod: dict[str, Any] = {}
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [ref.model_dump() for ref in spec.image_pull_secrets]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    affinity = spec.affinity.model_dump(by_alias=True, exclude_none=True) if spec.affinity else {}
    if affinity:
        pod["affinity"] = affinity
    return pod


def _pod_spec(spec: ImageClassifierSpec, parts: PodPart, image: str) -> dict[str, Any]:
    """The pod; its init containers run `modelserver fetch` from the server's own image, so a
    node pulls one image."""
    pod: dict[str, Any] = {}
    if parts.init_containers:
        pod["initContainers"] = [{**init, "image": image} for init in parts.init_containers]
    return {
        **pod,
        "containers": [_container(spec, parts, image)],
        "terminationGracePeriodSeconds": spec.shutdown_delay_seconds + TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": SERVER_USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "volumes": list(parts.volumes),
        **_scheduling(spec),
    }


def build_deployment(
    owner: Owner,
    spec: ImageClassifierSpec,
    current_replicas: int | None = None,
    images: ServerImages | None = None,
    *,
    replicas: int | None = None,
    track: Track = Track.STABLE,
) -> dict[str, Any]:
    """One track's model-server Deployment, in the image `images.server_image` chooses from
    `images` (None: the published ones), which may refuse the spec.

    `replicas`, when given, is the count (the canary's split decides it); otherwise, with
    autoscaling the HPA owns `.spec.replicas`: the Deployment keeps whatever the HPA last set
    (`current_replicas`), starting at minReplicas, so the operator never fights it.

    Every pod carries its track's label. The stable Deployment's selector stays the
    classifier's (a selector is immutable), so it matches the canary's pods too; they are
    never its pods all the same: a ReplicaSet only counts and deletes the pods it controls
    (their controller ownerReference) and adopts orphans that match its own selector, which
    includes the pod-template-hash, different for each track's template. The canary's
    selector has the track label, so it matches no stable pod.
    """
    if replicas is None:
        if spec.autoscaling is None:
            replicas = spec.replicas
        elif current_replicas is not None:
            replicas = current_replicas
        else:
            replicas = spec.autoscaling.min_replicas
    labels = common_labels(owner.name)
    parts = pod_parts(spec)
    template = {
        "metadata": {
            "labels": {**spec.pod_labels, **labels, TRACK_LABEL: track.value},
            "annotations": {
                **DEFAULT_POD_ANNOTATIONS,
                **spec.pod_annotations,
                **dict(parts.annotations),
            },
        },
        "spec": _pod_spec(spec, parts, server_image(spec, images or ServerImages())),
    }
    metadata = _metadata(owner)
    selector = selector_labels(owner.name)
    if track is not Track.STABLE:
        metadata["name"] = track.deployment(owner.name)
        metadata["labels"] = {**metadata["labels"], TRACK_LABEL: track.value}
        selector = track_labels(owner.name, track)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": _with_hash(template, _hash(template)),
        },
    }


def _hash(template: dict[str, Any]) -> str:
    return digest(_with_hash(template, None))


def _with_hash(template: dict[str, Any], value: str | None) -> dict[str, Any]:
    """The pod template with this template hash (or none)."""
    meta = template["metadata"]
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if k != TEMPLATE_HASH}
    if value:
        annotations[TEMPLATE_HASH] = value
    return {**template, "metadata": {**meta, "annotations": annotations}}


def keep_template_hash(desired: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """The desired Deployment, with the current template's hash if nothing else differs.

    The hash only names a template: a new one alone (the first pass of an operator version
    that adds or computes it differently) must not roll every pod.
    """
    have = (current or {}).get("spec", {}).get("template")
    plain = _with_hash(desired["spec"]["template"], None)
    if have is None or not is_subset(plain, have):
        return desired
    kept = _with_hash(plain, have.get("metadata", {}).get("annotations", {}).get(TEMPLATE_HASH))
    return {**desired, "spec": {**desired["spec"], "template": kept}}


def build_service(owner: Owner, spec: ImageClassifierSpec) -> dict[str, Any]:
    """The Service in front of the pods: `port` -> the container's named `http` port, and
    `grpcPort` -> its `grpc` port (HTTP/2 without TLS, which `appProtocol` tells gateways)."""
    metadata = _metadata(owner)
    if spec.service.annotations:
        metadata["annotations"] = dict(spec.service.annotations)
    service_spec: dict[str, Any] = {
        "type": spec.service.type,
        "selector": selector_labels(owner.name),
        "ports": [
            {
                "name": PORT_NAME,
                "port": spec.service.port,
                "targetPort": PORT_NAME,
                "protocol": "TCP",
            }
        ],
    }
    if spec.server.grpc:
        service_spec["ports"].append(
            {
                "name": GRPC_PORT_NAME,
                "port": spec.service.grpc_port,
                "targetPort": GRPC_PORT_NAME,
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    if spec.service.load_balancer_source_ranges:
        service_spec["loadBalancerSourceRanges"] = list(spec.service.load_balancer_source_ranges)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": service_spec}


def build_hpa(owner: Owner, spec: ImageClassifierSpec) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on the Deployment's CPU, or None when autoscaling is off."""
    if spec.autoscaling is None:
        return None
    utilization = spec.autoscaling.target_cpu_utilization_percentage
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": utilization,
                        },
                    },
                }
            ],
        },
    }


def with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    """Record the manifest in an annotation, so the next patch can remove dropped fields."""
    meta = desired["metadata"]
    annotations = {**meta.get("annotations", {}), LAST_APPLIED: json.dumps(desired, sort_keys=True)}
    return {**desired, "metadata": {**meta, "annotations": annotations}}


def last_applied(current: dict[str, Any]) -> dict[str, Any]:
    """The manifest the operator applied last time (empty if none or unreadable)."""
    raw = current.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def merge_patch(last: Any, desired: Any) -> Any:
    """A JSON merge patch (RFC 7386) that sets all of `desired` and nulls what `last` had extra.

    Re-sending every desired field restores hand edits; nulling the fields the operator set
    last time but no longer wants (a removed nodeSelector key, say) removes them.
    """
    if not (isinstance(last, dict) and isinstance(desired, dict)):
        return desired
    patch = {key: merge_patch(last.get(key), value) for key, value in desired.items()}
    patch.update({key: None for key in last if key not in desired})
    return patch


def is_subset(desired: Any, current: Any) -> bool:
    """Whether `current` already has every field of `desired` (server-side extras ignored)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(
            key in current and is_subset(value, current[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(desired) == len(current)
            and all(is_subset(d, c) for d, c in zip(desired, current, strict=True))
        )
    if isinstance(desired, str) and isinstance(current, str) and desired != current:
        return _same_quantity(desired, current)
    return bool(desired == current)


def _same_quantity(a: str, b: str) -> bool:
    """`0.5` and `500m` are the same CPU: the API server stores quantities canonicalized."""
    try:
        return bool(parse_quantity(a) == parse_quantity(b))  # type: ignore[no-untyped-call]
    except ValueError:
        return False
