"""`modelserver fetch URI DEST`: the download step of a pod, made to run as an init container.

Exit 0 when every file is in place, 1 when a download failed (2 for bad arguments, as
argparse does). Success and failure are each one line per file on stdout/stderr and in the
termination log (Kubernetes shows it as the init container's termination message): the
operator reads the served file's sha256, or the reason it failed, from there.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .core import Fetched, FetchError, fetch, redacted

TERMINATION_LOG = Path("/dev/termination-log")


def add_parser(commands: Any) -> None:
    """Add `fetch` to the `modelserver` subcommands (`commands` is argparse's subparsers)."""
    parser = commands.add_parser(
        "fetch",
        help="download a model file from s3://, gs://, https://, file:// or pvc:// to a path",
        description=__doc__,
    )
    parser.add_argument("uri", help="where the model file is")
    parser.add_argument("dest", type=Path, help="where to put it (written atomically)")
    parser.add_argument("--sha256", help="refuse a file whose sha256 differs (64 hex digits)")
    parser.add_argument("--labels-uri", help="the labels file (.txt or .json), fetched alike")
    parser.add_argument(
        "--labels-dest",
        type=Path,
        help="where to put the labels (default: beside DEST, under the URI's file name)",
    )
    parser.add_argument("--attempts", type=int, default=5, help="tries per file (default 5)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="connect and read timeout, in seconds"
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        help=f"also write the outcome here (default: {TERMINATION_LOG} where it exists)",
    )


def run(args: argparse.Namespace) -> int:
    # Our retries and skips at INFO; other libraries (botocore says where it found keys) only
    # at WARNING, so that the log stays about the download.
    logging.basicConfig(format="modelserver fetch: %(message)s", level=logging.WARNING)
    logging.getLogger("modelserver.fetch").setLevel(logging.INFO)
    lines: list[str] = []
    try:
        for uri, dest, sha256 in _files(args):
            fetched = fetch(uri, dest, sha256, attempts=args.attempts, timeout_s=args.timeout)
            lines.append(_success(fetched))
            print(lines[-1])
    except FetchError as error:
        # The reason alone: it becomes the pod's condition message.
        reason = f"modelserver fetch: {error}"
        print(reason, file=sys.stderr)
        _record(args.termination_log, [reason])
        return 1
    _record(args.termination_log, lines)
    return 0


def _files(args: argparse.Namespace) -> list[tuple[str, Path, str | None]]:
    """(URI, destination, sha256) of the model and, when asked for, of its labels."""
    files = [(args.uri, args.dest, args.sha256)]
    if args.labels_uri:
        name = Path(redacted(args.labels_uri).split("?")[0]).name
        labels_dest = args.labels_dest or args.dest.parent / name
        if not labels_dest.name or labels_dest == args.dest:
            raise FetchError(
                f"{redacted(args.labels_uri)}: give --labels-dest (beside {args.dest})"
            )
        files.append((args.labels_uri, labels_dest, None))
    elif args.labels_dest:
        raise FetchError("--labels-dest needs --labels-uri")
    return files


def _success(fetched: Fetched) -> str:
    return (
        f"fetched {redacted(fetched.uri)} to {fetched.path}: "
        f"{fetched.size} bytes, sha256 {fetched.sha256}"
    )


def _record(path: Path | None, lines: list[str]) -> None:
    """Write the outcome where Kubernetes reads the termination message (4096 bytes at most)."""
    if path is None:
        if not TERMINATION_LOG.exists():
            return
        path = TERMINATION_LOG
    try:
        path.write_text("\n".join(lines)[:4096] + "\n")
    except OSError as error:
        print(f"modelserver fetch: cannot write {path}: {error.strerror}", file=sys.stderr)
