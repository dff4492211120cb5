"""Generate the ImageClassifier CRD from the pydantic models (the single source of truth).

Pydantic emits JSON Schema with `$ref`s, titles and `anyOf [X, null]`; Kubernetes wants a
structural schema, so `structural()` inlines references and drops what the API rejects.
Each field's description (its docstring in the model) says its default, because
`kubectl explain` shows descriptions but not defaults.
"""

import json
from typing import Any

import yaml

from kubeclassify_operator.rules import CLASSIFIER_NAME, NAME_RULE
from kubeclassify_operator.spec import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ImageClassifierSpec,
)
from kubeclassify_operator.status import READY, ImageClassifierStatus

HEADER = "# Generated from the pydantic spec by `python -m kubeclassify_operator crd`.\n"


def structural(schema: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s, unwrap optionals, and drop keys a structural schema forbids."""
    if isinstance(schema, list):
        return [structural(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return structural({**target, **rest}, defs)
    options = schema.get("anyOf", [])
    non_null = [opt for opt in options if opt != {"type": "null"}]
    if options and len(non_null) == 1:  # Optional[X]: the field is simply not required
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return structural({**non_null[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in {"title", "$defs"} or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and value is False:
            continue  # unknown fields are pruned, or refused by `kubectl apply`, anyway
        if key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = _prose(value)
        elif key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        else:
            out[key] = structural(value, defs)
    if out.get("default") and "description" in out:
        out["description"] = f"{out['description']} Defaults to {_compact(out['default'])}."
    return out


def _prose(docstring: str) -> str:
    """A docstring as `kubectl explain` should show it: the lines of a paragraph joined."""
    paragraphs = docstring.strip().split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _compact(value: Any) -> str:
    """A default as one short line of JSON: `80`, `"LoadBalancer"`, `{"cpu": "500m"}`."""
    return json.dumps(value, separators=(", ", ": "))


def _schema_of(model: type[ImageClassifierSpec] | type[ImageClassifierStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = structural(raw, raw.get("$defs", {}))
    return result


_API_VERSION = (
    "APIVersion defines the versioned schema of this representation of an object. "
    "Servers should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values."
)
_KIND = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. In CamelCase."
)
# A CRD may declare no more of metadata (not even a description); declaring `name` lets a
# CEL rule's fieldPath point at it.
_METADATA = {"type": "object", "properties": {"name": {"type": "string"}}}


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest, including the status and scale subresources."""
    spec_schema = _schema_of(ImageClassifierSpec)
    spec_schema["default"] = {}
    ready = f'.status.conditions[?(@.type=="{READY}")]'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An image classification service: a model server "
                            "Deployment behind a Service, kept as declared by an operator. "
                            f"The classifier's name {NAME_RULE}.",
                            "properties": {
                                "apiVersion": {"type": "string", "description": _API_VERSION},
                                "kind": {"type": "string", "description": _KIND},
                                "metadata": _METADATA,
                                "spec": spec_schema,
                                "status": _schema_of(ImageClassifierStatus),
                            },
                            "x-kubernetes-validations": [CLASSIFIER_NAME.validation()],
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {
                            "name": "Model",
                            "type": "string",
                            "jsonPath": ".status.model.summary",
                        },
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
                        {
                            "name": "Canary",
                            "type": "integer",
                            "description": "The canary's share of the requests, in percent",
                            "jsonPath": ".status.canary.trafficPercent",
                        },
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
                        {"name": "Status", "type": "string", "jsonPath": f"{ready}.reason"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML text checked in at crds/imageclassifier.yaml."""
    text: str = yaml.safe_dump(build_crd(), sort_keys=False, width=100)
    return HEADER + text
