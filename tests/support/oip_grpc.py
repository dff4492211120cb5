"""Calling a server's `inference.GRPCInferenceService` with plain grpcio and the server's own
message classes (the real clients' tests run in their own venv: test_v2_clients.py)."""

from __future__ import annotations

from typing import Any

import grpc
from modelserver.protocol.grpc.messages import SERVICE, message_class


def call(channel: grpc.Channel, method: str, timeout_s: float = 60, **fields: Any) -> Any:
    """`method` (e.g. "ModelInfer") with a request made of `fields`; raises grpc.RpcError."""
    descriptor = SERVICE.methods_by_name[method]
    stub = channel.unary_unary(
        f"/{SERVICE.full_name}/{method}",
        request_serializer=message_class(descriptor.input_type.name).SerializeToString,
        response_deserializer=message_class(descriptor.output_type.name).FromString,
    )
    request = message_class(descriptor.input_type.name)(**fields)
    return stub(request, timeout=timeout_s)


def status_of(channel: grpc.Channel, method: str, **fields: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and message a call ends with (OK and "" when it succeeds)."""
    try:
        call(channel, method, **fields)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""
