"""spec.modelSource: the rules, the pod parts for every kind of source, and the status.

Pure: the CRD's CEL rules are exercised on a real API server in test_plane_models.py."""

import argparse
from typing import Any

import kubernetes_validate
import pytest
from kubeclassify_operator import builders
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.names import MODEL_SOURCE_HASH, TEMPLATE_HASH
from kubeclassify_operator.spec import InvalidSpec, parse_spec
from kubeclassify_operator.status import Observed, compute_status, pod_problem
from modelserver.fetch import command

OWNER = Owner(name="cats", namespace="ml", uid="uid-of-cats")
K8S_VERSION = "1.37.0"
SHA = "ab" * 32
T0 = "2026-01-01T00:00:00Z"
S3 = {
    "storageUri": "s3://models/cats/v3.tflite",
    "labelsUri": "s3://models/cats/labels.txt",
    "sha256": SHA.upper(),
    "credentialsSecret": "s3-credentials",
}
SOURCES: dict[str, dict[str, Any]] = {
    "s3": S3,
    "gs": {"storageUri": "gs://bucket/m.keras"},
    "https-ir": {"storageUri": "https://models.example/v1/model.xml", "sizeLimit": "500Mi"},
    "https-presigned": {
        "storageUri": "https://models.example/m?X-Amz-Signature=s3cr3t",
        "format": "tflite",
    },
    "pvc": {"storageUri": "pvc://models/cats/v3.keras", "labelsUri": "pvc://labels/cats.json"},
    "file": {"storageUri": "file:///opt/models/cats.tflite"},
    "file-and-https-labels": {
        "storageUri": "file:///opt/models/cats.tflite",
        "labelsUri": "https://labels.example/cats.txt",
        "credentialsSecret": "web",
    },
}


def deployment_for(source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return builders.build_deployment(OWNER, parse_spec({"modelSource": source, **spec}))


def pod_of(source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = deployment_for(source, **spec)["spec"]["template"]["spec"]
    return pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var.get("value", "") for var in container.get("env", [])}


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_builds_a_valid_deployment(name: str) -> None:
    deployment = builders.with_last_applied(deployment_for(SOURCES[name]))
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_s3_is_downloaded_by_an_init_container_with_the_secret_by_reference() -> None:
    pod = pod_of(S3)
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-model"
    assert fetch["image"] == pod["containers"][0]["image"]
    assert fetch["command"] == ["modelserver", "fetch"]
    assert fetch["args"] == [
        "s3://models/cats/v3.tflite",
        "/models/v3.tflite",
        "--sha256",
        SHA,
        "--labels-uri",
        "s3://models/cats/labels.txt",
        "--labels-dest",
        "/models/labels.txt",
        "--termination-log",
        "/dev/termination-log",
    ]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # The credentials: every key of the Secret, by reference, to the download only.
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "env" not in fetch
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "model", "mountPath": "/models"} in fetch["volumeMounts"]
    assert {"name": "model", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]
    (server,) = pod["containers"]
    assert "envFrom" not in server
    assert "s3-credentials" not in str(server)
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    env = env_of(server)
    assert env["MODEL_FILE"] == "/models/v3.tflite"  # served as v3, the file's own name
    assert env["MODEL_LABELS"] == "/models/labels.txt"


def test_the_fetch_command_is_the_one_the_server_image_has() -> None:
    """The init containers' command lines parse with `modelserver fetch`'s own parser."""
    parser = argparse.ArgumentParser(prog="modelserver")
    command.add_parser(parser.add_subparsers(dest="command"))
    for source in SOURCES.values():
        for init in pod_of(source).get("initContainers", []):
            args = parser.parse_args([*init["command"][1:], *init["args"]])
            assert args.command == "fetch"
            assert str(args.dest).startswith("/models/")
            assert str(args.termination_log) == "/dev/termination-log"


def test_an_openvino_ir_fetches_its_weights_from_beside_the_xml() -> None:
    pod = pod_of(SOURCES["https-ir"])
    model, weights = pod["initContainers"]
    assert model["args"][:2] == ["https://models.example/v1/model.xml", "/models/model.xml"]
    assert (weights["name"], weights["args"][:2]) == (
        "fetch-weights",
        ["https://models.example/v1/model.bin", "/models/model.bin"],
    )
    assert {"name": "model", "emptyDir": {"sizeLimit": "500Mi"}} in pod["volumes"]
    assert env_of(pod["containers"][0])["MODEL_FILE"] == "/models/model.xml"


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("s3://b/cats/v3.tflite", "v3"),
        ("pvc://models/dogs%20v2.keras", "dogs v2"),
        ("file:///opt/m/birds.tflite", "birds"),
        ("https://h/dl/model.xml", "model"),
    ],
)
def test_the_model_is_served_under_its_file_name(uri: str, name: str) -> None:
    """The server names a model file's model after the file: /v2/models/<name> for clients."""
    source = parse_spec({"modelSource": {"storageUri": uri}}).model_source
    assert source is not None and source.served_name == name


def test_a_declared_format_names_the_downloaded_file() -> None:
    """The server reads the format from the extension: a presigned URL has none."""
    pod = pod_of(SOURCES["https-presigned"])
    assert pod["initContainers"][0]["args"][1] == "/models/m.tflite"
    assert env_of(pod["containers"][0])["MODEL_FILE"] == "/models/m.tflite"


def test_pvc_is_mounted_read_only_and_not_copied() -> None:
    pod = pod_of(SOURCES["pvc"])
    assert "initContainers" not in pod
    assert {"name": "model", "emptyDir": {"sizeLimit": "2Gi"}} not in pod["volumes"]
    assert pod["volumes"][:2] == [
        {"name": "claim-0", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
        {"name": "claim-1", "persistentVolumeClaim": {"claimName": "labels", "readOnly": True}},
    ]
    (server,) = pod["containers"]
    assert server["volumeMounts"][:2] == [
        {"name": "claim-0", "mountPath": "/mnt/pvc/models", "readOnly": True},
        {"name": "claim-1", "mountPath": "/mnt/pvc/labels", "readOnly": True},
    ]
    env = env_of(server)
    assert env["MODEL_FILE"] == "/mnt/pvc/models/cats/v3.keras"
    assert env["MODEL_LABELS"] == "/mnt/pvc/labels/cats.json"


def test_one_claim_is_mounted_once() -> None:
    pod = pod_of({"storageUri": "pvc://models/a.keras", "labelsUri": "pvc://models/a.json"})
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [
        {"name": "claim-0", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    ]


def test_file_is_a_path_in_the_image() -> None:
    pod = pod_of(SOURCES["file"])
    assert "initContainers" not in pod
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert env_of(pod["containers"][0])["MODEL_FILE"] == "/opt/models/cats.tflite"


def test_labels_alone_can_be_downloaded() -> None:
    pod = pod_of(SOURCES["file-and-https-labels"])
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-labels"
    assert fetch["args"][:2] == ["https://labels.example/cats.txt", "/models/labels.txt"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "web"}}]
    env = env_of(pod["containers"][0])
    assert (env["MODEL_FILE"], env["MODEL_LABELS"]) == (
        "/opt/models/cats.tflite",
        "/models/labels.txt",
    )


def test_the_built_in_model_has_no_source_parts() -> None:
    pod = builders.build_deployment(OWNER, parse_spec({}))["spec"]["template"]
    assert "initContainers" not in pod["spec"]
    assert MODEL_SOURCE_HASH not in pod["metadata"]["annotations"]
    assert "MODEL_FILE" not in env_of(pod["spec"]["containers"][0])


def source_hash(deployment: dict[str, Any]) -> str:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations[MODEL_SOURCE_HASH]
    return value


def template_hash(deployment: dict[str, Any]) -> str:
    value: str = deployment["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH]
    return value


def test_a_changed_source_rolls_the_pods_and_an_unchanged_one_does_not() -> None:
    before = deployment_for(S3)
    again = deployment_for(dict(S3))
    assert again == before  # nothing to patch: no pod restarts
    assert builders.is_subset(builders.with_last_applied(again), builders.with_last_applied(before))
    new_digest = deployment_for({**S3, "sha256": "cd" * 32})
    assert source_hash(new_digest) != source_hash(before)
    assert template_hash(new_digest) != template_hash(before)
    new_labels = deployment_for({**S3, "labelsUri": "s3://models/cats/labels-v2.txt"})
    assert source_hash(new_labels) != source_hash(before)
    # Other spec changes leave the source's hash alone.
    assert source_hash(deployment_for(S3, replicas=4)) == source_hash(before)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"storageUri": "ftp://host/m.keras"}, "must start with s3://, gs://, https://, pvc://"),
        ({"storageUri": "s3://bucket-only.keras"}, "expected s3://BUCKET/KEY"),
        ({"storageUri": "pvc:///m.keras"}, "pvc:// needs a claim name and a path"),
        ({"storageUri": "pvc://Bad_Claim/m.keras"}, "pvc:// needs a claim name"),
        ({"storageUri": "file://relative/m.keras"}, "expected file:///ABSOLUTE/PATH"),
        ({"storageUri": "pvc://models/../etc/m.keras"}, "must not climb out"),
        ({"storageUri": "https://host/models/", "format": "keras"}, "must name a file, not end"),
        (
            {"storageUri": "https://user:hunter2@host/m.keras"},
            "must not carry credentials (user:password@)",
        ),
        ({"storageUri": "https://host/model"}, "spec.modelSource.format: cannot tell the format"),
        ({"storageUri": "s3://b/m.keras", "sha256": "abc"}, "spec.modelSource.sha256: String"),
        (
            {"storageUri": "pvc://models/m.keras", "sha256": SHA},
            "spec.modelSource.sha256: is checked while downloading",
        ),
        (
            {"storageUri": "file:///m.keras", "credentialsSecret": "s3"},
            "spec.modelSource.credentialsSecret: is only used to download",
        ),
        (
            {"storageUri": "s3://b/m.keras", "labelsUri": "s3://b/labels.csv"},
            "spec.modelSource.labelsUri: must name a .txt",
        ),
        (
            {"storageUri": "pvc://models/m.keras", "format": "tflite"},
            "spec.modelSource.format: tflite does not match the file name (.keras)",
        ),
        (
            {"storageUri": "https://h/ir?sig=1", "format": "openvino"},
            "spec.modelSource.storageUri: an OpenVINO IR must be named by its .xml",
        ),
        ({"storageUri": "s3://b/m.keras", "sizeLimit": "-1Gi"}, "sizeLimit: '-1Gi'"),
    ],
)
def test_invalid_sources_name_the_field(source: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec({"modelSource": source})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_tensorflow_cannot_run_an_ir() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.runtime\.backend: tensorflow cannot run"):
        parse_spec(
            {"modelSource": {"storageUri": "s3://b/m.xml"}, "runtime": {"backend": "tensorflow"}}
        )


@pytest.mark.parametrize("variable", ["MODEL_FILE", "MODEL_LABELS"])
def test_model_variables_are_refused_in_env(variable: str) -> None:
    with pytest.raises(
        InvalidSpec, match=f"{variable} is set by the operator: set spec.modelSource"
    ):
        parse_spec({"env": [{"name": variable, "value": "/x.keras"}]})


# Status: what the kubelet reports about the download and the server, as the operator reads it.


def fetch_status(
    state: dict[str, Any], last: dict[str, Any] | None = None, name: str = "fetch-model"
) -> dict[str, Any]:
    return {"name": name, "state": state, "lastState": last or {}, "ready": False}


FAILED_DOWNLOAD = {
    "terminated": {
        "exitCode": 1,
        "reason": "Error",
        "message": "modelserver fetch: s3://models/cats/v3.tflite: the store does not know"
        " this access key (AWS_ACCESS_KEY_ID)\n",
    }
}
FETCHED = {
    "terminated": {
        "exitCode": 0,
        "reason": "Completed",
        "message": f"fetched s3://models/cats/v3.tflite to /models/model.tflite: 3400000 bytes,"
        f" sha256 {SHA}\nfetched s3://models/cats/labels.txt to /models/labels.txt: 10 bytes,"
        f" sha256 {'ef' * 32}\n",
    }
}
LOAD_ERROR_LOG = (
    "[2026-01-01 00:00:01] [INFO] Booting worker with pid: 7\n"
    "2026-01-01 00:00:03 [7] [CRITICAL] modelserver.service: cannot serve: "
    "MODEL_FILE=/models/model.tflite cannot be loaded: not a TFLite flatbuffer\n"
    "[2026-01-01 00:00:03] [INFO] Shutting down: Master\n"
)


def a_pod(init: list[dict[str, Any]], server: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"initContainerStatuses": init}
    if server is not None:
        status["containerStatuses"] = [{"name": "modelserver", "ready": False, **server}]
    return {"metadata": {"name": "cats-1"}, "status": status}


@pytest.mark.parametrize(
    ("pod", "reason", "in_message"),
    [
        (
            a_pod([fetch_status(FAILED_DOWNLOAD)]),
            "ModelDownloadFailed",
            "pod cats-1: fetch-model failed: modelserver fetch: s3://models/cats/v3.tflite: the"
            " store does not know this access key (AWS_ACCESS_KEY_ID)",
        ),
        # Restarted after the failure (the pod's restartPolicy): still the failure.
        (
            a_pod(
                [
                    fetch_status(
                        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                        FAILED_DOWNLOAD,
                    )
                ]
            ),
            "ModelDownloadFailed",
            "access key",
        ),
        # No termination message (killed before writing one): the reason.
        (
            a_pod([fetch_status({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})]),
            "ModelDownloadFailed",
            "fetch-model failed: OOMKilled",
        ),
        (
            a_pod(
                [fetch_status(FETCHED)],
                {
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 3, "message": LOAD_ERROR_LOG}},
                },
            ),
            "ModelLoadFailed",
            "pod cats-1: the model server cannot serve: MODEL_FILE=/models/model.tflite cannot be"
            " loaded: not a TFLite flatbuffer",
        ),
        # The Secret is missing (or lacks a key): the kubelet cannot start the download.
        (
            a_pod(
                [
                    fetch_status(
                        {
                            "waiting": {
                                "reason": "CreateContainerConfigError",
                                "message": 'secret "s3-credentials" not found',
                            }
                        }
                    )
                ]
            ),
            "ModelDownloadFailed",
            'fetch-model failed: cannot start: secret "s3-credentials" not found',
        ),
        (
            a_pod([fetch_status({"waiting": {"reason": "ImagePullBackOff", "message": "no"}})]),
            "ImagePullBackOff",
            "cats-1",
        ),
        # A crash that is not a load failure stays a crash loop.
        (
            a_pod(
                [fetch_status(FETCHED)],
                {
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "Segmentation fault"}},
                },
            ),
            "CrashLoopBackOff",
            "back-off",
        ),
    ],
)
def test_model_failures_have_their_own_reason(
    pod: dict[str, Any], reason: str, in_message: str
) -> None:
    verdict = pod_problem([pod])
    assert verdict is not None
    assert (verdict.status, verdict.reason) == ("False", reason)
    assert in_message in verdict.message


def test_a_download_that_failed_then_succeeded_is_no_problem() -> None:
    running = {"state": {"running": {"startedAt": T0}}}
    assert pod_problem([a_pod([fetch_status(FETCHED, FAILED_DOWNLOAD)], running)]) is None
    # Running again (the next attempt) is not yet a success: the failure still says why.
    retrying = a_pod([fetch_status({"running": {"startedAt": T0}}, FAILED_DOWNLOAD)])
    verdict = pod_problem([retrying])
    assert verdict is not None and verdict.reason == "ModelDownloadFailed"


@pytest.mark.parametrize(
    "message",
    [
        "modelserver fetch: https://alice:hunter2@h/m.keras: 401",
        "modelserver fetch: https://h/m.keras?X-Amz-Signature=hunter2: 403 Forbidden",
        "botocore error: AWS_SECRET_ACCESS_KEY=hunter2 rejected",
        "Traceback ...\nValueError: token=hunter2",
    ],
)
def test_credentials_are_never_echoed(message: str) -> None:
    failed = {"terminated": {"exitCode": 1, "message": message}}
    verdict = pod_problem([a_pod([fetch_status(failed)])])
    assert verdict is not None and verdict.reason == "ModelDownloadFailed"
    assert "hunter2" not in verdict.message


def test_a_long_termination_message_is_clipped() -> None:
    failed = {"terminated": {"exitCode": 1, "message": "x" * 4000}}
    verdict = pod_problem([a_pod([fetch_status(failed)])])
    assert verdict is not None and len(verdict.message) < 600


def status_with(pods: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    parsed = parse_spec(spec)
    deployment = builders.build_deployment(OWNER, parsed)
    deployment["status"] = {"readyReplicas": 0}
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    for pod in pods:
        pod["metadata"]["annotations"] = dict(template)  # pods of the current template
    observed = Observed(
        {"Deployment": deployment, "Service": builders.build_service(OWNER, parsed)}, pods
    )
    return compute_status(
        name="cats",
        uid=OWNER.uid,
        spec=parsed,
        observed=observed,
        previous={},
        generation=1,
        now=T0,
    )


def test_status_model_reports_the_downloaded_sha256() -> None:
    running = {"state": {"running": {"startedAt": T0}}}
    status = status_with([a_pod([fetch_status(FETCHED)], running)], {"modelSource": S3})
    assert status["model"] == {
        "name": "v3",
        "source": "s3://models/cats/v3.tflite",
        "format": "tflite",
        "sha256": SHA,
        "backend": "auto",
        "precision": "auto",
        "summary": "s3://models/cats/v3.tflite (auto)",
    }


def test_status_model_before_any_download_and_without_query() -> None:
    spec = {"modelSource": SOURCES["https-presigned"], "runtime": {"precision": "int8"}}
    status = status_with([], spec)
    assert status["model"] == {
        "name": "m",
        "source": "https://models.example/m?…",
        "format": "tflite",
        "backend": "auto",
        "precision": "int8",
        "summary": "https://models.example/m?… (int8)",
    }
    assert "s3cr3t" not in str(status)


def test_ready_false_names_the_download_failure() -> None:
    status = status_with([a_pod([fetch_status(FAILED_DOWNLOAD)])], {"modelSource": S3})
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelDownloadFailed")
    assert "AWS_ACCESS_KEY_ID" in ready["message"]
    assert "sha256" not in status["model"]
