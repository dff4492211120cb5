"""`gs://bucket/object` from Google Cloud Storage through its S3-compatible XML API.

Authentication is an HMAC key (Cloud Storage > Settings > Interoperability), given as for any
S3-compatible store: its access ID in AWS_ACCESS_KEY_ID, its secret in AWS_SECRET_ACCESS_KEY.
Without a key the request goes unsigned, which a public object answers. GCS_ENDPOINT_URL
overrides the endpoint (a private service connect address, or a test server).
"""

from __future__ import annotations

from collections.abc import Mapping

from . import s3
from .core import Location, Sink

ENDPOINT = "https://storage.googleapis.com"


def download(location: Location, sink: Sink, env: Mapping[str, str], timeout_s: float) -> None:
    endpoint = env.get("GCS_ENDPOINT_URL") or ENDPOINT
    s3.stream_object(location, sink, env, timeout_s, endpoint, region="auto")
