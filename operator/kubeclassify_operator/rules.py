"""The rules a plain schema cannot express, each written once as a `Rule`.

A rule renders twice on purpose: as CEL in the CRD (`x-kubernetes-validations`, so `kubectl
apply` refuses it) and as a pydantic check (so the operator still refuses an object stored
before the rule existed, and reports `Ready=False, reason=InvalidSpec` with a message naming
the field). Both halves sit in one declaration, and tests/operator/test_plane_rules.py feeds the
same cases to the CRD on a real API server and to pydantic and checks that they agree.

The URI rules of spec.modelSource are in `uris`; the rules the operator alone checks (because
CEL cannot see what they need) are validators of the models in `spec`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Generic, TypeVar

from kubernetes.utils import parse_quantity
from pydantic import AfterValidator
from pydantic.config import JsonDict, JsonValue

from kubeclassify_operator.errors import FieldError

if TYPE_CHECKING:
    from kubeclassify_operator.spec import (
        Autoscaling,
        EnvVar,
        ImageClassifierSpec,
        Resources,
        ServerSettings,
        ServiceSpec,
    )

T = TypeVar("T")


def cel_string(text: str) -> str:
    """A CEL string literal (JSON's escaping is a subset CEL accepts)."""
    return json.dumps(text)


@dataclass(frozen=True)
class Rule(Generic[T]):
    """One rule on a `T` (a model, or a field's value): `cel` and `holds` are the same test,
    for the API server and for the operator, and `message` is what both say when it fails."""

    cel: str
    """The test in CEL, on `self` (the object whose schema carries it)."""
    holds: Callable[[T], bool]
    """The same test in Python."""
    message: str
    """Why the object is refused (the API server prefixes the field)."""
    field: str = ""
    """The field to blame, relative to `self` (camelCase): CEL's fieldPath, and the field of
    the operator's FieldError. Empty: the object itself."""
    explain: Callable[[T], str] | None = None
    """The operator's message, with the values that break the rule; `message` if unset."""
    message_expression: str | None = None
    """A CEL messageExpression, for a refusal that names the value (`message` is its fallback)."""
    reason: str | None = None
    """The API server's reason (FieldValueInvalid unless set)."""

    def validation(self) -> JsonDict:
        """The `x-kubernetes-validations` entry."""
        entry: JsonDict = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            entry["messageExpression"] = self.message_expression
        if self.field:
            entry["fieldPath"] = f".{self.field}"
        if self.reason:
            entry["reason"] = self.reason
        return entry

    def check(self, subject: T) -> T:
        """`subject` if the rule holds; else the error pydantic reports (at `field`)."""
        if self.holds(subject):
            return subject
        message = self.explain(subject) if self.explain else self.message
        raise FieldError(self.field, message) if self.field else ValueError(message)

    def validator(self) -> AfterValidator:
        """The check on a field's value, for `Annotated`."""
        return AfterValidator(self.check)


def validations(*entries: JsonDict) -> JsonDict:
    """The CEL rules of a schema node, for `json_schema_extra`."""
    listed: list[JsonValue] = [*entries]
    return {"x-kubernetes-validations": listed}


# Kubernetes' DNS-1123 subdomain (a Secret's or a claim's name, a key's prefix).
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"

# Every child takes the classifier's name, and the Service's is the strictest use of it: a
# DNS-1035 label (no dots, a letter first), which also fits the 63-character label values.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 63
NAME_RULE = (
    "must be a DNS-1035 label of at most 63 characters (lower-case letters, digits and '-', "
    "starting with a letter and ending with a letter or digit), because the classifier's "
    "Service and the app.kubernetes.io/instance label of its pods take this name"
)
# The API server validates `metadata.name` only as a DNS subdomain (dots, 253 characters): the
# rule is on the whole object, where CEL can see the name.
CLASSIFIER_NAME: Rule[str] = Rule(
    f"self.metadata.name.size() <= {NAME_MAX_LENGTH} && "
    f"self.metadata.name.matches({cel_string(NAME_PATTERN)})",
    lambda name: len(name) <= NAME_MAX_LENGTH and bool(re.match(NAME_PATTERN, name)),
    NAME_RULE,
    field="metadata.name",
    explain=lambda name: f"{name!r} {NAME_RULE}",
    reason="FieldValueInvalid",
)

# Kubernetes' rules for label and annotation keys (an optional DNS prefix, then a name of at
# most 63 characters). Checked here because the child that carries them is created after
# another: refused there, it would leave the classifier half made.
KEY_PATTERN = rf"^({DNS_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
KEY_MAX_LENGTH = 253 + 1 + 63  # prefix, '/', name
_KEY_RULE = (
    "is a name of at most 63 letters, digits, '-', '_' or '.' (starting and ending with a "
    "letter or digit), optionally after a DNS prefix and '/', such as example.com/team"
)
_VALID_KEY = f"size(k) <= {KEY_MAX_LENGTH} && k.matches({cel_string(KEY_PATTERN)})"


def _bad_keys(entries: dict[str, str]) -> list[str]:
    return [k for k in entries if len(k) > KEY_MAX_LENGTH or not re.match(KEY_PATTERN, k)]


VALID_KEYS: Rule[dict[str, str]] = Rule(
    f"self.all(k, {_VALID_KEY})",
    lambda entries: not _bad_keys(entries),
    f"a key {_KEY_RULE}",
    explain=lambda entries: f"key {_bad_keys(entries)[0]!r} is invalid: a key {_KEY_RULE}",
    message_expression=f"'key ' + self.filter(k, !({_VALID_KEY}))[0] + "
    f"{cel_string(' is invalid: a key ' + _KEY_RULE)}",
)
"""On a map of label or annotation keys."""


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


CIDR: Rule[str] = Rule(
    "isCIDR(self)",
    _is_cidr,
    "must be a CIDR such as 10.0.0.0/8",
    explain=lambda text: f"{text!r} is not a CIDR such as 10.0.0.0/8",
)
"""What the Service would refuse (e.g. 999.0.0.0/8), refused before any child is made."""

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

ENV_NOT_OWNED: Rule[EnvVar] = Rule(
    f"!(self.name in {json.dumps(sorted(OWNED_ENV))})",
    lambda var: var.name not in OWNED_ENV,
    "is set by the operator",
    field="name",
    explain=lambda var: f"{var.name} is set by the operator: {OWNED_ENV[var.name]}",
    message_expression="self.name + ' is set by the operator: ' + {"
    + ", ".join(f"{cel_string(k)}: {cel_string(v)}" for k, v in OWNED_ENV.items())
    + "}[self.name]",
    reason="FieldValueForbidden",
)

MIN_NOT_ABOVE_MAX: Rule[Autoscaling] = Rule(
    "self.minReplicas <= self.maxReplicas",
    lambda scaling: scaling.min_replicas <= scaling.max_replicas,
    "must not exceed maxReplicas",
    field="minReplicas",
    explain=lambda scaling: (
        f"{scaling.min_replicas} must not exceed maxReplicas ({scaling.max_replicas})"
    ),
)


def amount(value: object) -> Decimal | None:
    """The quantity as a number, or None if it is not one (its own validation says why)."""
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, ArithmeticError):
        return None


def _is_extended(name: str) -> bool:
    """Kubernetes' rule: a resource outside kubernetes.io with a domain, such as nvidia.com/gpu.

    These cannot be overcommitted: a request needs an equal limit."""
    return "/" in name and "kubernetes.io/" not in name


def _unequal_extended(resources: Resources) -> str | None:
    """The first extended resource whose limit is not its request."""
    return next(
        (
            name
            for name, request in resources.requests.items()
            if _is_extended(name)
            # As CEL compares them: 1 and "1" are equal, "1000m" and "1" are not.
            and str(resources.limits.get(name)) != str(request)
        ),
        None,
    )


def _explain_extended(resources: Resources) -> str:
    name = _unequal_extended(resources) or ""
    limit = resources.limits.get(name)
    return (
        f"{name} needs a limit equal to its request ({resources.requests[name]})"
        f"{'' if limit is None else f', not {limit}'}: an extended resource cannot be "
        "overcommitted"
    )


def _overcommitted(resources: Resources) -> str | None:
    """The first resource whose request exceeds its limit."""
    for name, request in resources.requests.items():
        asked, most = amount(request), amount(resources.limits.get(name))
        if asked is not None and most is not None and asked > most:
            return name
    return None


def _explain_overcommitted(resources: Resources) -> str:
    name = _overcommitted(resources) or ""
    return (
        f"the {name} request ({resources.requests[name]}) must not exceed its limit "
        f"({resources.limits[name]})"
    )


# `string()` makes integers and strings comparable; `quantity()` compares 1Gi with 1024Mi.
_EXTENDED = "k.contains('/') && !k.contains('kubernetes.io/')"
EXTENDED_LIMITS: Rule[Resources] = Rule(
    f"!has(self.requests) || self.requests.all(k, !({_EXTENDED}) || "
    "(has(self.limits) && k in self.limits && string(self.limits[k]) == "
    "string(self.requests[k])))",
    lambda resources: _unequal_extended(resources) is None,
    "an extended resource such as nvidia.com/gpu needs a limit equal to its request (it "
    "cannot be overcommitted)",
    field="limits",
    explain=_explain_extended,
)
REQUESTS_WITHIN_LIMITS: Rule[Resources] = Rule(
    "!has(self.requests) || !has(self.limits) || self.limits.all(k, !(k in self.requests) || "
    "!isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || "
    "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
    lambda resources: _overcommitted(resources) is None,
    "a request must not exceed its limit",
    field="requests",
    explain=_explain_overcommitted,
)

SOURCE_RANGES_NEED_LOAD_BALANCER: Rule[ServiceSpec] = Rule(
    "!has(self.loadBalancerSourceRanges) || "
    "size(self.loadBalancerSourceRanges) == 0 || self.type == 'LoadBalancer'",
    lambda service: not service.load_balancer_source_ranges or service.type == "LoadBalancer",
    "only applies to type LoadBalancer",
    field="loadBalancerSourceRanges",
    explain=lambda service: f"only applies to type LoadBalancer, not {service.type}",
)

QUEUE_BELOW_THREADS: Rule[ServerSettings] = Rule(
    "!has(self.maxQueue) || self.maxQueue == 0 || self.maxQueue < self.threads",
    lambda server: not server.max_queue or server.max_queue < server.threads,
    "must be below threads, or 0",
    field="maxQueue",
    explain=lambda server: f"{server.max_queue} must be below threads ({server.threads}), or 0",
)
"""The server refuses to start otherwise: say so here rather than crash-loop the pod."""

# Labels the operator owns on every child; users may not override them through podLabels.
RESERVED_LABEL_PREFIX = "app.kubernetes.io/"


def _reserved(labels: dict[str, str]) -> list[str]:
    return sorted(k for k in labels if k.startswith(RESERVED_LABEL_PREFIX))


LABELS_NOT_RESERVED: Rule[ImageClassifierSpec] = Rule(
    "!has(self.podLabels) || "
    f"self.podLabels.all(k, !k.startsWith({cel_string(RESERVED_LABEL_PREFIX)}))",
    lambda spec: not _reserved(spec.pod_labels),
    f"must not set operator-owned labels ({RESERVED_LABEL_PREFIX}*)",
    field="podLabels",
    explain=lambda spec: (
        f"must not set operator-owned labels: {', '.join(_reserved(spec.pod_labels))}"
    ),
)

PORTS_DIFFER: Rule[ImageClassifierSpec] = Rule(
    "!has(self.server) || !has(self.service) || !self.server.grpc || "
    "self.service.port != self.service.grpcPort",
    lambda spec: not spec.server.grpc or spec.service.port != spec.service.grpc_port,
    "must differ from service.grpcPort while server.grpc is on",
    field="service.port",
    explain=lambda spec: (
        f"{spec.service.port} must differ from service.grpcPort while server.grpc is on"
    ),
)
