"""The part every scheme shares: parsing the URI, the atomic write, the digest, the retries.

A scheme module only moves bytes: `download(location, sink, env, timeout_s)` writes the
object into `sink` and turns its own failures into `FetchError` (permanent) or
`TransientError` (worth another attempt). Everything else happens here, once.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlsplit

log = logging.getLogger("modelserver.fetch")

# Scheme -> the module (in this package) that downloads it. Imported on first use, so that
# boto3 is loaded only for s3:// and gs://.
SCHEMES: Mapping[str, str] = {
    "s3": "s3",
    "gs": "gs",
    "https": "https",
    "file": "local",
    "pvc": "pvc",
}
MAX_BACKOFF_S = 30.0
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class FetchError(Exception):
    """A download that failed for good; the message is one line that names the URI."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class TransientError(FetchError):
    """A failure that another attempt may not meet (connection reset, timeout, 5xx, 429)."""


@dataclass(frozen=True)
class Location:
    """A parsed source URI; `shown` is the form fit for messages (no userinfo, no query)."""

    uri: str
    scheme: str
    authority: str
    path: str

    @property
    def shown(self) -> str:
        return redacted(self.uri)


@dataclass(frozen=True)
class Fetched:
    """What landed at `path`: what the operator reports as the served model."""

    uri: str
    path: Path
    sha256: str
    size: int


class Sink(Protocol):
    """Where a scheme module writes the bytes (the partial file, hashed on the way)."""

    def write(self, data: bytes, /) -> object: ...


Download = Callable[[Location, Sink, Mapping[str, str], float], None]


def parse(uri: str) -> Location:
    """Split `uri`, refusing what no scheme module can take, before any file is touched."""
    try:
        parts = urlsplit(uri)
    except ValueError as error:
        raise FetchError(f"{redacted(uri)!r} is not a URI: {error}") from None
    if parts.scheme not in SCHEMES:
        raise FetchError(
            f"{redacted(uri)!r}: unsupported scheme {_clip(parts.scheme)!r}; use one of "
            + ", ".join(f"{scheme}://" for scheme in SCHEMES)
        )
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Location(uri, parts.scheme, parts.netloc, path)


def checked_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not SHA256_HEX.fullmatch(sha256.lower()):
        raise FetchError(f"--sha256 must be 64 hexadecimal digits, got {_clip(sha256)!r}")
    return sha256.lower()


def fetch(
    uri: str,
    dest: Path,
    sha256: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    attempts: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """Put the object at `uri` at `dest` atomically, checking `sha256` when given.

    Transient failures are retried `attempts` times in all, with exponential backoff; a
    permanent one raises at once. Whatever fails, `dest` is untouched and no partial file
    is left beside it. Credentials come from `env` (the process environment by default)."""
    location = parse(uri)
    expected = checked_sha256(sha256)
    if attempts < 1:
        raise FetchError(f"attempts must be at least 1, got {attempts}")
    env = os.environ if env is None else env
    if expected and _holds(dest, expected):
        log.info("%s is already at %s (sha256 %s)", location.shown, dest, expected)
        return Fetched(uri, dest, expected, dest.stat().st_size)
    download: Download = importlib.import_module(
        f"{__package__}.{SCHEMES[location.scheme]}"
    ).download
    attempt = 1
    while True:
        try:
            return _attempt(download, location, dest, expected, env, timeout_s)
        except TransientError as error:
            if attempt == attempts:
                tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
                raise TransientError(f"{error} (gave up after {tries})") from None
            delay = min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1))
            log.warning("attempt %d of %d: %s; retrying in %.1fs", attempt, attempts, error, delay)
            sleep(delay)
            attempt += 1


def _holds(dest: Path, sha256: str) -> bool:
    """Whether `dest` is already the file wanted (an init container restarted in its pod)."""
    try:
        return dest.is_file() and file_digest(dest, "sha256") == sha256
    except OSError:
        return False


def _attempt(
    download: Download,
    location: Location,
    dest: Path,
    expected: str | None,
    env: Mapping[str, str],
    timeout_s: float,
) -> Fetched:
    try:
        with partial_file(dest) as partial:
            sink = _HashingSink(partial, f"{location.shown}: cannot write {dest}")
            download(location, sink, env, timeout_s)
            digest = sink.digest.hexdigest()
            if expected and digest != expected:
                raise FetchError(
                    f"{location.shown}: sha256 is {digest}, expected {expected}; "
                    f"nothing written to {dest}"
                )
    except OSError as error:  # making, syncing or renaming the partial file
        raise FetchError(f"{location.shown}: cannot write {dest}: {error.strerror}") from None
    return Fetched(location.uri, dest, digest, sink.size)


class _HashingSink:
    """Writes to the partial file while hashing; a local write error (a full emptyDir) is
    permanent, and said as such, whatever the scheme module catches around it."""

    def __init__(self, out: IO[bytes], failure: str) -> None:
        self.out, self.failure = out, failure
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        try:
            self.out.write(data)
        except OSError as error:
            raise FetchError(f"{self.failure}: {error.strerror}") from None
        self.digest.update(data)
        self.size += len(data)
        return len(data)


@contextmanager
def partial_file(destination: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside `destination`, renamed over it when the block succeeds and
    removed when it raises: readers never see a half-written file, even after a crash
    (the rename is atomic on one filesystem)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial", delete=False
    ) as partial:
        try:
            yield partial
            partial.flush()
            os.fsync(partial.fileno())
            partial.close()
            Path(partial.name).chmod(0o644)
            Path(partial.name).replace(destination)
        finally:
            Path(partial.name).unlink(missing_ok=True)


def file_digest(path: Path, algorithm: str) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, algorithm).hexdigest()


def redacted(uri: str) -> str:
    """`uri` fit for a message or a log: no userinfo (user:password@), no query (a presigned
    URL's signature), no control characters, at most 200 characters."""
    uri = re.sub(r"^([^:/?#]*://)[^/?#]*@", r"\1", uri)
    uri = re.sub(r"\?.*", "?…", uri, flags=re.DOTALL)
    return _clip("".join(c if c.isprintable() else "?" for c in uri))


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
