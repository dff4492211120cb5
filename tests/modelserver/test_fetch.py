"""`modelserver fetch`: a classifier from a real S3 server (SeaweedFS), a local HTTPS server,
a path or a claim, to a file the real server then serves.

Failures must be one line naming the URI, with a non-zero exit, no secret in the output and
nothing half-written beside the destination.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from unittest import mock

import pytest
from https_server import HttpsServer, running_https_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelserver.cli import main
from modelserver.fetch import TransientError, fetch, file_digest
from s3_server import S3Server, running_s3_server
from serving import free_port, start_server, wait_ready

TOKEN = "bearer-token-for-tests-5f3a"
BUCKET = "models"
MODEL_KEY = "mobilenet/mobilenet_v2_1.0_224_quant.tflite"
LABELS_KEY = "mobilenet/imagenet_labels.txt"
# Keep boto3 from asking EC2's metadata address or reading a developer's ~/.aws.
HERMETIC_AWS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="module")
def s3(
    tmp_path_factory: pytest.TempPathFactory, mobilenet_file: Path, mobilenet_labels: Path
) -> Iterator[S3Server]:
    """SeaweedFS with a bucket holding the real MobileNetV2 and its labels."""
    with running_s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(mobilenet_file), BUCKET, MODEL_KEY)
        client.upload_file(str(mobilenet_labels), BUCKET, LABELS_KEY)
        yield server


@pytest.fixture(scope="module")
def https(
    tmp_path_factory: pytest.TempPathFactory, mobilenet_labels: Path
) -> Iterator[HttpsServer]:
    files = {"labels.txt": mobilenet_labels.read_bytes(), "blob.bin": os.urandom(300_000)}
    with running_https_server(tmp_path_factory.mktemp("https"), files, TOKEN) as server:
        yield server


def run_fetch(
    *args: str, env: dict[str, str], max_file_bytes: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`modelserver fetch` as a pod runs it: its own process, settings only in the environment;
    `max_file_bytes` makes larger writes fail as on a full volume (RLIMIT_FSIZE: EFBIG)."""

    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "modelserver", "fetch", *args],
        env={**_without_settings(os.environ), **HERMETIC_AWS, **env},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )


def _without_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment less anything the fetcher reads, so each test says all it sets."""
    read = ("AWS_", "MODEL_", "GCS_", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
    return {k: v for k, v in environ.items() if not k.startswith(read)}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def assert_failed_cleanly(
    result: subprocess.CompletedProcess[str], directory: Path, *secrets: str
) -> str:
    """Exit 1, one line on stderr as the last line, no traceback, no secret, no file."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("modelserver fetch: "), result.stderr
    for secret in secrets:
        assert secret not in result.stdout + result.stderr
        for path in directory.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes()
    return last


def test_s3_with_credentials_then_the_server_serves_it(
    s3: S3Server,
    tmp_path: Path,
    mobilenet_file: Path,
    mobilenet_labels: Path,
    images_dir: Path,
    server_logs: Path,
) -> None:
    digest = file_digest(mobilenet_file, "sha256")
    dest, termination = tmp_path / "model" / "model.tflite", tmp_path / "termination-log"
    result = run_fetch(
        f"s3://{BUCKET}/{MODEL_KEY}",
        str(dest),
        "--sha256",
        digest.upper(),
        "--labels-uri",
        f"s3://{BUCKET}/{LABELS_KEY}",
        "--termination-log",
        str(termination),
        env=s3.env,
    )
    assert result.returncode == 0, result.stderr
    labels = dest.parent / "imagenet_labels.txt"
    assert dest.read_bytes() == mobilenet_file.read_bytes()
    assert labels.read_bytes() == mobilenet_labels.read_bytes()
    assert leftovers(dest.parent) == ["imagenet_labels.txt", "model.tflite"]
    # The operator reads what was fetched from the init container's termination message.
    message = termination.read_text().splitlines()
    assert message[0] == (
        f"fetched s3://{BUCKET}/{MODEL_KEY} to {dest}: "
        f"{mobilenet_file.stat().st_size} bytes, sha256 {digest}"
    )
    assert f"to {labels}" in message[1] and s3.env["AWS_SECRET_ACCESS_KEY"] not in result.stdout

    server = start_server(server_logs, "--model-file", str(dest), "--labels", str(labels))
    try:
        wait_ready(server)
        top = server.predict(images_dir / "dog.jpg").json()["predictions"][0]
        assert top["label"] == "beagle", top
    finally:
        server.stop()


def test_a_wrong_secret_key_fails_at_once_without_echoing_it(s3: S3Server, tmp_path: Path) -> None:
    wrong = "not-the-secret-0f9e8d7c6b5a"
    result = run_fetch(
        f"s3://{BUCKET}/{MODEL_KEY}",
        str(tmp_path / "out" / "model.tflite"),
        "--termination-log",
        str(tmp_path / "termination-log"),
        env={**s3.env, "AWS_SECRET_ACCESS_KEY": wrong},
    )
    line = assert_failed_cleanly(result, tmp_path / "out", wrong, s3.env["AWS_SECRET_ACCESS_KEY"])
    assert line == (
        f"modelserver fetch: s3://{BUCKET}/{MODEL_KEY}: the secret key does not match the "
        "access key (AWS_SECRET_ACCESS_KEY) (SignatureDoesNotMatch, HTTP 403)"
    )
    assert "retrying" not in result.stderr  # permanent: no second attempt
    assert (tmp_path / "termination-log").read_text() == line + "\n"
    assert wrong not in (tmp_path / "termination-log").read_text()
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("change", "uri", "reason"),
    [
        (
            {"AWS_ACCESS_KEY_ID": "NOSUCHKEYID"},
            f"s3://{BUCKET}/{MODEL_KEY}",
            "the store does not know this access key (AWS_ACCESS_KEY_ID) "
            "(InvalidAccessKeyId, HTTP 403)",
        ),
        (
            {"AWS_SECRET_ACCESS_KEY": ""},
            f"s3://{BUCKET}/{MODEL_KEY}",
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        ),
        (
            {"AWS_SECRET_ACCESS_KEY": "", "AWS_ACCESS_KEY_ID": ""},
            f"s3://{BUCKET}/{MODEL_KEY}",
            "access denied (no credentials given: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY) (AccessDenied, HTTP 403)",
        ),
        ({}, f"s3://{BUCKET}/no/such.tflite", "no such object (NoSuchKey, HTTP 404)"),
        ({}, "s3://no-such-bucket/model.tflite", "no such bucket 'no-such-bucket' (NoSuchBucket"),
        ({}, f"s3://{BUCKET}/", "expected s3://BUCKET/KEY naming one object"),
        (
            {"AWS_ENDPOINT_URL": "not a url"},
            f"s3://{BUCKET}/{MODEL_KEY}",
            "invalid endpoint URL 'not a url'",
        ),
    ],
    ids=[
        "unknown-key-id",
        "no-secret",
        "no-credentials",
        "no-key",
        "no-bucket",
        "no-object",
        "endpoint",
    ],
)
def test_permanent_s3_errors_name_the_uri_and_the_cause(
    s3: S3Server, tmp_path: Path, change: dict[str, str], uri: str, reason: str
) -> None:
    env = {k: v for k, v in {**s3.env, **change}.items() if v}
    result = run_fetch(uri, str(tmp_path / "out" / "model.tflite"), env=env)
    line = assert_failed_cleanly(result, tmp_path / "out", s3.env["AWS_SECRET_ACCESS_KEY"])
    assert line.startswith(f"modelserver fetch: {uri}: {reason}"), line
    assert "retrying" not in result.stderr
    assert leftovers(tmp_path / "out") == []


def test_a_wrong_sha256_leaves_nothing_and_keeps_the_old_file(
    s3: S3Server, tmp_path: Path, mobilenet_file: Path
) -> None:
    dest = tmp_path / "out" / "model.tflite"
    dest.parent.mkdir()
    dest.write_bytes(b"the model served until now")
    wrong = "0" * 64
    result = run_fetch(f"s3://{BUCKET}/{MODEL_KEY}", str(dest), "--sha256", wrong, env=s3.env)
    line = assert_failed_cleanly(result, dest.parent, s3.env["AWS_SECRET_ACCESS_KEY"])
    actual = file_digest(mobilenet_file, "sha256")
    assert line == (
        f"modelserver fetch: s3://{BUCKET}/{MODEL_KEY}: sha256 is {actual}, expected {wrong}; "
        f"nothing written to {dest}"
    )
    assert dest.read_bytes() == b"the model served until now"
    assert leftovers(dest.parent) == ["model.tflite"]


def test_a_bad_sha256_argument_is_refused_before_downloading(tmp_path: Path) -> None:
    result = run_fetch("file:///etc/hostname", str(tmp_path / "x"), "--sha256", "abc", env={})
    line = assert_failed_cleanly(result, tmp_path)
    assert line == "modelserver fetch: --sha256 must be 64 hexadecimal digits, got 'abc'"


def test_gs_through_the_s3_compatible_api_with_an_hmac_key(
    s3: S3Server, tmp_path: Path, mobilenet_labels: Path
) -> None:
    """gs:// speaks GCS's XML API, which is S3's: SeaweedFS stands in for storage.googleapis.com."""
    env = {**s3.env, "GCS_ENDPOINT_URL": s3.endpoint_url, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    dest = tmp_path / "labels.txt"
    result = run_fetch(f"gs://{BUCKET}/{LABELS_KEY}", str(dest), env=env)
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == mobilenet_labels.read_bytes()


def test_https_with_a_private_ca_and_a_bearer_token(
    https: HttpsServer, tmp_path: Path, mobilenet_labels: Path
) -> None:
    dest = tmp_path / "out" / "labels.txt"
    uri = f"{https.url}/private/labels.txt"
    ca = {"REQUESTS_CA_BUNDLE": str(https.ca_bundle)}

    without_token = run_fetch(uri, str(dest), env=ca)
    line = assert_failed_cleanly(without_token, dest.parent)
    assert line == (
        f"modelserver fetch: {uri}: HTTP 401 (no credentials given: set "
        "MODEL_HTTP_BEARER_TOKEN, or MODEL_HTTP_USERNAME and MODEL_HTTP_PASSWORD)"
    )
    wrong = run_fetch(uri, str(dest), env={**ca, "MODEL_HTTP_BEARER_TOKEN": "wrong-token-77"})
    line = assert_failed_cleanly(wrong, dest.parent, "wrong-token-77")
    assert line == f"modelserver fetch: {uri}: HTTP 401 (the credentials were refused)"

    result = run_fetch(uri, str(dest), env={**ca, "MODEL_HTTP_BEARER_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == mobilenet_labels.read_bytes()
    assert TOKEN not in result.stdout + result.stderr


def test_https_without_the_ca_bundle_is_refused_at_once(https: HttpsServer, tmp_path: Path) -> None:
    uri = f"{https.url}/public/labels.txt"
    result = run_fetch(uri, str(tmp_path / "out" / "labels.txt"), env={})
    line = assert_failed_cleanly(result, tmp_path / "out")
    assert line.startswith(f"modelserver fetch: {uri}: TLS verification failed (")
    assert "certificate verify failed" in line and "SSL_CERT_FILE" in line
    assert "retrying" not in result.stderr
    # SSL_CERT_FILE does as well as REQUESTS_CA_BUNDLE.
    ok = run_fetch(uri, str(tmp_path / "l.txt"), env={"SSL_CERT_FILE": str(https.ca_bundle)})
    assert ok.returncode == 0, ok.stderr


def test_credentials_in_an_https_uri_are_refused_and_not_echoed(tmp_path: Path) -> None:
    result = run_fetch(
        "https://user:hunter2secret@127.0.0.1:1/m.tflite", str(tmp_path / "m"), env={}
    )
    line = assert_failed_cleanly(result, tmp_path, "hunter2secret")
    assert line.startswith("modelserver fetch: https://127.0.0.1:1/m.tflite: expected https://HOST")


def test_labels_that_fail_after_the_model_make_the_reason_the_whole_message(
    tmp_path: Path, mobilenet_labels: Path
) -> None:
    termination = tmp_path / "termination-log"
    result = run_fetch(
        f"file://{mobilenet_labels}",
        str(tmp_path / "pod" / "model.txt"),
        "--labels-uri",
        "file:///no/such/labels.txt",
        f"--termination-log={termination}",
        env={},
    )
    line = assert_failed_cleanly(result, tmp_path / "pod")
    assert termination.read_text() == line + "\n"
    assert line.endswith("file:///no/such/labels.txt: no such file /no/such/labels.txt")
    assert leftovers(tmp_path / "pod") == ["model.txt"]  # with --sha256, a restart keeps it

    result = run_fetch("file:///a", str(tmp_path / "b"), "--labels-dest", "/c", env={})
    assert assert_failed_cleanly(result, tmp_path) == (
        "modelserver fetch: --labels-dest needs --labels-uri"
    )


def test_a_truncated_download_is_retried_then_fails_with_nothing_written(
    https: HttpsServer, tmp_path: Path
) -> None:
    uri = f"{https.url}/truncated/blob.bin"
    dest = tmp_path / "out" / "blob.bin"
    waits: list[float] = []
    before = https.count("/truncated/blob.bin")
    with pytest.raises(TransientError) as failure:
        fetch(
            uri, dest, env={"SSL_CERT_FILE": str(https.ca_bundle)}, attempts=3, sleep=waits.append
        )
    # How much arrives before the close is the network's business; that it is short is not.
    assert re.fullmatch(
        re.escape(uri) + r": ChunkedEncodingError: Connection broken: IncompleteRead\(\d+ "
        r"bytes read, \d+ more expected\) \(gave up after 3 attempts\)",
        str(failure.value),
    ), failure.value
    assert https.count("/truncated/blob.bin") - before == 3 and waits == [1.0, 2.0]
    assert leftovers(dest.parent) == []


def test_transient_errors_are_retried_until_the_download_succeeds(
    https: HttpsServer, tmp_path: Path
) -> None:
    dest = tmp_path / "blob.bin"
    waits: list[float] = []
    fetched = fetch(
        f"{https.url}/flaky/blob.bin",
        dest,
        env={"SSL_CERT_FILE": str(https.ca_bundle)},
        sleep=waits.append,
    )
    assert https.count("/flaky/blob.bin") == 3 and waits == [1.0, 2.0]  # two 503s, then 200
    assert fetched.sha256 == file_digest(dest, "sha256") and fetched.size == 300_000


def test_an_unreachable_store_is_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", **HERMETIC_AWS}
    waits: list[float] = []
    with pytest.raises(TransientError, match=r"\(gave up after 4 attempts\)$"):
        fetch("s3://b/k", tmp_path / "k", env=env, attempts=4, backoff_s=10, sleep=waits.append)
    assert waits == [10.0, 20.0, 30.0]  # doubling, capped at 30 s
    assert leftovers(tmp_path) == []


def test_a_volume_too_small_for_the_model_fails_at_once_with_nothing_left(
    tmp_path: Path, mobilenet_file: Path
) -> None:
    dest = tmp_path / "pod" / "model.tflite"
    result = run_fetch(f"file://{mobilenet_file}", str(dest), env={}, max_file_bytes=1 << 20)
    line = assert_failed_cleanly(result, dest.parent)
    assert line == (
        f"modelserver fetch: file://{mobilenet_file}: cannot write {dest}: File too large"
    )
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize(
    ("uri", "boto3_loaded"), [("file:///etc/hostname", False), ("s3://b/k", True)]
)
def test_boto3_is_imported_only_for_object_storage(
    tmp_path: Path, uri: str, boto3_loaded: bool
) -> None:
    code = (
        "import sys\n"
        "from modelserver.cli import main\n"
        f"main(['fetch', '--attempts', '1', '{uri}', '{tmp_path / 'out'}'])\n"
        "print('boto3 loaded:', 'boto3' in sys.modules)\n"
    )
    env = {
        **_without_settings(os.environ),
        **HERMETIC_AWS,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.splitlines()[-1] == f"boto3 loaded: {boto3_loaded}", result.stderr


def test_a_file_already_there_with_the_right_sha256_is_not_downloaded_again(
    tmp_path: Path,
) -> None:
    """An init container restarted in the same pod finds its emptyDir filled: no second GET."""
    dest = tmp_path / "model.tflite"
    dest.write_bytes(b"fetched by the previous attempt")
    unreachable = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", **HERMETIC_AWS}
    digest = file_digest(dest, "sha256")
    fetched = fetch("s3://b/model.tflite", dest, digest, env=unreachable, attempts=1)
    assert (fetched.sha256, fetched.size) == (digest, dest.stat().st_size)
    with pytest.raises(TransientError):  # without --sha256 nothing says the file is the one
        fetch("s3://b/model.tflite", dest, env=unreachable, attempts=1)
    assert dest.read_bytes() == b"fetched by the previous attempt"


def test_a_file_in_the_image_and_a_file_on_a_mounted_claim(
    tmp_path: Path, mobilenet_labels: Path
) -> None:
    result = run_fetch(f"file://{mobilenet_labels}", str(tmp_path / "a.txt"), env={})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.txt").read_bytes() == mobilenet_labels.read_bytes()

    root = tmp_path / "claims"
    (root / "team-models" / "v1").mkdir(parents=True)
    (root / "team-models" / "v1" / "labels.txt").write_bytes(mobilenet_labels.read_bytes())
    env = {"MODEL_PVC_ROOT": str(root)}
    result = run_fetch("pvc://team-models/v1/labels.txt", str(tmp_path / "b.txt"), env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.txt").read_bytes() == mobilenet_labels.read_bytes()

    unmounted = run_fetch("pvc://other/labels.txt", str(tmp_path / "c" / "c.txt"), env=env)
    line = assert_failed_cleanly(unmounted, tmp_path / "c")
    assert "claim 'other' is not mounted at" in line and "the operator mounts" in line
    climbing = run_fetch("pvc://team-models/../x", str(tmp_path / "c" / "c.txt"), env=env)
    assert "expected a file path inside the claim" in assert_failed_cleanly(climbing, tmp_path)
    missing = run_fetch("file:///no/such/model.keras", str(tmp_path / "c" / "m.keras"), env={})
    assert assert_failed_cleanly(missing, tmp_path / "c") == (
        "modelserver fetch: file:///no/such/model.keras: no such file /no/such/model.keras"
    )


def test_a_keras_classifier_from_s3_is_served(
    s3: S3Server, tmp_path: Path, images_dir: Path, server_logs: Path
) -> None:
    """Your own classifier, end to end: built here, uploaded, fetched, served."""
    import keras
    import numpy as np
    from PIL import Image

    labels = ("reddish", "greenish", "bluish")
    # Mean colour, sharpened: a decisive answer that the test can work out by itself.
    model = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.layers[-1].set_weights([np.eye(3, dtype="float32") * 30, np.zeros(3, "float32")])
    model.save(tmp_path / "colours.keras")
    (tmp_path / "colours.txt").write_text("\n".join(labels) + "\n")
    client = s3.client()
    client.upload_file(str(tmp_path / "colours.keras"), BUCKET, "colours/colours.keras")
    client.upload_file(str(tmp_path / "colours.txt"), BUCKET, "colours/labels.txt")

    dest = tmp_path / "pod" / "colours.keras"
    result = run_fetch(
        f"s3://{BUCKET}/colours/colours.keras",
        str(dest),
        "--sha256",
        file_digest(tmp_path / "colours.keras", "sha256"),
        "--labels-uri",
        f"s3://{BUCKET}/colours/labels.txt",
        env=s3.env,
    )
    assert result.returncode == 0, result.stderr

    photo = images_dir / "dog.jpg"
    pixels = np.asarray(Image.open(photo).convert("RGB").resize((24, 24)), dtype="float32")
    expected = np.asarray(model(pixels[np.newaxis]))[0]
    server = start_server(
        server_logs, "--model-file", str(dest), "--labels", str(dest.parent / "labels.txt")
    )
    try:
        wait_ready(server)
        predictions = server.predict(photo).json()["predictions"]
    finally:
        server.stop()
    assert [p["label"] for p in predictions] == [labels[i] for i in np.argsort(-expected)]
    assert np.allclose([p["probability"] for p in predictions], np.sort(expected)[::-1], atol=0.05)


# Fuzzing: random URIs and settings, against the real servers.
_SECRET = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=10, max_size=20).map(
    lambda s: "SECRET-" + s
)
_SECRET_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MODEL_HTTP_BEARER_TOKEN",
    "MODEL_HTTP_PASSWORD",
)
_PIECE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


def _uris(https_url: str, labels: Path) -> st.SearchStrategy[str]:
    """Good URIs (so that settings decide), near misses, and noise."""
    good = [
        f"s3://{BUCKET}/{LABELS_KEY}",
        f"gs://{BUCKET}/{LABELS_KEY}",
        f"{https_url}/public/labels.txt",
        f"{https_url}/private/labels.txt",
        f"{https_url}/truncated/labels.txt",
        f"file://{labels}",
        "pvc://claim/labels.txt",
    ]
    schemes = st.sampled_from(["s3", "gs", "https", "file", "pvc", "http", "ftp", "S3", ""])
    hosts = st.sampled_from([BUCKET, https_url.split("//")[1], "claim", ""])
    paths = st.sampled_from([LABELS_KEY, "public/labels.txt", "../../etc/passwd", ""])
    near = st.builds(
        "{}://{}/{}".format, schemes, st.one_of(hosts, _PIECE), st.one_of(paths, _PIECE)
    )
    return st.one_of(st.sampled_from(good), near, _PIECE)


def _environments(
    s3: S3Server, https: HttpsServer, claims: Path
) -> st.SearchStrategy[dict[str, str]]:
    """A working setting with keys missing or replaced by random values."""
    working = [
        s3.env,
        {**s3.env, "GCS_ENDPOINT_URL": s3.endpoint_url},
        {"REQUESTS_CA_BUNDLE": str(https.ca_bundle), "MODEL_HTTP_BEARER_TOKEN": TOKEN},
        {"MODEL_PVC_ROOT": str(claims)},
    ]
    values: dict[str, st.SearchStrategy[str]] = {
        **dict.fromkeys(_SECRET_KEYS, _SECRET),
        "MODEL_HTTP_USERNAME": _SECRET,
        "AWS_ENDPOINT_URL": st.sampled_from(
            [s3.endpoint_url, "http://127.0.0.1:1", "not a url", "ftp://127.0.0.1/"]
        ),
        "GCS_ENDPOINT_URL": st.sampled_from([s3.endpoint_url, "http://127.0.0.1:1", "x"]),
        "AWS_REGION": st.one_of(st.just("us-east-1"), _PIECE),
        "REQUESTS_CA_BUNDLE": st.sampled_from([str(https.ca_bundle), "/no/such/ca.pem"]),
        "MODEL_PVC_ROOT": st.sampled_from([str(claims), "/", "/no/such/root"]),
    }

    def mixed(base: dict[str, str], dropped: set[str], changed: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in dropped} | changed
        return {k: v for k, v in env.items() if "\x00" not in v}

    return st.builds(
        mixed,
        st.sampled_from(working),
        st.sets(st.sampled_from(sorted(values))),
        st.fixed_dictionaries({}, optional=values),
    )


def test_fuzzed_uris_and_settings_fail_in_one_line_and_leave_nothing(
    s3: S3Server, https: HttpsServer, tmp_path: Path, mobilenet_labels: Path
) -> None:
    claims = tmp_path / "claims"
    (claims / "claim").mkdir(parents=True)
    (claims / "claim" / "labels.txt").write_bytes(mobilenet_labels.read_bytes())
    outcomes: set[int] = set()

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        uri=_uris(https.url, mobilenet_labels),
        env=_environments(s3, https, claims),
        sha256=st.one_of(st.none(), st.text("0123456789abcdef", min_size=64, max_size=64), _PIECE),
    )
    def check(uri: str, env: dict[str, str], sha256: str | None) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as directory:
            dest, termination = Path(directory) / "out" / "model", Path(directory) / "log"
            args = ["fetch", "--attempts", "1", "--timeout", "5"]
            args += [f"--termination-log={termination}"]
            args += [f"--sha256={sha256}"] if sha256 is not None else []
            code, out, err = _main_in_process([*args, "--", uri, str(dest)], env)
            shown = out + err + termination.read_text()
            for key in _SECRET_KEYS:
                if key in env and env[key] not in uri:
                    assert env[key] not in shown, (key, shown)
            outcomes.add(code)
            if code == 0:
                assert dest.is_file() and leftovers(dest.parent) == ["model"]
                return
            assert code == 1, (code, err)
            assert err.splitlines()[-1].startswith("modelserver fetch: "), err
            assert len(termination.read_text().splitlines()) == 1
            assert leftovers(dest.parent) == []

    check()
    assert outcomes == {0, 1}, "the examples must reach both outcomes"


def _main_in_process(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(
            os.environ, {**_without_settings(os.environ), **HERMETIC_AWS, **env}, clear=True
        ),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
