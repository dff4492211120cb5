"""One readable sentence for a child the API server refused, naming the classifier's field.

The API answers a refused write with a JSON `Status`; its `details.causes` name the child's
fields (`spec.template.spec.containers[0].resources.requests[cpu]`), which the user never
wrote: each is translated back to the classifier's field where the builders put it there.
"""

import json
from typing import Any

from kubeclassify_operator.children import BY_KIND
from kubeclassify_operator.spec import ImageClassifierSpec

# A body that is not a Status is quoted up to this many characters.
MAX_RAW = 300


def spec_field(kind: str, child_field: str, spec: ImageClassifierSpec) -> str | None:
    """The classifier field that became `child_field` of this spec's child of this kind, if
    any (see `children.ChildKind.spec_fields`)."""
    child = BY_KIND.get(kind)
    for prefix, field in (child.spec_fields(spec) if child else {}).items():
        if child_field == prefix or child_field.startswith((f"{prefix}.", f"{prefix}[")):
            return field + child_field[len(prefix) :]
    return None


def describe_rejection(
    kind: str, name: str, body: str | bytes | None, spec: ImageClassifierSpec
) -> str:
    """`the API server rejected the Service a.b: metadata.name: Invalid value: ...`, for a
    child built from `spec`."""
    status = _status(body)
    reasons: list[str] = []
    for cause in (status.get("details") or {}).get("causes") or []:
        reason = _cause(kind, cause, spec) if isinstance(cause, dict) else None
        if reason and reason not in reasons:
            reasons.append(reason)
    if not reasons:
        text = status.get("message") or _raw(body) or "no reason given"
        reasons.append(" ".join(str(text).split()))
    return f"the API server rejected the {kind} {name}: {'; '.join(reasons)}"


def _cause(kind: str, cause: dict[str, Any], spec: ImageClassifierSpec) -> str | None:
    """`spec.resources.requests[cpu]: Invalid value: "-1": must be ... (Deployment field ...)`."""
    message = " ".join(str(cause.get("message") or cause.get("reason") or "").split())
    child_field = cause.get("field")
    if not child_field:
        return message or None
    field = spec_field(kind, child_field, spec)
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
