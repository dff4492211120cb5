"""The errors a request can meet, defined once; each transport maps them to its own codes
(`rest.server` to HTTP statuses, `grpc.servicer` to gRPC status codes).

A request over the size limit has no error here: each transport refuses it before reading it
(werkzeug's 413 under `MAX_CONTENT_LENGTH`, grpc's RESOURCE_EXHAUSTED under its message limit)."""

from __future__ import annotations


class InferenceError(Exception):
    """A request the server will not serve; the message is fit to send back."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(InferenceError):
    """The client sent something malformed: bad JSON, tensor, image or parameter."""


class UnsupportedMediaType(InvalidInput):
    """The body is not in an encoding the endpoint takes (HTTP's 415; invalid elsewhere)."""


class ModelNotFound(InferenceError):
    """No such model or version on this server."""


class NotReady(InferenceError):
    """The model cannot take requests now (loading, draining or failed)."""


class Overloaded(InferenceError):
    """The worker already holds its bound of requests: refusing now beats queueing forever."""


# Seconds a client should wait before retrying: while loading or draining, and when over
# capacity (a queue drains in about a second on a warm model).
NOT_READY_RETRY_AFTER_S = 5
OVERLOADED_RETRY_AFTER_S = 1
