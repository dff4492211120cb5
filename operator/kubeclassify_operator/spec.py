"""The ImageClassifier API: pydantic models that are the single source of the CRD schema.

Field constraints and the docstrings under each field become the CRD's openAPIV3Schema (see
`crd.py`), descriptions included, so `kubectl explain` documents every field and the API
server rejects most nonsense. Each model's `rules` (in `rules` and `uris`) are both CEL in its
schema and checks of the model; the validators below are the rules only the operator can check.
"""

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationError, WithJsonSchema, model_validator

from kubeclassify_operator.errors import FieldError, describe_errors
from kubeclassify_operator.errors import InvalidSpec as InvalidSpec
from kubeclassify_operator.kubetypes import (
    Affinity,
    AnnotationMap,
    FreeForm,
    LabelMap,
    LocalObjectReference,
    Model,
    Quantity,
    Toleration,
)
from kubeclassify_operator.rules import (
    CIDR,
    CLASSIFIER_NAME,
    DNS_SUBDOMAIN,
    ENV_NOT_OWNED,
    EXTENDED_LIMITS,
    LABELS_NOT_RESERVED,
    MIN_NOT_ABOVE_MAX,
    PORTS_DIFFER,
    QUEUE_BELOW_THREADS,
    REQUESTS_WITHIN_LIMITS,
    SOURCE_RANGES_NEED_LOAD_BALANCER,
    amount,
    validations,
)
from kubeclassify_operator.rules import OWNED_ENV as OWNED_ENV
from kubeclassify_operator.uris import (
    LOCAL_SCHEMES,
    SOURCE_RULES,
    SourceUri,
    file_name,
    scheme_of,
)
from kubeclassify_operator.uris import MODEL_FORMATS as MODEL_FORMATS
from kubeclassify_operator.uris import REMOTE_SCHEMES as REMOTE_SCHEMES
from kubeclassify_operator.uris import suffix_of as suffix_of

GROUP = "kubeclassify.io"
VERSION = "v1alpha1"
KIND = "ImageClassifier"
PLURAL = "imageclassifiers"
SINGULAR = "imageclassifier"
SHORT_NAMES = ["ic"]

# kube-proxy applies an endpoint change to its rules within about 1 s (its default
# --iptables-min-sync-period, or nftables'), after the EndpointSlice controller's own
# sub-second update: 5 s leaves room for a busy node.
DEFAULT_SHUTDOWN_DELAY_SECONDS = 5


class EnvVar(Model):
    """An extra environment variable of the model server (as in a container's env)."""

    rules = (ENV_NOT_OWNED,)

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Name of the variable; not one the operator sets (PORT, HOST, MODEL_NAME, or one that a
    spec.server field sets)."""
    value: str | None = None
    """The value."""
    value_from: FreeForm | None = None
    """Where to read the value from instead (a Kubernetes EnvVarSource: secretKeyRef,
    configMapKeyRef, fieldRef, resourceFieldRef)."""


class Autoscaling(Model):
    """A HorizontalPodAutoscaler on the pods' CPU; while set, it owns the replica count."""

    rules = (MIN_NOT_ABOVE_MAX,)

    min_replicas: int = Field(default=1, ge=1)
    """The fewest pods."""
    max_replicas: int = Field(ge=1)
    """The most pods (required)."""
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=1000, alias="targetCPUUtilizationPercentage"
    )
    """The average CPU use, in percent of resources.requests.cpu, that the HPA aims for."""


# Measured on the node (bench/images.py, docs/benchmarks.md): the default image's pod works in
# about 290 MiB after load, 390 at its peak; the TensorFlow image's in about 740, 1.4 GiB at its
# start-up conversion, which the limit leaves room for.
DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"memory": "2Gi"},
}


def _defaults(
    kind: Literal["requests", "limits"],
    bound: dict[str, Any],
    keep: Callable[[Decimal, Decimal], Decimal],
) -> dict[str, Any]:
    """The default requests (or limits), each replaced by the user's own limit (or request) of
    that resource where `keep` (min for requests, max for limits) picks the user's amount: a
    default never contradicts what the user set."""
    out: dict[str, Any] = {}
    for name, default in DEFAULT_RESOURCES[kind].items():
        theirs, ours = amount(bound.get(name)), amount(default)
        clamp = theirs is not None and ours is not None and keep(theirs, ours) != ours
        out[name] = bound[name] if clamp else default
    return out


class Resources(Model):
    """CPU, memory and other resources of each pod, as in a container's resources.

    A partial block is merged with the defaults key by key; a default never contradicts a
    value you set (a default limit below your request rises to it, a default request above
    your limit falls to it)."""

    rules = (EXTENDED_LIMITS, REQUESTS_WITHIN_LIMITS)

    requests: dict[str, Quantity] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 16}
    )
    """Amounts reserved for each pod, by resource name (cpu, memory, nvidia.com/gpu, ...);
    cpu 500m and memory 512Mi unless set."""
    limits: dict[str, Quantity] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 16}
    )
    """Most each pod may use, by resource name; memory 2Gi unless set (or your memory request,
    if higher)."""

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        requests, limits = data.get("requests") or {}, data.get("limits") or {}
        if not (isinstance(requests, dict) and isinstance(limits, dict)):
            return data  # the field validation says what is wrong
        requests = {**_defaults("requests", bound=limits, keep=min), **requests}
        limits = {**_defaults("limits", bound=requests, keep=max), **limits}
        return {**data, "requests": requests, "limits": limits}


class ServiceSpec(Model):
    """The Service in front of the pods."""

    rules = (SOURCE_RANGES_NEED_LOAD_BALANCER,)

    type: Literal["LoadBalancer", "ClusterIP", "NodePort"] = "LoadBalancer"
    """The Service type: LoadBalancer (an external address from the cloud), ClusterIP (inside
    the cluster only) or NodePort."""
    port: int = Field(default=80, ge=1, le=65535)
    """The port the Service listens on; it forwards to the server's container port 5000."""
    grpc_port: int = Field(default=8081, ge=1, le=65535)
    """The Service's gRPC port (named grpc, appProtocol kubernetes.io/h2c); it forwards to
    the server's container port 8081. Unused while spec.server.grpc is false."""
    annotations: AnnotationMap = Field(default_factory=dict)
    """Annotations of the Service, e.g. a cloud provider's load-balancer settings."""
    load_balancer_source_ranges: list[
        Annotated[
            str,
            Field(pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$", max_length=64),
            CIDR.validator(),
            WithJsonSchema(
                {
                    "type": "string",
                    "pattern": r"^[0-9a-fA-F:.]+/[0-9]{1,3}$",
                    "maxLength": 64,
                    **validations(CIDR.validation()),
                }
            ),
        ]
    ] = Field(default_factory=list, json_schema_extra={"maxItems": 64})
    """CIDR ranges allowed to reach a LoadBalancer (all when empty)."""


class ServerSettings(Model):
    """Model-server tuning, passed through as the server's environment variables."""

    rules = (QUEUE_BELOW_THREADS,)

    top_k: int = Field(default=5, ge=1, le=1000)
    """Predictions returned when a request does not say (TOP_K)."""
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    """Most images in one forward pass (BATCH_MAX_SIZE)."""
    max_batch_delay_ms: int = Field(default=2, ge=0, le=10000)
    """Longest wait for a batch to fill, in milliseconds (BATCH_MAX_DELAY_MS)."""
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest request body in bytes; larger ones get 413 (MAX_UPLOAD_BYTES)."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server worker processes per pod, each with its own copy of the model (WORKERS)."""
    threads: int = Field(default=32, ge=1, le=1024)
    """Request threads per worker (THREADS)."""
    max_queue: int | None = Field(default=None, ge=0, le=1023)
    """Requests a worker works on before answering 503; below threads, or 0 for no bound.
    Unset: the server's default, 3/4 of threads (MAX_QUEUE)."""
    grpc: bool = True
    """Serve the Open Inference Protocol over gRPC on container port 8081 and the Service's
    grpc port; false: no gRPC (GRPC_PORT=0) and no grpc ports."""
    page: bool = True
    """Serve the page at / to try the model in a browser, with the server's live figures
    (GET /stats); false: neither (PAGE=false)."""


class Runtime(Model):
    """How the server runs the model (MODEL_BACKEND, MODEL_PRECISION).

    The threads the backend uses follow the container's CPU limit (the cgroup quota), or all
    the node's cores without one; resources.requests.cpu stays what the scheduler reserves."""

    backend: Literal["auto", "tensorflow", "openvino"] = "auto"
    """The inference runtime: auto (OpenVINO where the image has it, else TensorFlow),
    tensorflow (also the one for NVIDIA GPUs) or openvino (MODEL_BACKEND)."""
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    """The arithmetic: auto (int8 for a quantized model, bf16 with OpenVINO on a CPU with
    native BF16, else fp32), fp32, bf16 (needs a CPU with native BF16) or int8 (needs a
    quantized model) (MODEL_PRECISION). An impossible choice stops the server with a
    one-line error."""


class ModelSource(Model):
    """A model file to serve instead of the built-in model (KServe's storageUri).

    s3://, gs:// and https:// sources are downloaded by an init container (the server image's
    `modelserver fetch`) into an emptyDir; pvc:// mounts the claim read-only and file:// is a
    path in the image, neither copied."""

    rules = SOURCE_RULES

    storage_uri: SourceUri
    """Where the model file is: s3://BUCKET/KEY, gs://BUCKET/KEY, https://HOST/PATH (each
    downloaded at pod start), pvc://CLAIM-NAME/PATH (the claim mounted read-only) or
    file:///PATH (in the image)."""
    format: Literal["keras", "tflite", "openvino"] | None = None
    """keras, tflite or openvino (an IR's .xml; its .bin is taken from beside it); inferred
    from the extension of storageUri (.keras, .tflite, .xml) when unset."""
    labels_uri: SourceUri | None = None
    """The labels: a .txt file (one a line) or Keras' class-index .json, a URI of the same
    kinds. Unset: the model's own, or ImageNet's for a 1000-way model."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """The model file's sha256 (64 hex digits; an IR's .xml); a download that differs
    fails. Setting a new one rolls the pods out, which is how new contents under the same URI
    are served."""
    credentials_secret: str | None = Field(
        default=None, max_length=253, pattern=f"^{DNS_SUBDOMAIN}$"
    )
    """A Secret in the classifier's namespace whose keys become the download's environment:
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION (s3://, and gs://
    with HMAC keys), MODEL_HTTP_BEARER_TOKEN or MODEL_HTTP_USERNAME and MODEL_HTTP_PASSWORD
    (https://). Only the download container sees it, by reference."""
    size_limit: Quantity = "2Gi"
    """The most the downloaded files may take (the emptyDir's sizeLimit): the model's size
    and its labels, with a margin."""

    @property
    def scheme(self) -> str:
        return scheme_of(self.storage_uri)

    @property
    def served_name(self) -> str:
        """The name the server serves the model under: its file's name without the extension
        (the downloaded copy keeps it)."""
        return file_name(self.storage_uri).removesuffix(suffix_of(self.storage_uri))

    @property
    def model_format(self) -> str:
        """The format given, else the one the extension names (the CRD ensures one does)."""
        return self.format or MODEL_FORMATS.get(suffix_of(self.storage_uri), "")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Rules the CRD does not have: the API server takes such a source, and the operator
        refuses it in the status."""
        suffix = suffix_of(self.storage_uri)
        if self.scheme in LOCAL_SCHEMES and MODEL_FORMATS.get(suffix) != self.model_format:
            raise FieldError(
                "format",
                f"{self.model_format} does not match the file name ({suffix or 'no extension'}):"
                " a pvc:// or file:// model is not copied, and the server reads the format from"
                " its extension (.keras, .tflite, .xml)",
            )
        if self.model_format == "openvino" and (suffix != ".xml" or "?" in self.storage_uri):
            raise FieldError(
                "storageUri",
                "an OpenVINO IR must be named by its .xml, without a query: its .bin is "
                "taken from beside it",
            )
        return self


_EMPTY_DEFAULT: dict[str, Any] = {"default": {}}

# How long a canary may go without all its pods ready (never ready, or readiness lost) before
# the operator rolls it back: a model converted at start-up takes up to a minute.
DEFAULT_MAX_UNREADY_SECONDS = 120


class GatewayRef(Model):
    """A Gateway API Gateway (gateway.networking.k8s.io), as an HTTPRoute's parentRef names it."""

    name: str = Field(min_length=1, max_length=253, pattern=f"^{DNS_SUBDOMAIN}$")
    """The Gateway's name."""
    namespace: str | None = Field(default=None, min_length=1, max_length=63)
    """The Gateway's namespace; unset: the classifier's."""
    section_name: str | None = Field(default=None, min_length=1, max_length=253)
    """The Gateway's listener to attach to; unset: every listener that allows the route."""


class Canary(Model):
    """A second track of pods serving a new model (or image, runtime or server settings)
    beside the stable one, and the share of the traffic it takes.

    A field left out is the stable track's; a block given (runtime, server) replaces the
    stable one's as a whole. Promote it by moving its fields into the spec and removing it
    (one `kubectl patch`); remove it to roll back."""

    traffic_percent: int = Field(ge=0, le=100)
    """The share of the requests the canary takes, in percent (required). Without a gateway
    the replicas are split by it (10 replicas at 20: 8 stable, 2 canary) and the Service
    spreads connections over all ready pods; status.canary says the share the ready pods
    give. 0: the canary runs no pods."""
    model_source: ModelSource | None = None
    """The canary's model file; unset: the stable track's model."""
    image: str | None = Field(default=None, min_length=1, pattern=r"^\S+$")
    """The canary's model-server image; unset: the stable track's (or the operator's choice
    for the canary's spec)."""
    runtime: Runtime | None = None
    """The canary's backend and precision; unset: the stable track's."""
    server: ServerSettings | None = None
    """The canary's server settings; unset: the stable track's."""
    max_unready_seconds: int = Field(default=DEFAULT_MAX_UNREADY_SECONDS, ge=10, le=3600)
    """How long the canary's pods may stay not ready (never ready yet, or readiness lost)
    before the operator rolls the canary back (traffic 0, a Warning Event). A crash loop, an
    OOM kill or a model that fails to load rolls it back at once."""


class ImageClassifierSpec(Model):
    """The desired state of one classifier; every field has a default except autoscaling."""

    rules = (LABELS_NOT_RESERVED, PORTS_DIFFER)

    model: Literal["resnet50"] = "resnet50"
    """The model to serve (only resnet50 for now)."""
    image: str | None = Field(default=None, min_length=1, pattern=r"^\S+$")
    """The model-server image; unset: the operator's own choice for this spec, the lean
    OpenVINO image (the built-in model already converted), or its TensorFlow image for
    runtime.backend tensorflow or a .keras model, or its GPU image for nvidia.com/gpu."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    """Secrets for pulling the image from a private registry."""
    replicas: int = Field(default=1, ge=0)
    """Number of pods; ignored while autoscaling is set. kubectl scale sets it."""
    autoscaling: Autoscaling | None = None
    """Scale on CPU with a HorizontalPodAutoscaler; off when unset."""
    shutdown_delay_seconds: int = Field(default=DEFAULT_SHUTDOWN_DELAY_SECONDS, ge=0, le=300)
    """Seconds a pod being stopped (a rollout, a scale-down, a drain) keeps serving as before
    (a preStop sleep), while Services and load balancers stop sending it new connections;
    then the server answers what is in flight and exits. The default covers kube-proxy,
    which updates its rules within about a second; raise it behind a load balancer that
    deregisters targets slowly. 0: no delay (requests may fail during rollouts)."""
    resources: Resources = Field(
        default_factory=Resources, json_schema_extra={"default": DEFAULT_RESOURCES}
    )
    """CPU, memory and other resources of each pod; a partial block is merged with the
    defaults key by key."""
    node_selector: LabelMap = Field(default_factory=dict)
    """Node labels the pods must run on."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints the pods tolerate."""
    affinity: Affinity | None = None
    """Node and pod affinity of the pods."""
    pod_annotations: AnnotationMap = Field(default_factory=dict)
    """Extra annotations of the pods; they override the Prometheus scrape annotations."""
    pod_labels: LabelMap = Field(default_factory=dict)
    """Extra labels of the pods; app.kubernetes.io/* labels are the operator's."""
    env: list[EnvVar] = Field(default_factory=list, json_schema_extra={"maxItems": 256})
    """Extra environment variables of the model server."""
    # `default: {}` makes the API server fill in the nested defaults when the block is omitted.
    service: ServiceSpec = Field(default_factory=ServiceSpec, json_schema_extra=_EMPTY_DEFAULT)
    """The Service in front of the pods."""
    server: ServerSettings = Field(default_factory=ServerSettings, json_schema_extra=_EMPTY_DEFAULT)
    """Model-server tuning, passed as the server's environment variables."""
    runtime: Runtime = Field(default_factory=Runtime, json_schema_extra=_EMPTY_DEFAULT)
    """The inference backend and precision."""
    model_source: ModelSource | None = None
    """A model file to serve instead of spec.model (from object storage, a URL, a
    PersistentVolumeClaim or the image); unset: the built-in model."""
    canary: Canary | None = None
    """A canary: a second track serving a new model beside this one, with a share of the
    traffic; unset: the stable track alone (removing it rolls the canary back)."""
    gateway: GatewayRef | None = None
    """Route the requests that reach this Gateway to the classifier: an HTTPRoute named after
    it, kept while this is set (with or without a canary), and a Service per track; with a
    canary the route splits the requests by spec.canary.trafficPercent (the replicas are
    still split by it too). Unset: no route."""

    @model_validator(mode="after")
    def _backend_runs_the_format(self) -> Self:
        """Not in the CRD either: refused in the status, not by `kubectl apply`."""
        tracks = [("", self)] + ([("canary.", self.canary_spec())] if self.canary else [])
        for prefix, track in tracks:
            source, backend = track.model_source, track.runtime.backend
            if source and source.model_format == "openvino" and backend == "tensorflow":
                raise FieldError(
                    f"{prefix}runtime.backend",
                    "tensorflow cannot run an OpenVINO IR: use auto or openvino",
                )
        return self

    def canary_spec(self) -> "ImageClassifierSpec":
        """What the canary's pods run: this spec with the canary's overrides, and no canary.

        Built without validation (the parts are valid, and the checks of the whole are made
        on this spec for both tracks)."""
        canary = self.canary
        if canary is None:
            return self
        overrides = {
            name: value
            for name in ("model_source", "image", "runtime", "server")
            if (value := getattr(canary, name)) is not None
        }
        return self.model_copy(update={**overrides, "canary": None})

    @model_validator(mode="after")
    def _autoscaling_needs_cpu(self) -> Self:
        """CEL cannot see the CPU request the defaults merge into a partial resources block."""
        if self.autoscaling is not None and not amount(self.resources.requests.get("cpu", 0)):
            raise FieldError(
                "resources.requests.cpu",
                "autoscaling needs a CPU request above 0 to compute CPU utilization",
            )
        return self


def parse_spec(raw: dict[str, Any]) -> ImageClassifierSpec:
    """Validate a raw `.spec`; raises `InvalidSpec` with a message naming the fields."""
    try:
        return ImageClassifierSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpec(describe_errors(exc)) from exc


def check_name(name: str) -> None:
    """Refuse a classifier name that some child could not take (before any child is made)."""
    try:
        CLASSIFIER_NAME.check(name)
    except FieldError as exc:
        raise InvalidSpec(f"{exc.field}: {exc}") from None
