"""The Open Inference Protocol (KServe V2) over REST, with the binary tensor data extension
(`Inference-Header-Content-Length`, what tritonclient sends) and Triton's classification
extension. Errors are `{"error": "..."}` (see `responses.error_response`)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from ..dataplane import MODEL_VERSION, DataPlane, RequestedOutput
from ..errors import InvalidInput
from ..tensors import Tensor, checked_shape, from_raw, from_values, to_raw
from .responses import status_and_headers

HEADER_LENGTH = "Inference-Header-Content-Length"
_MODEL = "/v2/models/<name>"
_VERSION = "/v2/models/<name>/versions/<version>"


def register(app: Flask, plane: DataPlane) -> None:
    @app.get("/v2")
    def server_metadata() -> Response:
        return jsonify(plane.server_metadata())

    @app.get("/v2/health/live")
    def live() -> Response:
        return jsonify(live=True)

    @app.get("/v2/health/ready")
    def ready() -> tuple[Response, int, dict[str, str]]:
        readiness = plane.readiness()
        body = jsonify(ready=readiness.ready, status=readiness.status)
        return body, *status_and_headers(readiness.ready, readiness.retry_after_s)

    def model_route(suffix: str, method: str) -> Callable[[Callable[..., Any]], Any]:
        """One view for a model's path with and without `/versions/<version>`."""

        def decorate(view: Callable[..., Any]) -> Any:
            app.route(_MODEL + suffix, methods=[method], defaults={"version": None})(view)
            return app.route(_VERSION + suffix, methods=[method])(view)

        return decorate

    @model_route("", "GET")
    def model_metadata(name: str, version: str | None) -> Response:
        return jsonify(plane.model_metadata(name, version))

    @model_route("/ready", "GET")
    def model_ready(name: str, version: str | None) -> tuple[Response, int, dict[str, str]]:
        ready = plane.model_ready(name, version)
        readiness = plane.readiness()
        body = jsonify(name=name, ready=ready)
        return body, *status_and_headers(ready, readiness.retry_after_s)

    @model_route("/infer", "POST")
    def infer(name: str, version: str | None) -> Response:
        request.max_content_length = plane.json_body_limit
        plane.check_model(name, version)
        document, binary = _split_body(request.get_data())
        inputs = _inputs(document, binary)
        outputs, binary_outputs = _requested_outputs(document)
        tensors = plane.infer(name, version, inputs, outputs)
        answer: dict[str, Any] = {"model_name": name, "model_version": version or MODEL_VERSION}
        if "id" in document:
            answer["id"] = document["id"]
        return _response(answer, tensors, binary_outputs)


def _split_body(body: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary data after it (the binary extension)."""
    declared = request.headers.get(HEADER_LENGTH)
    length = len(body)
    if declared is not None:
        if not declared.isdigit() or int(declared) > len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} must be a length within the body's {len(body)} bytes, "
                f"got {declared[:20]!r}"
            )
        length = int(declared)
    try:
        document = json.loads(body[:length])
    except (ValueError, RecursionError):
        raise InvalidInput("the inference request is not valid UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise InvalidInput('expected an inference request: {"inputs": [...]}')
    if "id" in document and not isinstance(document["id"], str):
        raise InvalidInput("the request id must be a string")
    return document, body[length:]


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: parameters must be an object")
    return parameters


def _whole(value: object, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInput(f"{where} must be a whole number >= {minimum}, got {value!r}"[:200])
    return value


def _inputs(document: dict[str, Any], binary: bytes) -> list[Tensor]:
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput('expected "inputs": a list of input tensors')
    tensors = []
    offset = 0
    for position, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"input {position + 1}: expected an object with a name")
        name = item["name"][:60]
        shape = checked_shape(name, item.get("shape"))
        size = _parameters(item, f"input {name!r}").get("binary_data_size")
        if size is not None:
            size = _whole(size, f"input {name!r}: binary_data_size", 0)
            if offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size runs past the body")
            raw = binary[offset : offset + size]
            tensors.append(from_raw(name, item.get("datatype"), shape, raw))
            offset += size
        elif "data" in item:
            tensors.append(_from_json(name, item.get("datatype"), shape, item["data"]))
        else:
            raise InvalidInput(f"input {name!r}: no data and no binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    return tensors


def _from_json(name: str, datatype: object, shape: tuple[int, ...], data: object) -> Tensor:
    """An input's JSON data: BYTES as base64 strings, numbers as they are; flat or nested."""
    if datatype != "BYTES":
        return from_values(name, datatype, shape, data)
    values = _flat(data)
    try:
        if not all(isinstance(value, str) for value in values):
            raise ValueError
        images = [base64.b64decode(str(value), validate=True) for value in values]
    except (binascii.Error, ValueError):
        raise InvalidInput(f"input {name!r}: BYTES data in JSON must be base64 strings") from None
    return from_values(name, datatype, shape, images)


def _flat(data: object) -> list[object]:
    if not isinstance(data, list):
        return [data]
    return [value for item in data for value in _flat(item)]


def _requested_outputs(document: dict[str, Any]) -> tuple[list[RequestedOutput], list[bool]]:
    """The outputs asked for, and whether each goes binary (by its `binary_data`, else the
    request's `binary_data_output`); none asked for: the probabilities."""
    binary_default = _parameters(document, "the request").get("binary_data_output", False)
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list):
        raise InvalidInput('"outputs" must be a list')
    requested, binary = [], []
    for position, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"output {position + 1}: expected an object with a name")
        parameters = _parameters(item, f"output {item['name'][:60]!r}")
        k = _whole(parameters.get("classification", 0), "classification", 0)
        requested.append(RequestedOutput(item["name"], k))
        binary.append(bool(parameters.get("binary_data", binary_default)))
    return requested, binary or [bool(binary_default)]


def _response(answer: dict[str, Any], tensors: list[Tensor], binary: list[bool]) -> Response:
    chunks = []
    answer["outputs"] = []
    for tensor, as_binary in zip(tensors, binary, strict=True):
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if as_binary:
            chunks.append(to_raw(tensor))
            output["parameters"] = {"binary_data_size": len(chunks[-1])}
        elif isinstance(tensor.data, list):
            output["data"] = [item.decode() for item in tensor.data]
        else:
            output["data"] = tensor.data.reshape(-1).tolist()
        answer["outputs"].append(output)
    if not chunks:
        return jsonify(answer)
    header = json.dumps(answer).encode()
    return Response(
        header + b"".join(chunks),
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )
