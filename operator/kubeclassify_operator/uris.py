"""Where a model (or its labels) may come from: the URI rules of spec.modelSource, and the
helpers that read a URI (its file name, its extension) or show it without its secrets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from urllib.parse import unquote

from pydantic import Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from kubeclassify_operator.rules import DNS_SUBDOMAIN, Rule, cel_string

if TYPE_CHECKING:
    from kubeclassify_operator.spec import ModelSource

REMOTE_SCHEMES = ("s3", "gs", "https")
LOCAL_SCHEMES = ("pvc", "file")
URI_MAX_LENGTH = 2048
MODEL_FORMATS = {".keras": "keras", ".tflite": "tflite", ".xml": "openvino"}
LABEL_SUFFIXES = (".txt", ".json")


def redacted(uri: str) -> str:
    """A URI fit for a status or a message: no user:password@, no query (a presigned URL's
    signature)."""
    uri = re.sub(r"^([^:/?#]*://)[^/?#]*@", r"\1", uri)
    return re.sub(r"\?.*", "?…", uri, flags=re.DOTALL)


def redacted_in(text: str) -> str:
    """`text` with every URI in it `redacted`: a message that quotes URIs, fit for a status."""
    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", lambda found: redacted(found[0]), text)


def file_name(uri: str) -> str:
    """The URI's last path segment, unquoted, without the query: `v2.tflite`."""
    return unquote(uri.split("?", 1)[0].rsplit("/", 1)[-1])


def suffix_of(uri: str) -> str:
    """The extension of the URI's file name, e.g. `.tflite` (empty if it has none)."""
    name = file_name(uri)
    return "." + name.rsplit(".", 1)[1] if "." in name else ""


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0]


@dataclass(frozen=True)
class UriRule:
    """`pattern` must match (or, with `forbid`, must not) a URI starting with `prefix`: one
    regular expression, which CEL's `matches` and Python's `re.search` read alike."""

    prefix: str
    pattern: str
    message: str
    forbid: bool = False

    def on(self, attribute: str, optional: bool = False) -> Rule[ModelSource]:
        """The rule on the model source's URI in `attribute`. CEL checks it on the object
        holding the URI: a rule on the string itself would make the API server echo the URI,
        credentials and all, in its refusal."""
        uri = f"self.{to_camel(attribute)}"
        test = f"{uri}.matches({cel_string(self.pattern)})"
        test = f"!{test}" if self.forbid else test
        if self.prefix:
            test = f"!{uri}.startsWith({cel_string(self.prefix)}) || {test}"

        def holds(source: ModelSource) -> bool:
            value: str | None = getattr(source, attribute)
            return value is None or not self.broken_by(value)

        return Rule(
            f"!has({uri}) || {test}" if optional else test,
            holds,
            self.message,
            field=to_camel(attribute),
            explain=lambda source: f"{redacted(getattr(source, attribute))!r} {self.message}",
        )

    def broken_by(self, uri: str) -> bool:
        if not uri.startswith(self.prefix):
            return False
        return bool(re.search(self.pattern, uri)) == self.forbid


URI_RULES = (
    UriRule(
        "",
        "^(" + "|".join(REMOTE_SCHEMES + LOCAL_SCHEMES) + ")://",
        "must start with s3://, gs://, https://, pvc:// or file://",
    ),
    UriRule(
        "",
        r"^[a-z0-9]+://[^/@]*(/|$)",
        "must not carry credentials (user:password@): name a Secret in credentialsSecret",
    ),
    UriRule("s3://", r"^s3://[^/?#]+/[^?#]+$", "expected s3://BUCKET/KEY"),
    UriRule("gs://", r"^gs://[^/?#]+/[^?#]+$", "expected gs://BUCKET/KEY"),
    UriRule("https://", r"^https://[^/?#]+/[^#]+$", "expected https://HOST/PATH"),
    UriRule(
        "pvc://",
        rf"^pvc://{DNS_SUBDOMAIN}/[^?#]+$",
        "pvc:// needs a claim name and a path: pvc://CLAIM-NAME/PATH",
    ),
    UriRule("file://", r"^file:///[^?#]+$", "expected file:///ABSOLUTE/PATH"),
    UriRule("", r"/\.\.(/|$)", "must not climb out of its volume or bucket with ..", forbid=True),
    UriRule("", r"/(\?[^#]*)?$", "must name a file, not end in /", forbid=True),
)


SourceUri = Annotated[
    str,
    Field(min_length=1, max_length=URI_MAX_LENGTH),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": URI_MAX_LENGTH}),
]
"""A URI the fetcher (or a volume mount) can take: `SOURCE_RULES` say which."""


def _has_suffix(field: str, suffixes: Iterable[str]) -> str:
    """CEL: the URI in `field` ends in one of `suffixes` before any query, as `suffix_of` reads
    it (a suffix inside the query, `m.onnx?v=.keras`, is not the file's)."""
    alternatives = "|".join(re.escape(suffix.removeprefix(".")) for suffix in suffixes)
    pattern = rf"^[^?]*\.({alternatives})(\?.*)?$"
    return f"self.{field}.matches({cel_string(pattern)})"


_REMOTE = "^(" + "|".join(REMOTE_SCHEMES) + ")://"


def _remote(uri: str | None) -> bool:
    return uri is not None and scheme_of(uri) in REMOTE_SCHEMES


FORMAT_KNOWN: Rule[ModelSource] = Rule(
    f"has(self.format) || {_has_suffix('storageUri', MODEL_FORMATS)}",
    lambda source: source.format is not None or suffix_of(source.storage_uri) in MODEL_FORMATS,
    "cannot tell the format from the URI's extension: set format",
    field="format",
    explain=lambda source: (
        f"cannot tell the format from the URI's extension "
        f"({suffix_of(source.storage_uri) or 'none'}): set format (keras, tflite or openvino)"
    ),
)
LABELS_FILE: Rule[ModelSource] = Rule(
    f"!has(self.labelsUri) || {_has_suffix('labelsUri', LABEL_SUFFIXES)}",
    lambda source: source.labels_uri is None or suffix_of(source.labels_uri) in LABEL_SUFFIXES,
    "must name a .txt (one label a line) or .json labels file",
    field="labelsUri",
)
SHA256_DOWNLOADED: Rule[ModelSource] = Rule(
    f"!has(self.sha256) || self.storageUri.matches({cel_string(_REMOTE)})",
    lambda source: source.sha256 is None or _remote(source.storage_uri),
    "is checked while downloading: pvc:// and file:// models are not downloaded",
    field="sha256",
)
CREDENTIALS_USED: Rule[ModelSource] = Rule(
    f"!has(self.credentialsSecret) || self.storageUri.matches({cel_string(_REMOTE)}) || "
    f"(has(self.labelsUri) && self.labelsUri.matches({cel_string(_REMOTE)}))",
    lambda source: (
        source.credentials_secret is None
        or _remote(source.storage_uri)
        or _remote(source.labels_uri)
    ),
    "is only used to download from s3://, gs:// or https://",
    field="credentialsSecret",
)
SOURCE_RULES = (
    *(rule.on("storage_uri") for rule in URI_RULES),
    *(rule.on("labels_uri", optional=True) for rule in URI_RULES),
    FORMAT_KNOWN,
    LABELS_FILE,
    SHA256_DOWNLOADED,
    CREDENTIALS_USED,
)
"""ModelSource's rules, in the order the operator checks them (the first broken is reported)."""
