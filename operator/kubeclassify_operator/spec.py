"""The ImageClassifier API: pydantic models that are the single source of the CRD schema.

Field constraints here become the CRD's openAPIV3Schema (see `crd.py`), so the API server
rejects most nonsense; the `model_validator`s cover the cross-field rules a schema cannot
express, and the operator reports their failures as `Ready=False, reason=InvalidSpec`.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

GROUP = "kubeclassify.io"
VERSION = "v1alpha1"
KIND = "ImageClassifier"
PLURAL = "imageclassifiers"
SINGULAR = "imageclassifier"
SHORT_NAMES = ["ic"]

DEFAULT_IMAGE = "ghcr.io/kubeclassify/modelserver:0.1.0"

# Labels the operator owns on every child; users may not override them through podLabels.
RESERVED_LABEL_PREFIX = "app.kubernetes.io/"

# The API server's own pattern for resource.Quantity.
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_QUANTITY_PATTERN = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"

Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": _QUANTITY_PATTERN,
        }
    ),
]
"""A Kubernetes resource quantity such as `500m`, `2Gi` or `1`."""

FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through verbatim (the API server validates it in the child)."""

LabelMap = dict[str, Annotated[str, Field(max_length=63)]]


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, like every Kubernetes API."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class LocalObjectReference(_Model):
    name: str = Field(min_length=1, max_length=253)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(_Model):
    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = None
    value_from: FreeForm | None = None


class Autoscaling(_Model):
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=1000, alias="targetCPUUtilizationPercentage"
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not exceed maxReplicas "
                f"({self.max_replicas})"
            )
        return self


class Resources(_Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "2Gi"},
}


class ServiceSpec(_Model):
    type: Literal["LoadBalancer", "ClusterIP", "NodePort"] = "LoadBalancer"
    port: int = Field(default=80, ge=1, le=65535)
    annotations: dict[str, str] = Field(default_factory=dict)
    load_balancer_source_ranges: list[
        Annotated[str, Field(pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")]
    ] = Field(default_factory=list)

    @model_validator(mode="after")
    def _source_ranges_need_load_balancer(self) -> "ServiceSpec":
        if self.load_balancer_source_ranges and self.type != "LoadBalancer":
            raise ValueError(
                f"loadBalancerSourceRanges only applies to type LoadBalancer, not {self.type}"
            )
        return self


class ServerSettings(_Model):
    """Model-server tuning, passed through as the server's environment variables."""

    top_k: int = Field(default=5, ge=1, le=1000)
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_batch_delay_ms: int = Field(default=2, ge=0, le=10000)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    workers: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=32, ge=1, le=1024)
    # Unset: the server's own default (3/4 of the threads); 0: no bound.
    max_queue: int | None = Field(default=None, ge=0, le=1023)

    @model_validator(mode="after")
    def _queue_below_threads(self) -> "ServerSettings":
        """The server refuses to start otherwise: say so here rather than crash-loop the pod."""
        if self.max_queue and self.max_queue >= self.threads:
            raise ValueError(
                f"maxQueue ({self.max_queue}) must be below threads ({self.threads}), or 0"
            )
        return self


_EMPTY_DEFAULT: dict[str, Any] = {"default": {}}


class ImageClassifierSpec(_Model):
    """The desired state of one classifier; every field has a default except autoscaling."""

    model: Literal["resnet50"] = "resnet50"
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, pattern=r"^\S+$")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    replicas: int = Field(default=1, ge=0)
    autoscaling: Autoscaling | None = None
    resources: Resources = Field(
        default_factory=lambda: Resources.model_validate(DEFAULT_RESOURCES),
        json_schema_extra={"default": DEFAULT_RESOURCES},
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: FreeForm | None = None
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    pod_labels: LabelMap = Field(default_factory=dict)
    env: list[EnvVar] = Field(default_factory=list)
    # `default: {}` makes the API server fill in the nested defaults when the block is omitted.
    service: ServiceSpec = Field(default_factory=ServiceSpec, json_schema_extra=_EMPTY_DEFAULT)
    server: ServerSettings = Field(default_factory=ServerSettings, json_schema_extra=_EMPTY_DEFAULT)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "ImageClassifierSpec":
        reserved = sorted(k for k in self.pod_labels if k.startswith(RESERVED_LABEL_PREFIX))
        if reserved:
            raise ValueError(f"podLabels must not set operator-owned labels: {', '.join(reserved)}")
        if self.autoscaling is not None and "cpu" not in self.resources.requests:
            raise ValueError("autoscaling needs resources.requests.cpu to compute CPU utilization")
        for name, limit in self.resources.limits.items():
            if "/" not in name:
                continue  # extended resources (e.g. nvidia.com/gpu) follow stricter rules
            request = self.resources.requests.get(name, limit)
            if str(request) != str(limit):
                raise ValueError(f"resources: {name} requests ({request}) must equal limits")
        return self


def parse_spec(raw: dict[str, Any]) -> ImageClassifierSpec:
    """Validate a raw `.spec`; raises `InvalidSpec` with a message naming the fields."""
    try:
        return ImageClassifierSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpec(describe_errors(exc)) from exc


def describe_errors(exc: ValidationError) -> str:
    """One line per error, each naming the offending field as `spec.a.b`."""
    lines = []
    for error in exc.errors():
        path = ".".join(["spec", *(str(part) for part in error["loc"])])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


class InvalidSpec(ValueError):
    """A spec that passed the CRD schema but breaks a rule only the operator checks."""
