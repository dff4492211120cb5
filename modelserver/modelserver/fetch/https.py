"""`https://...` streamed with requests.

Authentication, from the environment (never from the URI, which lands in the pod spec):
MODEL_HTTP_BEARER_TOKEN (an `Authorization: Bearer` header), or MODEL_HTTP_USERNAME with
MODEL_HTTP_PASSWORD (basic auth). A server with a private CA: REQUESTS_CA_BUNDLE or
SSL_CERT_FILE names the CA bundle. Proxies: HTTPS_PROXY / NO_PROXY, as requests reads them.
Credentials are not sent on after a redirect to another host (requests drops them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import requests

from .core import FetchError, Location, Sink, TransientError

CHUNK_BYTES = 1 << 20
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
BEARER, USERNAME, PASSWORD = (
    "MODEL_HTTP_BEARER_TOKEN",
    "MODEL_HTTP_USERNAME",
    "MODEL_HTTP_PASSWORD",
)


def download(location: Location, sink: Sink, env: Mapping[str, str], timeout_s: float) -> None:
    if not location.authority or "@" in location.authority:
        raise FetchError(
            f"{location.shown}: expected https://HOST/PATH without credentials in it "
            f"(set {BEARER}, or {USERNAME} and {PASSWORD})"
        )
    headers, auth = authentication(location, env)
    verify: str | bool = env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE") or True
    try:
        with requests.get(
            location.uri,
            headers=headers,
            auth=auth,
            verify=verify,
            stream=True,
            timeout=timeout_s,
        ) as response:
            _check(location, response, bool(headers or auth))
            for chunk in response.iter_content(CHUNK_BYTES):
                sink.write(chunk)
    except requests.exceptions.SSLError as error:
        raise FetchError(
            f"{location.shown}: TLS verification failed ({_reason(error)}); set "
            "REQUESTS_CA_BUNDLE or SSL_CERT_FILE to the server's CA bundle"
        ) from None
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    ) as error:
        raise TransientError(
            f"{location.shown}: {type(error).__name__}: {_reason(error)}"
        ) from None
    except (requests.exceptions.RequestException, OSError, ValueError) as error:
        # A malformed URL or an unreadable CA bundle: nothing another attempt would change.
        raise FetchError(f"{location.shown}: {type(error).__name__}: {_reason(error)}") from None


def authentication(
    location: Location, env: Mapping[str, str]
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Headers and basic auth from `env`, refusing an incomplete or ambiguous choice."""
    token, user, password = env.get(BEARER), env.get(USERNAME), env.get(PASSWORD)
    if token and (user or password):
        raise FetchError(f"{location.shown}: set {BEARER} or {USERNAME}/{PASSWORD}, not both")
    if bool(user) != bool(password):
        present, missing = (USERNAME, PASSWORD) if user else (PASSWORD, USERNAME)
        raise FetchError(f"{location.shown}: {present} is set but {missing} is not")
    if token:
        return {"Authorization": f"Bearer {token}"}, None
    return {}, (user, password) if user and password else None


def _check(location: Location, response: requests.Response, authenticated: bool) -> None:
    status = response.status_code
    if status == 200:
        return
    if status in (401, 403):
        hint = (
            "the credentials were refused"
            if authenticated
            else f"no credentials given: set {BEARER}, or {USERNAME} and {PASSWORD}"
        )
        raise FetchError(f"{location.shown}: HTTP {status} ({hint})")
    if status in (404, 410):
        raise FetchError(f"{location.shown}: HTTP {status} (no such file)")
    error = TransientError if status in TRANSIENT_STATUS else FetchError
    raise error(f"{location.shown}: HTTP {status} {response.reason or ''}")


def _reason(error: BaseException) -> str:
    """The innermost cause, without the request's URL (a presigned query must not be logged)."""
    while True:
        inner = getattr(error, "reason", None)  # urllib3's MaxRetryError
        if not isinstance(inner, BaseException) and error.args:
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return re.sub(r"<[^>]*>: ", "", text)  # urllib3 names the connection object first
