"""The ImageClassifier API: pydantic models that are the single source of the CRD schema.

Field constraints and the docstrings under each field become the CRD's openAPIV3Schema (see
`crd.py`), descriptions included, so `kubectl explain` documents every field and the API
server rejects most nonsense. Rules a plain schema cannot express are written twice on
purpose: as CEL (`x-kubernetes-validations`, so `kubectl apply` refuses them) and as pydantic
validators (so the operator still refuses an object stored before the rule existed, and
reports `Ready=False, reason=InvalidSpec` with a message naming the field).
"""

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from kubernetes.utils import parse_quantity
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

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

# Labels the operator owns on every child; users may not override them through podLabels.
RESERVED_LABEL_PREFIX = "app.kubernetes.io/"

# Every child takes the classifier's name, and the Service's is the strictest use of it: a
# DNS-1035 label (no dots, a letter first), which also fits the 63-character label values.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 63
NAME_RULE = (
    "must be a DNS-1035 label of at most 63 characters (lower-case letters, digits and '-', "
    "starting with a letter and ending with a letter or digit), because the classifier's "
    "Service and the app.kubernetes.io/instance label of its pods take this name"
)

# The server's environment variables the operator sets, and where to set each instead.
OWNED_ENV = {
    "PORT": "the operator sets it to the container port that the probes and the Service target",
    "HOST": "the server must listen on every address for the probes and the Service to reach it",
    "MODEL_NAME": "set spec.model instead",
    "TOP_K": "set spec.server.topK instead",
    "BATCH_MAX_SIZE": "set spec.server.maxBatchSize instead",
    "BATCH_MAX_DELAY_MS": "set spec.server.maxBatchDelayMs instead",
    "MAX_UPLOAD_BYTES": "set spec.server.maxUploadBytes instead",
    "WORKERS": "set spec.server.workers instead",
    "THREADS": "set spec.server.threads instead",
    "MAX_QUEUE": "set spec.server.maxQueue instead",
    "PAGE": "set spec.server.page instead",
    "MODEL_BACKEND": "set spec.runtime.backend instead",
    "MODEL_PRECISION": "set spec.runtime.precision instead",
    "GRPC_PORT": "set spec.server.grpc instead (the Service's grpc port targets it)",
    "MODEL_FILE": "set spec.modelSource instead",
    "MODEL_LABELS": "set spec.modelSource.labelsUri instead",
}


def _cel(rule: str, message: str, **extra: str) -> JsonDict:
    """One `x-kubernetes-validations` entry."""
    return {"rule": rule, "message": message, **extra}


def _validations(*rules: JsonDict) -> JsonDict:
    """The CEL rules of a schema node, for `json_schema_extra`."""
    entries: list[JsonValue] = [*rules]
    return {"x-kubernetes-validations": entries}


def _cel_string(text: str) -> str:
    """A CEL string literal (JSON's escaping is a subset CEL accepts)."""
    return json.dumps(text)


# The API server's own pattern for resource.Quantity, without the minus: no amount is negative.
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_QUANTITY_PATTERN = rf"^\+?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"


def _quantity(value: int | str) -> int | str:
    """Refuse what the child's API would refuse, here where the message can name the field."""
    if isinstance(value, int) and value < 0:
        raise ValueError(f"must not be negative, got {value}")
    if isinstance(value, str) and not (len(value) <= 64 and re.match(_QUANTITY_PATTERN, value)):
        raise ValueError(f"{value!r} is not a non-negative quantity such as 500m, 2Gi or 1")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": _QUANTITY_PATTERN,
            "maxLength": 64,
            "minimum": 0,
        }
    ),
]
"""A Kubernetes resource quantity such as `500m`, `2Gi` or `1`."""

FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through verbatim (the API server validates it in the child)."""

# Kubernetes' rules for label and annotation keys (an optional DNS prefix, then a name of at
# most 63 characters) and label values. Checked here because the child that carries them is
# created after another: refused there, it would leave the classifier half made.
_KEY_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_PATTERN = rf"^({_DNS_PREFIX}/)?{_KEY_NAME}$"
_LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_MAX_KEYS = 64
_MAX_KEY_LENGTH = 253 + 1 + 63  # prefix, '/', name
_KEY_RULE = (
    "is a name of at most 63 letters, digits, '-', '_' or '.' (starting and ending with a "
    "letter or digit), optionally after a DNS prefix and '/', such as example.com/team"
)
_VALID_KEY = f"size(k) <= {_MAX_KEY_LENGTH} && k.matches({_cel_string(_KEY_PATTERN)})"


def _valid_keys(entries: dict[str, str]) -> dict[str, str]:
    bad = [k for k in entries if len(k) > _MAX_KEY_LENGTH or not re.match(_KEY_PATTERN, k)]
    if bad:
        raise ValueError(f"key {bad[0]!r} is invalid: a key {_KEY_RULE}")
    return entries


def _valid_label_values(labels: dict[str, str]) -> dict[str, str]:
    bad = [
        f"{k}={v}"
        for k, v in labels.items()
        if len(v) > 63 or not re.match(_LABEL_VALUE_PATTERN, v)
    ]
    if bad:
        raise ValueError(
            f"{', '.join(bad)}: a label value is at most 63 letters, digits, '-', "
            "'_' or '.', starting and ending with a letter or digit"
        )
    return labels


def _string_map(values: JsonDict) -> Any:
    """A map of label or annotation keys to these values, its keys checked by CEL."""
    return WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": values,
            "maxProperties": _MAX_KEYS,
            **_validations(
                _cel(
                    f"self.all(k, {_VALID_KEY})",
                    f"a key {_KEY_RULE}",
                    messageExpression=f"'key ' + self.filter(k, !({_VALID_KEY}))[0] + "
                    f"{_cel_string(' is invalid: a key ' + _KEY_RULE)}",
                )
            ),
        }
    )


AnnotationMap = Annotated[
    dict[str, str], AfterValidator(_valid_keys), _string_map({"type": "string"})
]
"""Annotations, as on any Kubernetes object."""
LabelMap = Annotated[
    dict[str, str],
    AfterValidator(_valid_keys),
    AfterValidator(_valid_label_values),
    _string_map({"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE_PATTERN}),
]
"""Labels (or a node selector), as on any Kubernetes object."""


class FieldError(ValueError):
    """A rule broken at `field`, a path relative to the model whose validator raised it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, like every Kubernetes API; the docstring
    under each field is its description in the CRD."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, use_attribute_docstrings=True
    )


class LocalObjectReference(_Model):
    """A Secret in the classifier's namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the Secret."""


class Toleration(_Model):
    """Lets the pods run on nodes with a matching taint (as in a Pod's tolerations)."""

    key: str | None = None
    """The taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists (any value) or Equal (the value below); Kubernetes defaults to Equal."""
    value: str | None = None
    """The taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to tolerate; empty tolerates every effect."""
    toleration_seconds: int | None = None
    """With effect NoExecute: how long the pods stay on a node after the taint appears."""


class EnvVar(_Model):
    """An extra environment variable of the model server (as in a container's env)."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                f"!(self.name in {json.dumps(sorted(OWNED_ENV))})",
                "is set by the operator",
                messageExpression="self.name + ' is set by the operator: ' + "
                + "{"
                + ", ".join(f"{_cel_string(k)}: {_cel_string(v)}" for k, v in OWNED_ENV.items())
                + "}[self.name]",
                fieldPath=".name",
                reason="FieldValueForbidden",
            )
        )
    )

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Name of the variable; not one the operator sets (PORT, HOST, MODEL_NAME, or one that a
    spec.server field sets)."""
    value: str | None = None
    """The value."""
    value_from: FreeForm | None = None
    """Where to read the value from instead (a Kubernetes EnvVarSource: secretKeyRef,
    configMapKeyRef, fieldRef, resourceFieldRef)."""

    @field_validator("name")
    @classmethod
    def _not_owned(cls, name: str) -> str:
        if name in OWNED_ENV:
            raise ValueError(f"{name} is set by the operator: {OWNED_ENV[name]}")
        return name


class Autoscaling(_Model):
    """A HorizontalPodAutoscaler on the pods' CPU; while set, it owns the replica count."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "self.minReplicas <= self.maxReplicas",
                "must not exceed maxReplicas",
                fieldPath=".minReplicas",
            )
        )
    )

    min_replicas: int = Field(default=1, ge=1)
    """The fewest pods."""
    max_replicas: int = Field(ge=1)
    """The most pods (required)."""
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=1000, alias="targetCPUUtilizationPercentage"
    )
    """The average CPU use, in percent of resources.requests.cpu, that the HPA aims for."""

    @model_validator(mode="after")
    def _min_not_above_max(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise FieldError(
                "minReplicas",
                f"{self.min_replicas} must not exceed maxReplicas ({self.max_replicas})",
            )
        return self


DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "2Gi"},
}


def _amount(value: object) -> Decimal | None:
    """The quantity as a number, or None if it is not one (its own validation says why)."""
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, ArithmeticError):
        return None


def _is_extended(name: str) -> bool:
    """Kubernetes' rule: a resource outside kubernetes.io with a domain, such as nvidia.com/gpu.

    These cannot be overcommitted: a request needs an equal limit."""
    return "/" in name and "kubernetes.io/" not in name


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
        theirs, ours = _amount(bound.get(name)), _amount(default)
        clamp = theirs is not None and ours is not None and keep(theirs, ours) != ours
        out[name] = bound[name] if clamp else default
    return out


# `string()` makes integers and strings comparable; `quantity()` compares 1Gi with 1024Mi.
_EXTENDED = "k.contains('/') && !k.contains('kubernetes.io/')"
_RESOURCES_RULES = [
    _cel(
        f"!has(self.requests) || self.requests.all(k, !({_EXTENDED}) || "
        "(has(self.limits) && k in self.limits && string(self.limits[k]) == "
        "string(self.requests[k])))",
        "an extended resource such as nvidia.com/gpu needs a limit equal to its request (it "
        "cannot be overcommitted)",
        fieldPath=".limits",
    ),
    _cel(
        "!has(self.requests) || !has(self.limits) || self.limits.all(k, !(k in self.requests) || "
        "!isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || "
        "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
        "a request must not exceed its limit",
        fieldPath=".requests",
    ),
]


class Resources(_Model):
    """CPU, memory and other resources of each pod, as in a container's resources.

    A partial block is merged with the defaults key by key; a default never contradicts a
    value you set (a default limit below your request rises to it, a default request above
    your limit falls to it)."""

    model_config = ConfigDict(json_schema_extra=_validations(*_RESOURCES_RULES))

    requests: dict[str, Quantity] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 16}
    )
    """Amounts reserved for each pod, by resource name (cpu, memory, nvidia.com/gpu, ...);
    cpu 500m and memory 1Gi unless set."""
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

    @model_validator(mode="after")
    def _limits_hold(self) -> "Resources":
        for name, request in self.requests.items():
            limit = self.limits.get(name)
            if limit is None:
                if _is_extended(name):
                    raise FieldError(
                        f"limits.{name}",
                        f"is required: the request ({request}) of an extended resource needs an "
                        "equal limit (it cannot be overcommitted)",
                    )
                continue
            asked, most = _amount(request), _amount(limit)
            if _is_extended(name) and asked != most:
                raise FieldError(
                    f"requests.{name}", f"{request} must equal limits.{name} ({limit})"
                )
            if asked is not None and most is not None and asked > most:
                raise FieldError(
                    f"requests.{name}", f"{request} must not exceed limits.{name} ({limit})"
                )
        return self


def _cidr(text: str) -> str:
    """What the Service would refuse (e.g. 999.0.0.0/8), refused before any child is made."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a CIDR such as 10.0.0.0/8") from exc
    return text


class ServiceSpec(_Model):
    """The Service in front of the pods."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!has(self.loadBalancerSourceRanges) || "
                "size(self.loadBalancerSourceRanges) == 0 || self.type == 'LoadBalancer'",
                "only applies to type LoadBalancer",
                fieldPath=".loadBalancerSourceRanges",
            )
        )
    )

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
            AfterValidator(_cidr),
            WithJsonSchema(
                {
                    "type": "string",
                    "pattern": r"^[0-9a-fA-F:.]+/[0-9]{1,3}$",
                    "maxLength": 64,
                    **_validations(_cel("isCIDR(self)", "must be a CIDR such as 10.0.0.0/8")),
                }
            ),
        ]
    ] = Field(default_factory=list, json_schema_extra={"maxItems": 64})
    """CIDR ranges allowed to reach a LoadBalancer (all when empty)."""

    @model_validator(mode="after")
    def _source_ranges_need_load_balancer(self) -> "ServiceSpec":
        if self.load_balancer_source_ranges and self.type != "LoadBalancer":
            raise FieldError(
                "loadBalancerSourceRanges",
                f"only applies to type LoadBalancer, not {self.type}",
            )
        return self


class ServerSettings(_Model):
    """Model-server tuning, passed through as the server's environment variables."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!has(self.maxQueue) || self.maxQueue == 0 || self.maxQueue < self.threads",
                "must be below threads, or 0",
                fieldPath=".maxQueue",
            )
        )
    )

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

    @model_validator(mode="after")
    def _queue_below_threads(self) -> "ServerSettings":
        """The server refuses to start otherwise: say so here rather than crash-loop the pod."""
        if self.max_queue and self.max_queue >= self.threads:
            raise FieldError(
                "maxQueue", f"{self.max_queue} must be below threads ({self.threads}), or 0"
            )
        return self


class Runtime(_Model):
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


# Where a model (or its labels) may come from. Each rule is checked by CEL in the CRD (so
# `kubectl apply` refuses it) and by `_check_uri` (for objects stored before the rule).
REMOTE_SCHEMES = ("s3", "gs", "https")
LOCAL_SCHEMES = ("pvc", "file")
URI_MAX_LENGTH = 2048
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
MODEL_FORMATS = {".keras": "keras", ".tflite": "tflite", ".xml": "openvino"}
LABEL_SUFFIXES = (".txt", ".json")


@dataclass(frozen=True)
class _UriRule:
    """`pattern` must match (or, with `forbid`, must not) a URI starting with `prefix`."""

    prefix: str
    pattern: str
    message: str
    forbid: bool = False

    def cel(self, field: str, optional: bool = False) -> JsonDict:
        """The rule on the object holding `field`: a rule on the string itself would make the
        API server echo the URI, credentials and all, in its refusal."""
        uri = f"self.{field}"
        test = f"{uri}.matches({_cel_string(self.pattern)})"
        test = f"!{test}" if self.forbid else test
        if self.prefix:
            test = f"!{uri}.startsWith({_cel_string(self.prefix)}) || {test}"
        rule = f"!has({uri}) || {test}" if optional else test
        return _cel(rule, self.message, fieldPath=f".{field}")

    def broken_by(self, uri: str) -> bool:
        if not uri.startswith(self.prefix):
            return False
        return bool(re.search(self.pattern, uri)) == self.forbid


_URI_RULES = (
    _UriRule(
        "",
        "^(" + "|".join(REMOTE_SCHEMES + LOCAL_SCHEMES) + ")://",
        "must start with s3://, gs://, https://, pvc:// or file://",
    ),
    _UriRule(
        "",
        r"^[a-z0-9]+://[^/@]*(/|$)",
        "must not carry credentials (user:password@): name a Secret in credentialsSecret",
    ),
    _UriRule("s3://", r"^s3://[^/?#]+/[^?#]+$", "expected s3://BUCKET/KEY"),
    _UriRule("gs://", r"^gs://[^/?#]+/[^?#]+$", "expected gs://BUCKET/KEY"),
    _UriRule("https://", r"^https://[^/?#]+/[^#]+$", "expected https://HOST/PATH"),
    _UriRule(
        "pvc://",
        rf"^pvc://{_DNS_SUBDOMAIN}/[^?#]+$",
        "pvc:// needs a claim name and a path: pvc://CLAIM-NAME/PATH",
    ),
    _UriRule("file://", r"^file:///[^?#]+$", "expected file:///ABSOLUTE/PATH"),
    _UriRule("", r"/\.\.(/|$)", "must not climb out of its volume or bucket with ..", forbid=True),
    _UriRule("", r"/(\?[^#]*)?$", "must name a file, not end in /", forbid=True),
)


def _check_uri(uri: str) -> str:
    broken = [rule.message for rule in _URI_RULES if rule.broken_by(uri)]
    if broken:
        raise ValueError(f"{redacted(uri)!r} {broken[0]}")
    return uri


SourceUri = Annotated[
    str,
    Field(min_length=1, max_length=URI_MAX_LENGTH),
    AfterValidator(_check_uri),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": URI_MAX_LENGTH,
        }
    ),
]
"""A URI the fetcher (or a volume mount) can take (its CEL rules are ModelSource's)."""


def redacted(uri: str) -> str:
    """A URI fit for a status or a message: no user:password@, no query (a presigned URL's
    signature)."""
    uri = re.sub(r"^([^:/?#]*://)[^/?#]*@", r"\1", uri)
    return re.sub(r"\?.*", "?…", uri, flags=re.DOTALL)


def file_name(uri: str) -> str:
    """The URI's last path segment, unquoted, without the query: `v2.tflite`."""
    return unquote(uri.split("?", 1)[0].rsplit("/", 1)[-1])


def suffix_of(uri: str) -> str:
    """The extension of the URI's file name, e.g. `.tflite` (empty if it has none)."""
    name = file_name(uri)
    return "." + name.rsplit(".", 1)[1] if "." in name else ""


def _has_suffix(field: str, suffixes: Iterable[str]) -> str:
    """CEL: the URI in `field` ends in one of `suffixes` (before any query)."""
    alternatives = "|".join(re.escape(suffix.removeprefix(".")) for suffix in suffixes)
    pattern = rf"\.({alternatives})(\?.*)?$"
    return f"self.{field}.matches({_cel_string(pattern)})"


_REMOTE = "^(" + "|".join(REMOTE_SCHEMES) + ")://"
_HAS_REMOTE = (
    f"self.storageUri.matches({_cel_string(_REMOTE)}) || "
    f"(has(self.labelsUri) && self.labelsUri.matches({_cel_string(_REMOTE)}))"
)


class ModelSource(_Model):
    """A model file to serve instead of the built-in model (KServe's storageUri).

    s3://, gs:// and https:// sources are downloaded by an init container (the server image's
    `modelserver fetch`) into an emptyDir; pvc:// mounts the claim read-only and file:// is a
    path in the image, neither copied."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            *(rule.cel("storageUri") for rule in _URI_RULES),
            *(rule.cel("labelsUri", optional=True) for rule in _URI_RULES),
            _cel(
                f"has(self.format) || {_has_suffix('storageUri', MODEL_FORMATS)}",
                "cannot tell the format from the URI's extension: set format",
                fieldPath=".format",
            ),
            _cel(
                f"!has(self.labelsUri) || {_has_suffix('labelsUri', LABEL_SUFFIXES)}",
                "must name a .txt (one label a line) or .json labels file",
                fieldPath=".labelsUri",
            ),
            _cel(
                f"!has(self.sha256) || self.storageUri.matches({_cel_string(_REMOTE)})",
                "is checked while downloading: pvc:// and file:// models are not downloaded",
                fieldPath=".sha256",
            ),
            _cel(
                f"!has(self.credentialsSecret) || {_HAS_REMOTE}",
                "is only used to download from s3://, gs:// or https://",
                fieldPath=".credentialsSecret",
            ),
        )
    )

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
        default=None, max_length=253, pattern=f"^{_DNS_SUBDOMAIN}$"
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
        return self.storage_uri.split("://", 1)[0]

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
    def _consistent(self) -> "ModelSource":
        suffix = suffix_of(self.storage_uri)
        if self.format is None and suffix not in MODEL_FORMATS:
            raise FieldError(
                "format",
                f"cannot tell the format from the URI's extension ({suffix or 'none'}): set "
                "format (keras, tflite or openvino)",
            )
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
        if self.labels_uri is not None and suffix_of(self.labels_uri) not in LABEL_SUFFIXES:
            raise FieldError(
                "labelsUri", "must name a .txt (one label a line) or .json labels file"
            )
        remote = self.scheme in REMOTE_SCHEMES
        if self.sha256 is not None and not remote:
            raise FieldError(
                "sha256",
                "is checked while downloading: pvc:// and file:// models are not downloaded",
            )
        labels_remote = self.labels_uri is not None and self.labels_uri.split("://")[0] in (
            REMOTE_SCHEMES
        )
        if self.credentials_secret is not None and not (remote or labels_remote):
            raise FieldError(
                "credentialsSecret", "is only used to download from s3://, gs:// or https://"
            )
        return self


# Scheduling: Kubernetes' own Affinity types, typed so that a misspelt key is an error (a
# free-form object would silently drop it) and so that the CRD documents them.


class _Strict(_Model):
    """Unknown keys are errors: the API server prunes them from new objects, and the operator
    refuses them in an object stored while `affinity` was still free-form."""

    model_config = ConfigDict(extra="forbid")


class NodeSelectorRequirement(_Strict):
    """A requirement on a node's labels or fields."""

    key: str
    """The label (or field) key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the key relates to the values."""
    values: list[str] | None = None
    """The values; non-empty for In and NotIn, one integer for Gt and Lt, empty otherwise."""


class NodeSelectorTerm(_Strict):
    """Requirements that must all hold (an empty term matches no node)."""

    match_expressions: list[NodeSelectorRequirement] | None = None
    """Requirements on the node's labels."""
    match_fields: list[NodeSelectorRequirement] | None = None
    """Requirements on the node's fields."""


class NodeSelector(_Strict):
    """Terms of which at least one must match."""

    node_selector_terms: list[NodeSelectorTerm]
    """The terms, ORed."""


class PreferredSchedulingTerm(_Strict):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100)
    """Weight of this preference, 1-100."""
    preference: NodeSelectorTerm
    """The nodes preferred."""


class NodeAffinity(_Strict):
    """Which nodes the pods may or prefer to run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes the pods must run on."""
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        None
    )
    """Nodes the scheduler prefers, by weight."""


class LabelSelectorRequirement(_Strict):
    """A requirement on a label."""

    key: str
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] | None = None
    """The values; non-empty for In and NotIn, empty for Exists and DoesNotExist."""


class LabelSelector(_Strict):
    """A label query; its requirements are ANDed, and an empty one matches everything."""

    match_labels: dict[str, str] | None = None
    """Labels that must have exactly these values."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Requirements on the labels."""


class PodAffinityTerm(_Strict):
    """Pods (selected by labels, in some namespaces) to run near, or away from."""

    label_selector: LabelSelector | None = None
    """The pods; none when unset."""
    namespace_selector: LabelSelector | None = None
    """Namespaces to look in, by label (added to namespaces)."""
    namespaces: list[str] | None = None
    """Namespaces to look in, by name; the classifier's when both this and
    namespaceSelector are unset."""
    topology_key: str = Field(min_length=1)
    """The node label that defines "near", e.g. kubernetes.io/hostname or
    topology.kubernetes.io/zone."""
    match_label_keys: list[str] | None = None
    """Label keys whose values, taken from the incoming pod, are added to labelSelector."""
    mismatch_label_keys: list[str] | None = None
    """Label keys whose values, taken from the incoming pod, must differ."""


class WeightedPodAffinityTerm(_Strict):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100)
    """Weight of this preference, 1-100."""
    pod_affinity_term: PodAffinityTerm
    """The pods."""


class PodAffinity(_Strict):
    """Pods to run near (same node, zone, ...)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    """Terms that must all hold."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )
    """Terms the scheduler prefers, by weight."""


class PodAntiAffinity(_Strict):
    """Pods to run away from (another node, zone, ...)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    """Terms that must all hold."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )
    """Terms the scheduler prefers, by weight."""


class Affinity(_Strict):
    """Scheduling constraints of the pods, as in a Pod's affinity."""

    node_affinity: NodeAffinity | None = None
    """Which nodes the pods may or prefer to run on."""
    pod_affinity: PodAffinity | None = None
    """Which pods to run near."""
    pod_anti_affinity: PodAntiAffinity | None = None
    """Which pods to run away from."""


_EMPTY_DEFAULT: dict[str, Any] = {"default": {}}


class ImageClassifierSpec(_Model):
    """The desired state of one classifier; every field has a default except autoscaling."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            _cel(
                "!has(self.podLabels) || "
                f"self.podLabels.all(k, !k.startsWith({_cel_string(RESERVED_LABEL_PREFIX)}))",
                f"must not set operator-owned labels ({RESERVED_LABEL_PREFIX}*)",
                fieldPath=".podLabels",
            ),
            _cel(
                "!has(self.server) || !has(self.service) || !self.server.grpc || "
                "self.service.port != self.service.grpcPort",
                "must differ from service.grpcPort while server.grpc is on",
                fieldPath=".service.port",
            ),
        )
    )

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

    @field_validator("pod_labels")
    @classmethod
    def _labels_not_reserved(cls, labels: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in labels if k.startswith(RESERVED_LABEL_PREFIX))
        if reserved:
            raise ValueError(f"must not set operator-owned labels: {', '.join(reserved)}")
        return labels

    @model_validator(mode="after")
    def _backend_runs_the_format(self) -> "ImageClassifierSpec":
        source = self.model_source
        if source and source.model_format == "openvino" and self.runtime.backend == "tensorflow":
            raise FieldError(
                "runtime.backend", "tensorflow cannot run an OpenVINO IR: use auto or openvino"
            )
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> "ImageClassifierSpec":
        if self.server.grpc and self.service.port == self.service.grpc_port:
            raise FieldError(
                "service.port",
                f"{self.service.port} must differ from service.grpcPort while server.grpc is on",
            )
        return self

    @model_validator(mode="after")
    def _autoscaling_needs_cpu(self) -> "ImageClassifierSpec":
        if self.autoscaling is not None and not _amount(self.resources.requests.get("cpu", 0)):
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
    if len(name) > NAME_MAX_LENGTH or not re.match(NAME_PATTERN, name):
        raise InvalidSpec(f"metadata.name: {name!r} {NAME_RULE}")


def describe_errors(exc: ValidationError) -> str:
    """One line per error, each naming the offending field as `spec.a[0].b`."""
    lines = []
    for error in exc.errors():
        path = "spec"
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            path += f".{cause.field}"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


class InvalidSpec(ValueError):
    """A spec that passed the CRD schema but breaks a rule only the operator checks."""
