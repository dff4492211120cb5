"""The Open Inference Protocol, proven with the clients the serving ecosystem ships:
tritonclient (HTTP and gRPC) and kserve (REST and gRPC, protocol v2), each against the real
server and the real MobileNetV2, each classifying the tutorial's dog as a beagle.

The clients live in their own venv (requirements-clients.txt, made by `make install-dev`):
they pin protobuf below TensorFlow's, and both register the `inference` proto package, so
each runs in a process of its own (tests/modelserver/oip_clients.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from modelserver.protocol.grpc.messages import message_class
from serving import RunningServer

REPO = Path(__file__).resolve().parents[2]
CLIENTS_PYTHON = REPO / ".venv-clients" / "bin" / "python"
SCRIPT = Path(__file__).with_name("oip_clients.py")


def run_clients(*args: str) -> str:
    if not CLIENTS_PYTHON.exists():
        pytest.fail(
            f"{CLIENTS_PYTHON} is missing: `make install-dev` makes it (tritonclient, kserve)"
        )
    result = subprocess.run(
        [str(CLIENTS_PYTHON), str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("client", ["triton-http", "triton-grpc", "kserve-rest", "kserve-grpc"])
def test_the_dog_is_a_beagle_through_every_client(
    mobilenet_server: RunningServer,
    mobilenet_file: Path,
    mobilenet_labels: Path,
    images_dir: Path,
    client: str,
) -> None:
    target = mobilenet_server.grpc_target if client.endswith("grpc") else mobilenet_server.url
    target = target.removeprefix("http://")
    seen: dict[str, Any] = json.loads(
        run_clients(client, target, mobilenet_file.stem, str(images_dir / "dog.jpg"))
    )
    beagle = mobilenet_labels.read_text().splitlines().index("beagle")
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["bytes_argmax"] == beagle  # encoded JPEG, binary (raw over gRPC)
    assert seen["pixels_argmax"] == beagle  # FP32 pixels at the photo's size, resized
    assert seen.get("json_argmax", beagle) == beagle  # base64 in JSON (kserve REST)
    assert seen["id"] == "req-7"
    assert len(seen["classification"]) == 3
    score, index, label = seen["classification"][0].split(":", 2)
    assert (int(index), label) == (beagle, "beagle") and 0.5 < float(score) <= 1
    if client.startswith("triton"):
        assert seen["extensions"] == ["binary_tensor_data", "classification"]
        assert seen["inputs"] == ["BYTES", "FP32"]


def test_the_compiled_descriptor_is_the_proto_compiled_afresh() -> None:
    generated = REPO / "modelserver/modelserver/protocol/grpc/oip_descriptor.py"
    assert run_clients("descriptor") == generated.read_text(), "regenerate oip_descriptor.py"


@pytest.mark.parametrize("client", ["triton", "kserve"])
def test_every_message_matches_the_clients_proto_field_by_field(client: str) -> None:
    """Every field a client's proto has, ours has with the same number and type (KServe's
    InferParameter lacks Triton's double and uint64 parameters: ours has all five)."""
    theirs: dict[str, list[list[Any]]] = json.loads(run_clients("fields", client))
    for name, fields in theirs.items():
        descriptor = message_class(name).DESCRIPTOR
        ours = [[f.name, f.number, f.type, f.is_repeated] for f in descriptor.fields]
        assert [field for field in fields if field not in ours] == [], name
        if name != "InferParameter":
            assert len(ours) == len(fields), name


def test_the_readmes_tritonclient_snippet_runs(
    mobilenet_server: RunningServer, mobilenet_file: Path
) -> None:
    readme = (REPO / "README.md").read_text()
    marker = "<!-- tested: tests/modelserver/test_v2_clients.py -->\n```python\n"
    snippet = readme.split(marker, 1)[1].split("```", 1)[0]
    snippet = snippet.replace("localhost:5000", mobilenet_server.url.removeprefix("http://"))
    snippet = snippet.replace('"resnet50"', f'"{mobilenet_file.stem}"')
    result = subprocess.run(
        [str(CLIENTS_PYTHON), "-c", snippet], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("[[b'0.") and ":163:beagle' b'" in result.stdout, result.stdout
