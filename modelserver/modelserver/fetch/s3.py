"""`s3://bucket/key` from AWS S3 or any S3-compatible store (MinIO, Ceph, SeaweedFS, GCS XML).

Settings, as boto3 names them: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with
AWS_SESSION_TOKEN for temporary keys), AWS_ENDPOINT_URL for a store other than AWS,
AWS_REGION, and AWS_CA_BUNDLE for a store with a private CA. Without keys, boto3's own chain
is asked (web identity in EKS, instance profiles); without any credentials the request
goes unsigned, which a public bucket answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config

from .core import FetchError, Location, Sink, TransientError

CHUNK_BYTES = 1 << 20
# Answers worth another attempt: the store is busy, throttling or briefly broken.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}
)


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


_NETWORK_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.HTTPError,
)


def download(location: Location, sink: Sink, env: Mapping[str, str], timeout_s: float) -> None:
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    stream_object(location, sink, env, timeout_s, env.get("AWS_ENDPOINT_URL") or None, region)


def stream_object(
    location: Location,
    sink: Sink,
    env: Mapping[str, str],
    timeout_s: float,
    endpoint_url: str | None,
    region: str,
) -> None:
    """GET `bucket/key` from the S3 API at `endpoint_url` (AWS itself when None) into `sink`."""
    bucket, key = bucket_and_key(location)
    credentials = _credentials(location, env)
    try:
        signed, client = _client(env, timeout_s, endpoint_url, region, credentials)
    except botocore.exceptions.BotoCoreError as error:  # a region boto3 refuses, for one
        raise FetchError(f"{location.shown}: {error}") from None
    except ValueError:
        raise FetchError(f"{location.shown}: invalid endpoint URL {endpoint_url!r}") from None
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(CHUNK_BYTES):
            sink.write(chunk)
    except botocore.exceptions.ClientError as error:
        raise _refused(location, error, anonymous=not signed) from None
    except botocore.exceptions.SSLError as error:
        raise FetchError(
            f"{location.shown}: TLS verification failed ({error}); "
            "set AWS_CA_BUNDLE to the store's CA bundle"
        ) from None
    except _NETWORK_ERRORS as error:
        raise TransientError(f"{location.shown}: {type(error).__name__}: {error}") from None
    except botocore.exceptions.BotoCoreError as error:
        # A bad bucket name or region: the message names it, never a key.
        raise FetchError(f"{location.shown}: {type(error).__name__}: {error}") from None


def bucket_and_key(location: Location) -> tuple[str, str]:
    bucket, key = location.authority, location.path.removeprefix("/")
    if not bucket or not key or key.endswith("/") or "?" in location.uri:
        raise FetchError(
            f"{location.shown}: expected {location.scheme}://BUCKET/KEY naming one object"
        )
    return bucket, key


def _credentials(location: Location, env: Mapping[str, str]) -> Credentials | None:
    """Keys from `env`, refusing half a pair; None when neither is set (boto3's chain)."""
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return Credentials(key_id, secret, env.get("AWS_SESSION_TOKEN") or None)
    if key_id or secret:
        present, missing = (
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            if key_id
            else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        )
        raise FetchError(f"{location.shown}: {present} is set but {missing} is not")
    return None


def _client(
    env: Mapping[str, str],
    timeout_s: float,
    endpoint_url: str | None,
    region: str,
    credentials: Credentials | None,
) -> tuple[bool, Any]:
    """An S3 client, and whether it signs its requests (False: no credentials anywhere)."""
    options: dict[str, Any] = {
        "connect_timeout": timeout_s,
        "read_timeout": timeout_s,
        # One request per attempt: fetch() retries the whole download, with its own backoff.
        "retries": {"total_max_attempts": 1},
        # Path-style addressing works with every S3-compatible store (virtual hosts need DNS).
        "s3": {"addressing_style": "path" if endpoint_url else "auto"},
    }
    if credentials:
        session = boto3.session.Session(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
        )
    else:
        session = boto3.session.Session()
    signed = session.get_credentials() is not None
    if not signed:
        options["signature_version"] = UNSIGNED
    return signed, session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        verify=env.get("AWS_CA_BUNDLE") or None,
        config=Config(**options),
    )


def _refused(
    location: Location, error: botocore.exceptions.ClientError, anonymous: bool
) -> FetchError:
    """The store's answer as one line: what to fix, never the keys themselves."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = error.response.get("Error", {}).get("Code", "")
    bucket = location.authority
    reasons = {
        "NoSuchKey": "no such object",
        "NoSuchBucket": f"no such bucket {bucket!r}",
        "InvalidAccessKeyId": "the store does not know this access key (AWS_ACCESS_KEY_ID)",
        "SignatureDoesNotMatch": (
            "the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)"
        ),
        "AccessDenied": "access denied"
        + (
            " (no credentials given: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            if anonymous
            else ""
        ),
    }
    reason = reasons.get(code) or (f"no such object (HTTP {status})" if status == 404 else "")
    message = f"{location.shown}: {reason or 'refused'} ({code or 'no error code'}, HTTP {status})"
    if status in TRANSIENT_STATUS or code in TRANSIENT_CODES:
        return TransientError(message)
    return FetchError(message)
