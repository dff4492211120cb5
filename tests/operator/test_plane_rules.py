"""Each rule's two halves agree: the same classifiers, sent to a real API server (a dry run of
the CRD's CEL) and to the operator's pydantic checks, are accepted by both or refused by both,
and a refusal names the same field in both.

Every CEL rule of the CRD needs a refused case here (`test_every_rule_has_a_refused_case`), so a
new rule cannot skip the comparison.
"""

from typing import Any

import pytest
from kubeclassify_operator.crd import build_crd
from kubeclassify_operator.rules import (
    CIDR,
    CLASSIFIER_NAME,
    ENV_NOT_OWNED,
    EXTENDED_LIMITS,
    LABELS_NOT_RESERVED,
    MIN_NOT_ABOVE_MAX,
    PORTS_DIFFER,
    QUEUE_BELOW_THREADS,
    REQUESTS_WITHIN_LIMITS,
    SOURCE_RANGES_NEED_LOAD_BALANCER,
    VALID_KEYS,
    Rule,
)
from kubeclassify_operator.spec import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    InvalidSpec,
    check_name,
    parse_spec,
)
from kubeclassify_operator.uris import (
    CREDENTIALS_USED,
    FORMAT_KNOWN,
    LABELS_FILE,
    SHA256_DOWNLOADED,
    URI_RULES,
)
from operators import Cluster

SHA = "ab" * 32
NAME = "agree"

# A URI that breaks each of URI_RULES (and no other rule) as storageUri, and as labelsUri.
BAD_URIS = [
    ("ftp://host/m.keras", "ftp://host/l.txt"),
    ("https://alice:hunter2@host/m.keras", "https://alice:hunter2@host/l.txt"),
    ("s3://bucket-only.keras", "s3://bucket-only.txt"),
    ("gs://bucket-only.keras", "gs://bucket-only.txt"),
    ("https://host-only.keras", "https://host-only.txt"),
    ("pvc://Bad_Claim/m.keras", "pvc:///l.txt"),
    ("file://relative/m.keras", "file://relative/l.txt"),
    ("pvc://models/../m.keras", "s3://b/labels/../l.txt"),
    ("s3://b/models/", "https://host/labels/?x=1"),
]
assert len(BAD_URIS) == len(URI_RULES)


def source(**fields: str) -> dict[str, Any]:
    return {"modelSource": fields}


# (the rule the spec breaks, the spec); the classifier is named NAME.
REFUSED: list[tuple[Rule[Any], dict[str, Any]]] = [
    (MIN_NOT_ABOVE_MAX, {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
    (EXTENDED_LIMITS, {"resources": {"requests": {"nvidia.com/gpu": 1}}}),
    (
        EXTENDED_LIMITS,
        {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}},
    ),
    (
        REQUESTS_WITHIN_LIMITS,
        {"resources": {"requests": {"memory": "3Gi"}, "limits": {"memory": "2048Mi"}}},
    ),
    (REQUESTS_WITHIN_LIMITS, {"resources": {"requests": {"cpu": 2}, "limits": {"cpu": "1500m"}}}),
    (VALID_KEYS, {"podAnnotations": {"a/b/c": "x"}}),
    (VALID_KEYS, {"podAnnotations": {"a" * 64: "x"}}),
    (VALID_KEYS, {"nodeSelector": {"-x": "1"}}),
    (VALID_KEYS, {"podLabels": {"Bad.Prefix/team": "x"}}),
    (VALID_KEYS, {"service": {"annotations": {"ok": "1", "bad key!": "x"}}}),
    (CIDR, {"service": {"loadBalancerSourceRanges": ["10.0.0.0/8", "999.0.0.0/8"]}}),
    (CIDR, {"service": {"loadBalancerSourceRanges": ["10.0.0.0/99"]}}),
    (ENV_NOT_OWNED, {"env": [{"name": "EXTRA", "value": "1"}, {"name": "PORT", "value": "1"}]}),
    (ENV_NOT_OWNED, {"env": [{"name": "MODEL_FILE", "value": "/m.keras"}]}),
    (
        SOURCE_RANGES_NEED_LOAD_BALANCER,
        {"service": {"type": "ClusterIP", "loadBalancerSourceRanges": ["10.0.0.0/8"]}},
    ),
    (QUEUE_BELOW_THREADS, {"server": {"threads": 8, "maxQueue": 8}}),
    (LABELS_NOT_RESERVED, {"podLabels": {"team": "a", "app.kubernetes.io/instance": "b"}}),
    (PORTS_DIFFER, {"service": {"port": 8081}}),
    (PORTS_DIFFER, {"service": {"port": 9000, "grpcPort": 9000}}),
    *(
        (rule.on("storage_uri"), source(storageUri=storage, format="keras"))
        for rule, (storage, _) in zip(URI_RULES, BAD_URIS, strict=True)
    ),
    *(
        (
            rule.on("labels_uri", optional=True),
            source(storageUri="s3://b/m.keras", labelsUri=labels),
        )
        for rule, (_, labels) in zip(URI_RULES, BAD_URIS, strict=True)
    ),
    (FORMAT_KNOWN, source(storageUri="https://host/model")),
    (FORMAT_KNOWN, source(storageUri="https://h/m.onnx?v=1.keras")),
    (LABELS_FILE, source(storageUri="s3://b/m.keras", labelsUri="s3://b/labels.csv")),
    (LABELS_FILE, source(storageUri="s3://b/m.keras", labelsUri="https://h/l.csv?as=.txt")),
    (SHA256_DOWNLOADED, source(storageUri="pvc://models/m.keras", sha256=SHA)),
    (CREDENTIALS_USED, source(storageUri="file:///m.keras", credentialsSecret="s3")),
    (
        CREDENTIALS_USED,
        source(storageUri="pvc://c/m.keras", labelsUri="file:///l.txt", credentialsSecret="s3"),
    ),
]

# Specs at the edge of each rule, which both must accept.
ACCEPTED: list[dict[str, Any]] = [
    {"autoscaling": {"minReplicas": 2, "maxReplicas": 2}},
    {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": "1"}}},
    {"resources": {"limits": {"nvidia.com/gpu": 1}}},
    {"resources": {"requests": {"example.kubernetes.io/widget": 1}}},
    {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "2048Mi"}}},
    {"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1000m"}}},
    {"podAnnotations": {"example.com/owner": "x", "a" * 63: "y", "A_b.c-9": "z"}},
    {"nodeSelector": {"kubernetes.io/hostname": "node-1"}},
    {"service": {"loadBalancerSourceRanges": ["10.0.0.0/8", "2001:db8::/32", "10.1.2.3/32"]}},
    {"service": {"type": "ClusterIP", "loadBalancerSourceRanges": []}},
    {"env": [{"name": "HTTP_PROXY", "value": "x"}, {"name": "PORT_EXTRA", "value": "1"}]},
    {"server": {"threads": 8, "maxQueue": 7}},
    {"server": {"threads": 8, "maxQueue": 0}},
    {"podLabels": {"team": "vision", "example.com/app.kubernetes.io": "x"}},
    {"service": {"port": 8081}, "server": {"grpc": False}},
    {"service": {"port": 9000, "grpcPort": 9001}},
    source(
        storageUri="s3://models/cats/v3.tflite",
        labelsUri="s3://models/cats/labels.txt",
        sha256=SHA,
        credentialsSecret="s3-credentials",
    ),
    source(storageUri="gs://bucket/dir/m.keras"),
    source(storageUri="https://host/dl?X-Amz-Signature=s3cr3t", format="tflite"),
    source(storageUri="pvc://models.v2/cats/v3.keras", labelsUri="pvc://labels/cats.json"),
    source(storageUri="file:///opt/m.tflite", labelsUri="https://h/l.txt", credentialsSecret="w"),
]

REFUSED_NAMES = ["resnet.v2", "a" * 64, "9lives", "trailing-"]
ACCEPTED_NAMES = ["a" * 63, "resnet-50"]


def test_every_rule_has_a_refused_case() -> None:
    crd = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    in_crd = set(cel_rules(crd))
    covered = {rule.cel for rule, _ in REFUSED} | {CLASSIFIER_NAME.cel}
    assert in_crd == covered


def cel_rules(schema: Any) -> list[str]:
    """The CEL rules anywhere in `schema`."""
    if isinstance(schema, list):
        return [rule for item in schema for rule in cel_rules(item)]
    if not isinstance(schema, dict):
        return []
    own = [entry["rule"] for entry in schema.get("x-kubernetes-validations", [])]
    return own + [rule for value in schema.values() for rule in cel_rules(value)]


Refusal = tuple[set[str], str]
"""The fields named, and the whole message."""


def by_the_api_server(cluster: Cluster, name: str, spec: dict[str, Any]) -> Refusal | None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }
    response = cluster.session.post(
        f"{cluster.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}",
        params={"dryRun": "All"},
        json=body,
        timeout=10,
    )
    if response.status_code == 201:
        return None
    assert response.status_code == 422, response.text
    status = response.json()
    return {cause["field"] for cause in status["details"]["causes"]}, status["message"]


def by_the_operator(name: str, spec: dict[str, Any]) -> Refusal | None:
    try:
        check_name(name)
        parse_spec(spec)
    except InvalidSpec as exc:
        message = str(exc)
        return {line.split(": ", 1)[0] for line in message.split("; ")}, message
    return None


@pytest.mark.parametrize(("rule", "spec"), REFUSED)
def test_both_refuse_naming_the_same_field(
    plane_cluster: Cluster, rule: Rule[Any], spec: dict[str, Any]
) -> None:
    api = by_the_api_server(plane_cluster, NAME, spec)
    operator = by_the_operator(NAME, spec)
    assert api is not None, "the API server accepted it"
    assert operator is not None, "the operator accepted it"
    assert rule.message in api[1]
    assert api[0] == operator[0], (api[1], operator[1])


@pytest.mark.parametrize("spec", ACCEPTED)
def test_both_accept(plane_cluster: Cluster, spec: dict[str, Any]) -> None:
    assert by_the_api_server(plane_cluster, NAME, spec) is None
    assert by_the_operator(NAME, spec) is None


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_both_refuse_the_name(plane_cluster: Cluster, name: str) -> None:
    api = by_the_api_server(plane_cluster, name, {})
    operator = by_the_operator(name, {})
    assert api is not None and operator is not None
    assert api[0] == operator[0] == {"metadata.name"}, (api[1], operator[1])


@pytest.mark.parametrize("name", ACCEPTED_NAMES)
def test_both_accept_the_name(plane_cluster: Cluster, name: str) -> None:
    assert by_the_api_server(plane_cluster, name, {}) is None
    assert by_the_operator(name, {}) is None
