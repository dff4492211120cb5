"""The Open Inference Protocol over gRPC on the real server: typed contents as well as raw,
every bad call its exact status code, and, with WORKERS=2, a gRPC server in each worker on
the one port, which SIGTERM drains with HTTP. (The real clients: test_v2_clients.py.)"""

from __future__ import annotations

import signal
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from modelserver.protocol.grpc.messages import message_class
from oip_grpc import call, status_of
from PIL import Image
from serving import (
    HeldServer,
    RunningServer,
    listening_inodes,
    start_held_server,
    wait_draining,
    wait_ready,
)

Code = grpc.StatusCode


def raw_bytes(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def images(count: int) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [count]}


def int64(value: int) -> Any:
    return message_class("InferParameter")(int64_param=value)


@pytest.fixture(scope="module")
def channel(mobilenet_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(mobilenet_server.grpc_target) as opened:
        yield opened


def test_typed_contents_in_typed_contents_out(
    channel: grpc.Channel, mobilenet_file: Path, images_dir: Path
) -> None:
    model = mobilenet_file.stem
    assert call(channel, "ServerLive").live and call(channel, "ServerReady").ready
    assert call(channel, "ModelReady", name=model, version="1").ready
    dog = (images_dir / "dog.jpg").read_bytes()
    answer = call(
        channel,
        "ModelInfer",
        model_name=model,
        id="g-1",
        inputs=[{**images(1), "contents": {"bytes_contents": [dog]}}],
    )
    [output] = answer.outputs
    assert (answer.id, answer.model_version, list(output.shape)) == ("g-1", "1", [1, 1001])
    assert not answer.raw_output_contents  # answered in the form asked in
    assert int(np.argmax(output.contents.fp32_contents)) == 163

    pixels = np.asarray(Image.open(images_dir / "dog.jpg").convert("RGB").resize((200, 150)))
    answer = call(
        channel,
        "ModelInfer",
        model_name=model,
        inputs=[
            {
                "name": "pixels",
                "datatype": "UINT8",
                "shape": [1, 150, 200, 3],
                "contents": {"uint_contents": pixels.ravel().tolist()},
            }
        ],
        outputs=[{"name": "probabilities", "parameters": {"classification": int64(2)}}],
    )
    [output] = answer.outputs
    assert (output.datatype, list(output.shape)) == ("BYTES", [1, 2])
    assert output.contents.bytes_contents[0].endswith(b":163:beagle")


CASES: list[tuple[str, str, dict[str, Any], Code, str]] = [
    ("unknown model", "ModelInfer", {"model_name": "vgg16"}, Code.NOT_FOUND, "vgg16"),
    ("unknown version", "ModelInfer", {"model_version": "7"}, Code.NOT_FOUND, "no version '7'"),
    ("unknown model ready", "ModelReady", {"name": "vgg16"}, Code.NOT_FOUND, "vgg16"),
    ("unknown model metadata", "ModelMetadata", {"name": "vgg16"}, Code.NOT_FOUND, "vgg16"),
    ("no inputs", "ModelInfer", {}, Code.INVALID_ARGUMENT, "one input tensor"),
    (
        "wrong datatype",
        "ModelInfer",
        {
            "inputs": [{"name": "x", "datatype": "INT64", "shape": [1]}],
            "raw_input_contents": [b"12345678"],
        },
        Code.INVALID_ARGUMENT,
        "datatype 'INT64'",
    ),
    (
        "raw for some inputs only",
        "ModelInfer",
        {"inputs": [images(1), images(1)], "raw_input_contents": [raw_bytes(b"a")]},
        Code.INVALID_ARGUMENT,
        "1 raw_input_contents for 2 inputs",
    ),
    (
        "shape disagrees with data",
        "ModelInfer",
        {"inputs": [{**images(2), "contents": {"bytes_contents": [b"a"]}}]},
        Code.INVALID_ARGUMENT,
        "holds 2 elements, the data has 1",
    ),
    (
        "negative shape",
        "ModelInfer",
        {"inputs": [{**images(1), "shape": [-3]}], "raw_input_contents": [b""]},
        Code.INVALID_ARGUMENT,
        "shape",
    ),
    (
        "raw without length prefixes",
        "ModelInfer",
        {"inputs": [images(1)], "raw_input_contents": [b"\xff\xd8\xff\xe0 a JPEG?"]},
        Code.INVALID_ARGUMENT,
        "runs past the data",
    ),
    (
        "undecodable image",
        "ModelInfer",
        {"inputs": [images(1)], "raw_input_contents": [raw_bytes(b"hello")]},
        Code.INVALID_ARGUMENT,
        "not an image",
    ),
    (
        "uint8 over 255",
        "ModelInfer",
        {
            "inputs": [
                {
                    "name": "p",
                    "datatype": "UINT8",
                    "shape": [1, 1, 1, 3],
                    "contents": {"uint_contents": [1, 2, 300]},
                }
            ]
        },
        Code.INVALID_ARGUMENT,
        "[0, 255]",
    ),
    (
        "unknown output",
        "ModelInfer",
        {
            "inputs": [images(1)],
            "raw_input_contents": [raw_bytes(b"x")],
            "outputs": [{"name": "logits"}],
        },
        Code.INVALID_ARGUMENT,
        "no output 'logits'",
    ),
    (
        "classification as text",
        "ModelInfer",
        {
            "inputs": [images(1)],
            "raw_input_contents": [raw_bytes(b"x")],
            "outputs": [
                {
                    "name": "probabilities",
                    "parameters": {
                        "classification": message_class("InferParameter")(string_param="3")
                    },
                }
            ],
        },
        Code.INVALID_ARGUMENT,
        "int64",
    ),
    (
        "message over the limit",
        "ModelInfer",
        {"inputs": [images(1)], "raw_input_contents": [raw_bytes(b"\xff" * (3 * 1024 * 1024))]},
        Code.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
]


@pytest.mark.parametrize(
    ("method", "fields", "code", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_bad_call_gets_its_status_code(
    channel: grpc.Channel,
    mobilenet_file: Path,
    method: str,
    fields: dict[str, Any],
    code: Code,
    words: str,
) -> None:
    if method == "ModelInfer":
        fields = {"model_name": mobilenet_file.stem, **fields}
    found, message = status_of(channel, method, **fields)
    assert found == code, message
    assert words in message and "Traceback" not in message


def test_the_worker_survives_every_bad_call(
    mobilenet_server: RunningServer, channel: grpc.Channel
) -> None:
    """Runs after the table above: the worker lives, nothing was INTERNAL, all is counted."""
    assert call(channel, "ServerReady").ready
    assert mobilenet_server.worker_boots() == 1
    text = requests.get(mobilenet_server.url + "/metrics", timeout=10).text
    assert 'code="INTERNAL"' not in text
    endpoint = 'endpoint="/inference.GRPCInferenceService/ModelInfer",method="grpc"'
    assert f'code="INVALID_ARGUMENT",{endpoint}' in text
    assert f'code="NOT_FOUND",{endpoint}' in text


def sockets_of(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


@pytest.fixture(scope="module")
def two_workers(
    server_logs: Path, mobilenet_file: Path, mobilenet_labels: Path
) -> Iterator[HeldServer]:
    server = start_held_server(
        server_logs,
        "--model-file", str(mobilenet_file),
        "--labels", str(mobilenet_labels),
        "--workers", "2",
        "--threads", "8",
        "--graceful-timeout", "60",
    )  # fmt: skip
    wait_ready(server)
    deadline = time.monotonic() + 180  # /readyz answered by one worker: wait for the other too
    while server.log.read_text(errors="replace").count(" ready in ") < 2:
        assert time.monotonic() < deadline and server.process.poll() is None, server.log_tail()
        time.sleep(0.2)
    yield server
    server.stop()


def test_every_worker_serves_grpc_on_the_one_port(
    two_workers: HeldServer, mobilenet_file: Path, images_dir: Path
) -> None:
    port = int(two_workers.grpc_target.rsplit(":", 1)[1])
    children = Path(f"/proc/{two_workers.process.pid}/task/{two_workers.process.pid}/children")
    workers = [int(pid) for pid in children.read_text().split()]
    assert len(workers) == 2 and len(listening_inodes(port)) == 2
    assert all(listening_inodes(port) & sockets_of(pid) for pid in workers)

    dog = raw_bytes((images_dir / "dog.jpg").read_bytes())

    def classify_on_a_new_connection(_: int) -> int:
        with grpc.insecure_channel(two_workers.grpc_target) as fresh:
            answer = call(fresh, "ModelInfer", model_name=mobilenet_file.stem,
                          inputs=[images(1)], raw_input_contents=[dog])  # fmt: skip
            return int(np.frombuffer(answer.raw_output_contents[0], "<f4").argmax())

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(classify_on_a_new_connection, range(16))) == [163] * 16


def test_sigterm_lets_a_grpc_call_in_flight_finish(
    two_workers: HeldServer, mobilenet_file: Path, images_dir: Path
) -> None:
    """Runs last on its server. A call of 8 images is in the model (held there, however fast
    the CPU) when SIGTERM comes: once every worker has taken it, new calls are refused; let go,
    the call still gets all its answers, and the server exits cleanly."""
    server, hold = two_workers, two_workers.hold
    dog = (images_dir / "dog.jpg").read_bytes()
    channel = grpc.insecure_channel(server.grpc_target)
    hold.hold()
    with ThreadPoolExecutor(1) as pool:
        try:
            in_flight = pool.submit(
                call, channel, "ModelInfer", 120, model_name=mobilenet_file.stem,
                inputs=[images(8)], raw_input_contents=[raw_bytes(*[dog] * 8)],
            )  # fmt: skip
            hold.wait_passing()
            server.process.send_signal(signal.SIGTERM)
            wait_draining(server)
            with grpc.insecure_channel(server.grpc_target) as late:
                assert status_of(late, "ServerLive")[0] == Code.UNAVAILABLE
            assert not in_flight.done()
        finally:
            hold.release()
        answer = in_flight.result()
    assert list(answer.outputs[0].shape) == [8, 1001]
    assert (
        np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(8, 1001).argmax(1) == 163
    ).all()
    assert server.process.wait(timeout=120) == 0, server.log_tail()
    channel.close()
