"""A child the API server refuses: one sentence naming the classifier's field, not raw JSON.

The causes are the API server's own (Kubernetes 1.36, captured with dry-run creates).
"""

import json

import pytest
from kubeclassify_operator.rejections import describe_rejection, spec_field
from operators import Namespace


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
    message = describe_rejection("Service", "resnet.v2", SERVICE_NAME_WITH_DOT)
    assert message == (
        'the API server rejected the Service resnet.v2: metadata.name: Invalid value: "resnet.v2": '
        "must not contain dots"
    )


def test_each_cause_names_the_classifier_field_it_came_from() -> None:
    message = describe_rejection("Deployment", "resnet", DEPLOYMENT_TWO_CAUSES.encode())
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
        describe_rejection("Service", "s", body)
        == f"the API server rejected the Service s: {expected}"
    )


@pytest.mark.parametrize(
    ("kind", "child_field", "field"),
    [
        ("Deployment", "spec.template.spec.affinity.nodeAffinity", "spec.affinity.nodeAffinity"),
        ("Deployment", "spec.template.spec.containers[0].env[2].name", "spec.env[2].name"),
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
    assert spec_field(kind, child_field) == field


def test_an_unmapped_field_is_named_as_the_childs() -> None:
    body = status(
        "Deployment",
        "d",
        ("spec.strategy.rollingUpdate.maxSurge", "Invalid value: 0: must be positive"),
    )
    assert describe_rejection("Deployment", "d", body).endswith(
        "Deployment field spec.strategy.rollingUpdate.maxSurge: Invalid value: 0: must be positive"
    )


def test_a_name_the_crd_once_allowed_is_refused_before_any_child(ns: Namespace) -> None:
    """A classifier stored before the CRD's name rule (the emulator, like an older CRD, takes
    any name): the operator refuses it before making a Deployment that the Service, refused
    later, would have left alone."""
    ns.create_classifier("resnet.v2", {})
    cond = ns.wait_condition("resnet.v2", "Ready", "False", "InvalidSpec")
    assert cond["message"].startswith("metadata.name: 'resnet.v2' must be a DNS-1035 label")
    assert ns.get("deployments", "resnet.v2") is None
    assert ns.get("services", "resnet.v2") is None
