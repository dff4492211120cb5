"""Generate the ImageClassifier CRD from the pydantic models (the single source of truth).

Pydantic emits JSON Schema with `$ref`s, titles and `anyOf [X, null]`; Kubernetes wants a
structural schema, so `structural()` inlines references and drops what the API rejects.
"""

from typing import Any

import yaml

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
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        else:
            out[key] = structural(value, defs)
    return out


def _schema_of(model: type[ImageClassifierSpec] | type[ImageClassifierStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = structural(raw, raw.get("$defs", {}))
    return result


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
                            "Deployment behind a Service, kept as declared by an operator.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _schema_of(ImageClassifierStatus),
                            },
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
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
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
