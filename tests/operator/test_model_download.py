"""The operator's download init container, run as the kubelet would run it, against a real S3
server (SeaweedFS): the command line the operator builds works with the server image's
`modelserver fetch`, the files land where MODEL_FILE and MODEL_LABELS point, and the
termination message it leaves is what the status reads (the sha256, or why it failed). And the
real server's last log lines, when it cannot load a model, read as ModelLoadFailed."""

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeclassify_operator import builders
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.names import CONTAINER_NAME
from kubeclassify_operator.spec import parse_spec
from kubeclassify_operator.status import Observed, compute_status, pod_problem
from s3_server import S3Server, running_s3_server
from serving import free_port

MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "models"
MODEL = MODELS / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = MODELS / "imagenet_labels.txt"
OWNER = Owner(name="mobilenet", namespace="ml", uid="uid-of-mobilenet")
SOURCE = {
    "storageUri": "s3://models/mobilenet/v2.tflite",
    "labelsUri": "s3://models/mobilenet/labels.txt",
    "credentialsSecret": "s3-models",
}
# Keep boto3 from asking EC2's metadata address or reading a developer's ~/.aws.
HERMETIC_AWS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    assert MODEL.is_file() and LABELS.is_file(), f"test data missing in {MODELS}"
    with running_s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        client = server.client()
        client.create_bucket(Bucket="models")
        client.upload_file(str(MODEL), "models", "mobilenet/v2.tflite")
        client.upload_file(str(LABELS), "models", "mobilenet/labels.txt")
        yield server


def in_volume(path: str, root: Path) -> str:
    """A path in the download volume, as this test mounts it (under `root`)."""
    prefix = builders.DOWNLOAD_DIR + "/"
    return str(root / "volume" / path.removeprefix(prefix)) if path.startswith(prefix) else path


def run_init_containers(
    deployment: dict[str, Any], secret: dict[str, str], root: Path
) -> list[dict[str, Any]]:
    """Run each init container as the kubelet would (its command and args, the Secret's keys
    as its environment, the termination log read after it exits), with the volume and the
    termination log under `root`; the init container statuses it would report."""
    statuses = []
    for init in deployment["spec"]["template"]["spec"]["initContainers"]:
        assert init["envFrom"] == [{"secretRef": {"name": "s3-models"}}]
        log = root / f"{init['name']}.termination-log"
        places = {"/dev/termination-log": str(log)}
        argv = [in_volume(places.get(arg, arg), root) for arg in [*init["command"], *init["args"]]]
        argv[0] = str(Path(sys.executable).parent / argv[0])  # the image's PATH has it
        env = {"PATH": os.environ["PATH"], **HERMETIC_AWS, **secret}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        message = log.read_text() if log.exists() else done.stderr[-2048:]
        statuses.append(
            {
                "name": init["name"],
                "state": {"terminated": {"exitCode": done.returncode, "message": message}},
            }
        )
        if done.returncode:
            break  # the kubelet runs the next init container only after this one succeeds
    return statuses


def status_after(deployment: dict[str, Any], init_statuses: list[dict[str, Any]]) -> Any:
    spec = parse_spec({"modelSource": SOURCE})
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    pod = {
        "metadata": {"name": "mobilenet-1", "annotations": dict(template)},
        "status": {"initContainerStatuses": init_statuses},
    }
    observed = Observed(
        {
            "Deployment": {**deployment, "status": {"readyReplicas": 0}},
            "Service": builders.build_service(OWNER, spec),
        },
        [pod],
    )
    return compute_status(
        name=OWNER.name,
        uid=OWNER.uid,
        spec=spec,
        observed=observed,
        previous={},
        generation=1,
        now="2026-01-01T00:00:00Z",
    )


def server_env(deployment: dict[str, Any], root: Path) -> dict[str, Path]:
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        var["name"]: Path(in_volume(var["value"], root))
        for var in server["env"]
        if var["name"] in ("MODEL_FILE", "MODEL_LABELS")
    }


def test_the_download_puts_the_files_where_the_server_looks_and_status_reads_the_sha256(
    s3: S3Server, tmp_path: Path
) -> None:
    expected = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    deployment = builders.build_deployment(
        OWNER, parse_spec({"modelSource": {**SOURCE, "sha256": expected}})
    )
    statuses = run_init_containers(deployment, s3.env, tmp_path)
    assert [s["state"]["terminated"]["exitCode"] for s in statuses] == [0], statuses
    files = server_env(deployment, tmp_path)
    assert files["MODEL_FILE"].read_bytes() == MODEL.read_bytes()
    assert files["MODEL_LABELS"].read_bytes() == LABELS.read_bytes()
    status = status_after(deployment, statuses)
    assert status["model"]["sha256"] == expected
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReplicasNotReady"  # downloaded; the server is yet to start


@pytest.mark.parametrize(
    ("secret", "source", "in_message"),
    [
        (
            {"AWS_SECRET_ACCESS_KEY": "a-wrong-secret-key-never-shown"},
            {},
            "the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)",
        ),
        ({}, {"sha256": "0" * 64}, "sha256 is "),
        ({}, {"storageUri": "s3://models/mobilenet/v9.tflite"}, "no such object"),
    ],
)
def test_a_failed_download_is_model_download_failed_without_the_credentials(
    s3: S3Server,
    tmp_path: Path,
    secret: dict[str, str],
    source: dict[str, str],
    in_message: str,
) -> None:
    deployment = builders.build_deployment(OWNER, parse_spec({"modelSource": {**SOURCE, **source}}))
    env = {**s3.env, **secret}
    statuses = run_init_containers(deployment, env, tmp_path)
    assert statuses[-1]["state"]["terminated"]["exitCode"] == 1
    assert not server_env(deployment, tmp_path)["MODEL_FILE"].exists()  # nothing half-written
    status = status_after(deployment, statuses)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelDownloadFailed")
    assert in_message in ready["message"]
    for value in env.values():
        if "secret" in value or value == s3.env["AWS_SECRET_ACCESS_KEY"]:
            assert value not in str(status)
    assert "sha256" not in status["model"]


def test_a_model_the_server_cannot_load_is_model_load_failed(tmp_path: Path) -> None:
    """The real server, given a file that is no model, stops; the tail of its log (what
    FallbackToLogsOnError makes the termination message: 80 lines, 2048 bytes at most) is read
    as ModelLoadFailed with the server's reason."""
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a model\n" * 100)
    env = {**os.environ, "MODEL_FILE": str(bad), "PORT": str(free_port()), "GRPC_PORT": "0"}
    server = Path(sys.executable).parent / "modelserver"
    done = subprocess.run([str(server), "serve"], env=env, capture_output=True, timeout=300)
    output = (done.stdout + done.stderr).decode(errors="replace")  # as the kubelet reads logs
    assert done.returncode != 0
    tail = "\n".join(output.splitlines()[-80:])[-2048:]
    cstat = {
        "name": CONTAINER_NAME,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        "lastState": {"terminated": {"exitCode": done.returncode, "message": tail}},
    }
    verdict = pod_problem([{"metadata": {"name": "m-1"}, "status": {"containerStatuses": [cstat]}}])
    assert verdict is not None and verdict.reason == "ModelLoadFailed", tail
    assert f"pod m-1: the model server cannot serve: MODEL_FILE={bad}" in verdict.message
