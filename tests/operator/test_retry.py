"""Which failed passes are retried, and after how long (handlers.retry_delay)."""

import pytest
import urllib3
from kubeclassify_operator.handlers import MAX_RETRY_AFTER, retry_delay
from kubernetes.client.exceptions import ApiException


def api_error(status: int, retry_after: str | None = None) -> ApiException:
    error = ApiException(status=status, reason="injected")
    error.headers = {"Retry-After": retry_after} if retry_after else {}
    return error


@pytest.mark.parametrize(
    ("error", "pause", "delay"),
    [
        (api_error(409), 0.5, 0.5),  # a race: re-read and try again
        (api_error(500), 0.5, 0.5),
        (api_error(503), 2.0, 2.0),
        (api_error(429, "3"), 0.5, 3.0),  # the server's pause wins when longer
        (api_error(429, "3"), 8.0, 8.0),
        (api_error(429, "3600"), 0.5, MAX_RETRY_AFTER),
        (api_error(429, "Wed, 21 Oct 2026 07:28:00 GMT"), 0.5, 0.5),  # date form: ignored
        (
            urllib3.exceptions.ReadTimeoutError(urllib3.HTTPConnectionPool("x"), "/", "slow"),
            1.0,
            1.0,
        ),
        (urllib3.exceptions.ProtocolError("connection dropped"), 1.0, 1.0),
        (api_error(403), 0.5, None),  # RBAC: retrying cannot help
        (api_error(422), 0.5, None),
        (api_error(500), None, None),  # out of attempts
        (ValueError("a bug"), 0.5, None),
    ],
)
def test_only_transient_failures_are_retried(
    error: Exception, pause: float | None, delay: float | None
) -> None:
    assert retry_delay(error, pause) == delay
