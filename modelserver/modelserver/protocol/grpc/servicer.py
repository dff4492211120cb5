"""`inference.GRPCInferenceService` on the data plane, served by grpcio.

Each gunicorn worker runs its own gRPC server on GRPC_PORT beside its HTTP threads, sharing
its model, batcher and queue bound: grpcio binds with SO_REUSEPORT, so the kernel spreads
new connections over the workers (a connection, and so a channel, stays with one worker).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from ..dataplane import MODEL_VERSION, DataPlane, RequestedOutput, observe_request
from ..errors import InferenceError, InvalidInput, ModelNotFound, NotReady, Overloaded
from ..tensors import Tensor, checked_shape, from_raw, from_values, to_raw
from .messages import SERVICE, message_class

log = logging.getLogger(__name__)

GRPC_STATUS: dict[type[InferenceError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.UNAVAILABLE,
}
# Typed contents (what a client sends without raw_input_contents), by datatype.
_CONTENTS = {"BYTES": "bytes_contents", "UINT8": "uint_contents", "FP32": "fp32_contents"}


class InferenceServicer:
    """The six RPCs (`ModelInfer` is `model_infer`): a request message in, its response out."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def server_live(self, request: Any) -> Any:
        return message_class("ServerLiveResponse")(live=True)

    def server_ready(self, request: Any) -> Any:
        return message_class("ServerReadyResponse")(ready=self.plane.readiness().ready)

    def model_ready(self, request: Any) -> Any:
        ready = self.plane.model_ready(request.name, request.version)
        return message_class("ModelReadyResponse")(ready=ready)

    def server_metadata(self, request: Any) -> Any:
        return message_class("ServerMetadataResponse")(**self.plane.server_metadata())

    def model_metadata(self, request: Any) -> Any:
        return message_class("ModelMetadataResponse")(
            **self.plane.model_metadata(request.name, request.version)
        )

    def model_infer(self, request: Any) -> Any:
        self.plane.check_model(request.model_name, request.model_version)
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidInput(
                f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: "
                "give every input its raw contents, or none"
            )
        inputs = [
            _tensor(item, raw[position] if raw else None)
            for position, item in enumerate(request.inputs)
        ]
        outputs = [
            RequestedOutput(item.name, _classification(item.parameters)) for item in request.outputs
        ]
        tensors = self.plane.infer(request.model_name, request.model_version, inputs, outputs)
        response = message_class("ModelInferResponse")(
            model_name=request.model_name,
            model_version=request.model_version or MODEL_VERSION,
            id=request.id,
        )
        for tensor in tensors:
            output = response.outputs.add(
                name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
            )
            if raw:  # answered in the form asked in
                response.raw_output_contents.append(to_raw(tensor))
            elif isinstance(tensor.data, list):
                output.contents.bytes_contents.extend(tensor.data)
            else:
                output.contents.fp32_contents.extend(tensor.data.reshape(-1).tolist())
        return response


def _tensor(item: Any, raw: bytes | None) -> Tensor:
    name = item.name[:60]
    shape = checked_shape(name, list(item.shape))
    if raw is not None:
        return from_raw(name, item.datatype, shape, raw)
    field = _CONTENTS.get(item.datatype)
    values = list(getattr(item.contents, field)) if field else []
    return from_values(name, item.datatype, shape, values)


def _classification(parameters: Any) -> int:
    if "classification" not in parameters:
        return 0
    parameter = parameters["classification"]
    if parameter.WhichOneof("parameter_choice") != "int64_param":
        raise InvalidInput("classification must be an int64 parameter")
    value: int = parameter.int64_param
    return value


def _unary(plane: DataPlane, method: str, call: Callable[[Any], Any]) -> Any:
    """One RPC with the data plane's errors as gRPC status codes, in the shared metrics."""
    endpoint = f"/{SERVICE.full_name}/{method}"

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        try:
            return call(request)
        except InferenceError as error:
            code = next(GRPC_STATUS[kind] for kind in type(error).__mro__ if kind in GRPC_STATUS)
            message = error.message
            if isinstance(error, NotReady):
                message = f"not ready: {message}"
        except Exception:
            log.exception("internal error on %s", endpoint)
            code, message = grpc.StatusCode.INTERNAL, "internal server error (logged on the server)"
        finally:
            observe_request(endpoint, "grpc", code.name, time.perf_counter() - started)
        context.abort(code, message)

    descriptor = SERVICE.methods_by_name[method]
    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=message_class(descriptor.input_type.name).FromString,
        response_serializer=message_class(descriptor.output_type.name).SerializeToString,
    )


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def serve(plane: DataPlane) -> grpc.Server:
    """A started gRPC server for `plane` on GRPC_PORT; raises RuntimeError if it cannot bind."""
    settings = plane.settings
    servicer = InferenceServicer(plane)
    handlers = {
        method.name: _unary(plane, method.name, getattr(servicer, _snake_case(method.name)))
        for method in SERVICE.methods
    }
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="grpc"),
        handlers=[grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)],
        options=[
            ("grpc.so_reuseport", 1),  # one server per gunicorn worker, on the same port
            ("grpc.max_receive_message_length", plane.message_limit),
        ],
    )
    address = f"{settings.host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen for gRPC on {address} (GRPC_PORT)")
    server.start()
    log.info("gRPC (Open Inference Protocol) on %s", address)
    return server
