"""One readable sentence for a child the API server refused, naming the classifier's field.

The API answers a refused write with a JSON `Status`; its `details.causes` name the child's
fields (`spec.template.spec.containers[0].resources.requests[cpu]`), which the user never
wrote: each is translated back to the classifier's field where the builders put it there.
"""

import json
from typing import Any

# Where the builders put each spec field in a child, by child kind: child path -> spec path.
SPEC_FIELDS = {
    "Deployment": {
        "metadata.name": "metadata.name",
        "spec.replicas": "spec.replicas",
        "spec.template.metadata.annotations": "spec.podAnnotations",
        "spec.template.metadata.labels": "spec.podLabels",
        "spec.template.spec.containers[0].env": "spec.env",
        "spec.template.spec.containers[0].image": "spec.image",
        "spec.template.spec.containers[0].imagePullPolicy": "spec.imagePullPolicy",
        "spec.template.spec.containers[0].resources": "spec.resources",
        "spec.template.spec.affinity": "spec.affinity",
        "spec.template.spec.imagePullSecrets": "spec.imagePullSecrets",
        "spec.template.spec.nodeSelector": "spec.nodeSelector",
        "spec.template.spec.tolerations": "spec.tolerations",
    },
    "Service": {
        "metadata.name": "metadata.name",
        "metadata.annotations": "spec.service.annotations",
        "spec.loadBalancerSourceRanges": "spec.service.loadBalancerSourceRanges",
        "spec.ports[0].port": "spec.service.port",
        "spec.type": "spec.service.type",
    },
    "HorizontalPodAutoscaler": {
        "metadata.name": "metadata.name",
        "spec.minReplicas": "spec.autoscaling.minReplicas",
        "spec.maxReplicas": "spec.autoscaling.maxReplicas",
        "spec.metrics": "spec.autoscaling.targetCPUUtilizationPercentage",
    },
}
# A body that is not a Status is quoted up to this many characters.
MAX_RAW = 300


def spec_field(kind: str, child_field: str) -> str | None:
    """The classifier field that became `child_field` of a child of this kind, if any."""
    for prefix, field in SPEC_FIELDS.get(kind, {}).items():
        if child_field == prefix or child_field.startswith((f"{prefix}.", f"{prefix}[")):
            return field + child_field[len(prefix) :]
    return None


def describe_rejection(kind: str, name: str, body: str | bytes | None) -> str:
    """`the API server rejected the Service a.b: metadata.name: Invalid value: ...`."""
    status = _status(body)
    reasons: list[str] = []
    for cause in (status.get("details") or {}).get("causes") or []:
        reason = _cause(kind, cause) if isinstance(cause, dict) else None
        if reason and reason not in reasons:
            reasons.append(reason)
    if not reasons:
        text = status.get("message") or _raw(body) or "no reason given"
        reasons.append(" ".join(str(text).split()))
    return f"the API server rejected the {kind} {name}: {'; '.join(reasons)}"


def _cause(kind: str, cause: dict[str, Any]) -> str | None:
    """`spec.resources.requests[cpu]: Invalid value: "-1": must be ... (Deployment field ...)`."""
    message = " ".join(str(cause.get("message") or cause.get("reason") or "").split())
    child_field = cause.get("field")
    if not child_field:
        return message or None
    field = spec_field(kind, child_field)
    if field is None:
        return f"{kind} field {child_field}: {message}"
    if field == child_field:
        return f"{field}: {message}"
    return f"{field}: {message} (the {kind}'s {child_field})"


def _status(body: str | bytes | None) -> dict[str, Any]:
    try:
        parsed = json.loads(body or "")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _raw(body: str | bytes | None) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else body or ""
    text = " ".join(text.split())
    return text if len(text) <= MAX_RAW else text[: MAX_RAW - 3] + "..."
