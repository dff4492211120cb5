"""`file:///path`: a file already in the image (or on any mounted volume)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from .core import FetchError, Location, Sink


def download(location: Location, sink: Sink, env: Mapping[str, str], timeout_s: float) -> None:
    if location.authority not in ("", "localhost") or not location.path.startswith("/"):
        raise FetchError(f"{location.shown}: expected file:///ABSOLUTE/PATH")
    copy(location, Path(unquote(location.path)), sink)


def copy(location: Location, path: Path, sink: Sink) -> None:
    """Stream the local file at `path` into `sink`; its absence is a permanent error."""
    try:
        with path.open("rb") as source:
            shutil.copyfileobj(source, sink)
    except FileNotFoundError:
        raise FetchError(f"{location.shown}: no such file {path}") from None
    except IsADirectoryError:
        raise FetchError(f"{location.shown}: {path} is a directory, not a file") from None
    except OSError as error:
        raise FetchError(f"{location.shown}: cannot read {path}: {error.strerror}") from None
