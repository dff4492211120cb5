"""The URI helpers: what a status or a message may show of a URI."""

import pytest
from kubeclassify_operator.uris import redacted, redacted_in
from modelserver.fetch import core

URIS = [
    ("s3://bucket/k/m.keras", "s3://bucket/k/m.keras"),
    ("https://alice:hunter2@host/m.keras", "https://host/m.keras"),
    ("https://alice:p@ss@host/m.keras", "https://host/m.keras"),
    ("https://host/m?X-Amz-Signature=hunter2&X=1", "https://host/m?…"),
    ("https://u:hunter2@host/m.xml?sig=hunter2#frag", "https://host/m.xml?…"),
    ("https://host/a@b/m.keras", "https://host/a@b/m.keras"),
    ("pvc://claim/m.keras", "pvc://claim/m.keras"),
]


@pytest.mark.parametrize(("uri", "shown"), URIS)
def test_a_uri_is_shown_without_its_secrets(uri: str, shown: str) -> None:
    assert redacted(uri) == shown


@pytest.mark.parametrize(("uri", "shown"), URIS)
def test_the_fetcher_shows_a_uri_as_the_operator_does(uri: str, shown: str) -> None:
    """The model server's `fetch` has its own copy (it cannot import the operator): they agree."""
    assert core.redacted(uri) == redacted(uri) == shown


def test_every_uri_in_a_message_is_redacted() -> None:
    message = "fetch 'https://alice:hunter2@h/m.keras?sig=hunter2', then s3://b/k?x=hunter2: 403"
    assert redacted_in(message) == "fetch 'https://h/m.keras?… then s3://b/k?… 403"
