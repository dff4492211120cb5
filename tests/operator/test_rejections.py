"""A child the API server refuses: one sentence naming the classifier's field, not raw JSON.

The causes are the API server's own (Kubernetes 1.36, captured with dry-run creates).
"""

import json
from typing import Any

import pytest
from kubeclassify_operator.builders import Owner, build_deployment
from kubeclassify_operator.rejections import describe_rejection, spec_field
from kubeclassify_operator.spec import parse_spec
from operators import Namespace

SPEC = parse_spec({})


def status(kind: str, name: str, *causes: tuple[str, str]) -> str:
    """A 422 `Status` body as the API server sends it, with these (field, message) causes."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f'{kind} "{name}" is invalid: [...]',
            "reason": "Invalid",
            "details": {
                "name": name,
                "kind": kind,
                "causes": [
                    {"reason": "FieldValueInvalid", "message": message, "field": field}
                    for field, message in causes
                ],
            },
            "code": 422,
        }
    )


SERVICE_NAME_WITH_DOT = status(
    "Service", "resnet.v2", ("metadata.name", 'Invalid value: "resnet.v2": must not contain dots')
)
DEPLOYMENT_TWO_CAUSES = status(
    "Deployment",
    "resnet",
    (
        "spec.template.spec.containers[0].resources.requests[cpu]",
        'Invalid value: "-1": must be greater than or equal to 0',
    ),
    (
        "spec.template.spec.nodeSelector",
        'Invalid value: "bad key!": name part must consist of alphanumeric characters',
    ),
)


def test_a_refused_service_name_is_one_sentence() -> None:
    message = describe_rejection("Service", "resnet.v2", SERVICE_NAME_WITH_DOT, SPEC)
    assert message == (
        'the API server rejected the Service resnet.v2: metadata.name: Invalid value: "resnet.v2": '
        "must not contain dots"
    )


def test_each_cause_names_the_classifier_field_it_came_from() -> None:
    message = describe_rejection("Deployment", "resnet", DEPLOYMENT_TWO_CAUSES.encode(), SPEC)
    assert message == (
        "the API server rejected the Deployment resnet: "
        'spec.resources.requests[cpu]: Invalid value: "-1": must be greater than or equal to 0 '
        "(the Deployment's spec.template.spec.containers[0].resources.requests[cpu]); "
        'spec.nodeSelector: Invalid value: "bad key!": name part must consist of alphanumeric '
        "characters (the Deployment's spec.template.spec.nodeSelector)"
    )
    assert "{" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # A Status without causes: its message, on one line.
        (
            '{"kind":"Status","message":"admission webhook \\"x\\" denied\\nthe request",'
            '"reason":"BadRequest","code":400}',
            'admission webhook "x" denied the request',
        ),
        # Not JSON (a proxy's page, say): quoted, on one line and bounded.
        ("<html>\n<body>Bad Request</body></html>", "<html> <body>Bad Request</body></html>"),
        ("x" * 1000, "x" * 297 + "..."),
        (None, "no reason given"),
    ],
)
def test_other_answers_stay_readable(body: str | None, expected: str) -> None:
    assert (
        describe_rejection("Service", "s", body, SPEC)
        == f"the API server rejected the Service s: {expected}"
    )


@pytest.mark.parametrize(
    ("kind", "child_field", "field"),
    [
        ("Deployment", "spec.template.spec.affinity.nodeAffinity", "spec.affinity.nodeAffinity"),
        ("Deployment", "spec.template.metadata.labels", "spec.podLabels"),
        ("Service", "metadata.annotations", "spec.service.annotations"),
        ("Service", "spec.ports[0].port", "spec.service.port"),
        ("HorizontalPodAutoscaler", "spec.maxReplicas", "spec.autoscaling.maxReplicas"),
        ("Deployment", "spec.template.spec.containersX", None),  # a prefix only on a boundary
        ("Deployment", "spec.strategy", None),  # not from the spec
        ("Unknown", "metadata.name", None),
    ],
)
def test_child_fields_map_back_to_the_spec(kind: str, child_field: str, field: str | None) -> None:
    assert spec_field(kind, child_field, SPEC) == field


def test_an_unmapped_field_is_named_as_the_childs() -> None:
    body = status(
        "Deployment",
        "d",
        ("spec.strategy.rollingUpdate.maxSurge", "Invalid value: 0: must be positive"),
    )
    assert describe_rejection("Deployment", "d", body, SPEC).endswith(
        "Deployment field spec.strategy.rollingUpdate.maxSurge: Invalid value: 0: must be positive"
    )


# A variable the spec's schema takes (valueFrom is free-form) and the API server refuses.
BAD_FIELD_REF = {"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.nowhere"}}}
# The API server's cause for it (Kubernetes 1.36, on the real plane below).
UNSUPPORTED = (
    'Invalid value: "metadata.nowhere": error converting fieldPath: field label not supported: '
    "metadata.nowhere"
)


def test_a_refused_variable_is_named_by_its_index_in_spec_env() -> None:
    """The operator's own variables come first in the container (11 of them by default), so
    the API server's env[11] is the user's spec.env[0]; the operator's env[0] is no spec.env
    entry, and is named as the Deployment's field."""
    spec = parse_spec({"env": [BAD_FIELD_REF]})
    fields = [
        f"spec.template.spec.containers[0].env[{i}].valueFrom.fieldRef.fieldPath" for i in (11, 0)
    ]
    body = status("Deployment", "cats", *((field, UNSUPPORTED) for field in fields))
    assert describe_rejection("Deployment", "cats", body, spec) == (
        "the API server rejected the Deployment cats: "
        f"spec.env[0].valueFrom.fieldRef.fieldPath: {UNSUPPORTED} (the Deployment's {fields[0]}); "
        f"Deployment field {fields[1]}: {UNSUPPORTED}"
    )


USER_ENV = [{"name": "A", "value": "1"}, BAD_FIELD_REF, {"name": "C", "value": "3"}]


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"server": {"maxQueue": 8, "page": False, "grpc": False}},
        {
            "modelSource": {
                "storageUri": "s3://models/cats.tflite",
                "labelsUri": "s3://models/cats.txt",
            }
        },
    ],
)
def test_each_containers_variable_maps_to_the_spec_env_entry_it_came_from(
    spec: dict[str, Any],
) -> None:
    """How many variables the operator sets depends on the spec: the map follows the builder."""
    parsed = parse_spec({**spec, "env": USER_ENV})
    deployment = build_deployment(Owner("cats", "ns", "uid"), parsed)
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    mapped = {
        index: spec_field(
            "Deployment", f"spec.template.spec.containers[0].env[{index}].name", parsed
        )
        for index in range(len(env))
    }
    users = {index: field for index, field in mapped.items() if field is not None}
    assert list(users.values()) == [f"spec.env[{i}].name" for i in range(len(USER_ENV))]
    assert [env[index] for index in users] == USER_ENV


def test_a_name_the_crd_once_allowed_is_refused_before_any_child(ns: Namespace) -> None:
    """A classifier stored before the CRD's name rule (the emulator, like an older CRD, takes
    any name): the operator refuses it before making a Deployment that the Service, refused
    later, would have left alone."""
    ns.create_classifier("resnet.v2", {})
    cond = ns.wait_condition("resnet.v2", "Ready", "False", "InvalidSpec")
    assert cond["message"].startswith("metadata.name: 'resnet.v2' must be a DNS-1035 label")
    assert ns.get("deployments", "resnet.v2") is None
    assert ns.get("services", "resnet.v2") is None


def test_a_refused_variable_is_named_on_a_real_api_server(plane_ns: Namespace) -> None:
    """The API server's own refusal of the user's variable names spec.env[1], not the
    container's index of it."""
    plane_ns.create_classifier("where", {"env": USER_ENV})
    cond = plane_ns.wait_condition("where", "Ready", "False", "InvalidSpec", timeout=30)
    assert cond["message"] == (
        "the API server rejected the Deployment where: spec.env[1].valueFrom.fieldRef.fieldPath: "
        f"{UNSUPPORTED} (the Deployment's "
        "spec.template.spec.containers[0].env[12].valueFrom.fieldRef.fieldPath)"
    )
