"""`fetch(uri, dest)`: a model or labels file from object storage, a URL or a volume, to a path.

One module per scheme (s3, gs, https, file as `local`, pvc), found through `core.SCHEMES` and
imported on first use; `core` holds what they share (atomic write, sha256, retries).
"""

from .core import SCHEMES, Fetched, FetchError, TransientError, fetch, file_digest, partial_file

__all__ = [
    "SCHEMES",
    "FetchError",
    "Fetched",
    "TransientError",
    "fetch",
    "file_digest",
    "partial_file",
]
