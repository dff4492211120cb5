"""The serving ecosystem's own clients against a running server, run by the tests in the
clients' venv (.venv-clients: tritonclient and kserve, see requirements-clients.txt).

    python oip_clients.py triton-http|triton-grpc|kserve-rest|kserve-grpc URL MODEL IMAGE
        prints what the client saw, as JSON: health, metadata, and the answers for the image
        sent as encoded BYTES (binary and, where the client can, JSON), as FP32 pixels, and
        with the classification extension
    python oip_clients.py fields triton|kserve
        prints each Open Inference Protocol message's fields as that client's proto has them
    python oip_clients.py descriptor
        prints modelserver/.../grpc/oip_descriptor.py compiled afresh from inference.proto
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

GRPC_DIR = Path(__file__).resolve().parents[2] / "modelserver/modelserver/protocol/grpc"
MESSAGES = (
    "ServerLiveRequest", "ServerLiveResponse", "ServerReadyRequest", "ServerReadyResponse",
    "ModelReadyRequest", "ModelReadyResponse", "ServerMetadataRequest", "ServerMetadataResponse",
    "ModelMetadataRequest", "ModelMetadataResponse", "ModelMetadataResponse.TensorMetadata",
    "ModelInferRequest", "ModelInferRequest.InferInputTensor",
    "ModelInferRequest.InferRequestedOutputTensor", "ModelInferResponse",
    "ModelInferResponse.InferOutputTensor", "InferParameter", "InferTensorContents",
)  # fmt: skip


def pixels(image: bytes) -> np.ndarray:
    """The photo decoded, at most 320 pixels a side but not the model's 224 x 224 (the
    server resizes), as FP32 [1, H, W, 3] (well within the test server's 2 MB limit)."""
    photo = Image.open(io.BytesIO(image)).convert("RGB")
    photo.thumbnail((320, 320))
    return np.asarray(photo, dtype=np.float32)[None]


def top(classes: Any) -> list[str]:
    return [item.decode() if isinstance(item, bytes) else str(item) for item in classes.ravel()]


def triton(kind: str, url: str, model: str, image: bytes) -> dict[str, Any]:
    if kind == "triton-http":
        import tritonclient.http as client
    else:
        import tritonclient.grpc as client
    server = client.InferenceServerClient(url)
    metadata, server_metadata = server.get_model_metadata(model), server.get_server_metadata()
    if kind == "triton-grpc":  # messages there, dicts over HTTP
        from google.protobuf.json_format import MessageToDict

        metadata, server_metadata = MessageToDict(metadata), MessageToDict(server_metadata)
    seen: dict[str, Any] = {
        "live": server.is_server_live(),
        "ready": server.is_server_ready(),
        "model_ready": server.is_model_ready(model),
        "extensions": server_metadata["extensions"],
        "inputs": [i["datatype"] for i in metadata["inputs"]],
    }
    encoded = client.InferInput("image", [1], "BYTES")
    encoded.set_data_from_numpy(np.array([image], dtype=object))  # binary by default
    answer = server.infer(model, [encoded], request_id="req-7")
    seen["bytes_argmax"] = int(answer.as_numpy("probabilities").argmax())
    seen["id"] = answer.get_response()["id"] if kind == "triton-http" else answer.get_response().id
    photo = pixels(image)
    fp32 = client.InferInput("pixels", list(photo.shape), "FP32")
    fp32.set_data_from_numpy(photo)
    answer = server.infer(model, [fp32])
    seen["pixels_argmax"] = int(answer.as_numpy("probabilities").argmax())
    top3 = client.InferRequestedOutput("probabilities", class_count=3)
    seen["classification"] = top(
        server.infer(model, [encoded], outputs=[top3]).as_numpy("probabilities")
    )
    return seen


async def kserve(kind: str, url: str, model: str, image: bytes) -> dict[str, Any]:
    from kserve import (
        InferenceGRPCClient,
        InferenceRESTClient,
        InferInput,
        InferRequest,
        RESTConfig,
    )
    from kserve.protocol.infer_type import RequestedOutput

    def request(inputs: list[Any], outputs: list[Any] | None = None) -> Any:
        return InferRequest(model, inputs, request_id="req-7", request_outputs=outputs)

    encoded = InferInput("image", [1], "BYTES")
    encoded.set_data_from_numpy(np.array([image], dtype=object), binary_data=True)
    as_json = InferInput("image", [1], "BYTES", data=[base64.b64encode(image).decode()])
    photo = pixels(image)
    fp32 = InferInput("pixels", list(photo.shape), "FP32")
    fp32.set_data_from_numpy(photo, binary_data=True)
    top3 = RequestedOutput("probabilities", parameters={"classification": 3})
    seen: dict[str, Any] = {}
    if kind == "kserve-rest":
        rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        base = f"http://{url}"
        seen["live"] = await rest.is_server_live(base)
        seen["ready"] = await rest.is_server_ready(base)
        seen["model_ready"] = await rest.is_model_ready(base, model)

        async def infer(inputs: list[Any], outputs: list[Any] | None = None) -> Any:
            return await rest.infer(base, request(inputs, outputs), model_name=model)

        seen["json_argmax"] = int((await infer([as_json])).outputs[0].as_numpy().argmax())
    else:
        grpc = InferenceGRPCClient(url)
        seen["live"] = await grpc.is_server_live()
        seen["ready"] = await grpc.is_server_ready()
        seen["model_ready"] = await grpc.is_model_ready(model)

        async def infer(inputs: list[Any], outputs: list[Any] | None = None) -> Any:
            return await grpc.infer(request(inputs, outputs))

    answer = await infer([encoded])
    seen["bytes_argmax"] = int(answer.outputs[0].as_numpy().argmax())
    seen["id"] = answer.id
    seen["pixels_argmax"] = int((await infer([fp32])).outputs[0].as_numpy().argmax())
    seen["classification"] = top((await infer([encoded], [top3])).outputs[0].as_numpy())
    return seen


def fields(kind: str) -> dict[str, list[list[Any]]]:
    if kind == "triton":
        from tritonclient.grpc import service_pb2 as module
    else:
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as module
    found = {}
    for name in MESSAGES:
        descriptor = module.DESCRIPTOR.message_types_by_name[name.split(".")[0]]
        if "." in name:
            descriptor = descriptor.nested_types_by_name[name.split(".")[1]]
        found[name] = sorted(
            [field.name, field.number, field.type, field.is_repeated] for field in descriptor.fields
        )
    return found


def descriptor() -> str:
    """oip_descriptor.py's text, compiled from inference.proto with grpcio-tools' protoc."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.pb"
        args = ["protoc", f"-I{GRPC_DIR}", f"--descriptor_set_out={out}", "inference.proto"]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    encoded = base64.b64encode(compiled.file[0].SerializeToString()).decode()
    lines = "\n".join(f'    "{line}"' for line in textwrap.wrap(encoded, 92))
    header = (GRPC_DIR / "oip_descriptor.py").read_text().split("SERIALIZED_BASE64")[0]
    return f"{header}SERIALIZED_BASE64 = (\n{lines}\n)\n"


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "descriptor":
        sys.stdout.write(descriptor())
    elif command == "fields":
        print(json.dumps(fields(argv[1])))
    else:
        url, model, image = argv[1], argv[2], Path(argv[3]).read_bytes()
        if command.startswith("triton"):
            print(json.dumps(triton(command, url, model, image)))
        else:
            print(json.dumps(asyncio.run(kserve(command, url, model, image))))


if __name__ == "__main__":
    main(sys.argv[1:])
