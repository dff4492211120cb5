"""The operator and the model server agree: the variables, defaults, port and probe paths the
operator puts in the pod are the ones the server reads and serves. The two distributions
cannot import each other (the operator image has no TensorFlow), so this test holds them
together."""

from __future__ import annotations

import time
import typing
from pathlib import Path
from typing import Any

import pytest
from kubeclassify_operator.builders import Owner, build_deployment
from kubeclassify_operator.spec import Runtime, parse_spec
from modelserver.app import create_app
from modelserver.config import DEFAULT_GRPC_PORT, DEFAULT_PORT, OPTIONS, Settings
from modelserver.models.formats import BACKENDS, PRECISIONS


def server_container(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    owner = Owner(name="demo", namespace="default", uid="1234")
    deployment = build_deployment(owner, parse_spec(spec or {}))
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_pod_environment_is_the_servers_defaults() -> None:
    env = {var["name"]: var["value"] for var in server_container()["env"]}
    assert set(env) <= {option.env for option in OPTIONS}
    assert Settings.from_env(env) == Settings()


@pytest.mark.parametrize(
    ("server", "queue_limit"),
    [({"threads": 8}, 6), ({"maxQueue": 10}, 10), ({"maxQueue": 0}, None)],
)
def test_the_servers_settings_reach_it(server: dict[str, Any], queue_limit: int | None) -> None:
    env = {var["name"]: var["value"] for var in server_container({"server": server})["env"]}
    assert Settings.from_env(env).queue_limit == queue_limit


@pytest.mark.parametrize("page", [True, False])
def test_the_page_setting_reaches_the_server(page: bool) -> None:
    env = {var["name"]: var["value"] for var in server_container({"server": {"page": page}})["env"]}
    assert Settings.from_env(env).page is page


def test_spec_runtime_offers_exactly_the_servers_backends_and_precisions() -> None:
    hints = typing.get_type_hints(Runtime)
    assert typing.get_args(hints["backend"]) == ("auto", *BACKENDS)
    assert typing.get_args(hints["precision"]) == ("auto", *PRECISIONS)
    runtime = {"backend": "openvino", "precision": "int8"}
    env = {var["name"]: var["value"] for var in server_container({"runtime": runtime})["env"]}
    settings = Settings.from_env(env)
    assert (settings.backend, settings.precision) == ("openvino", "int8")


@pytest.mark.parametrize("grpc", [True, False])
def test_the_grpc_port_is_the_one_the_server_listens_on(grpc: bool) -> None:
    container = server_container({"server": {"grpc": grpc}})
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {var["name"]: var["value"] for var in container["env"]}
    assert ports.get("grpc", 0) == Settings.from_env(env).grpc_port
    assert ports == (
        {"http": DEFAULT_PORT, "grpc": DEFAULT_GRPC_PORT} if grpc else {"http": DEFAULT_PORT}
    )


def test_the_port_and_probe_paths_are_served(shared_dir: Path) -> None:
    container = server_container()
    assert container["ports"][0]["containerPort"] == DEFAULT_PORT
    models = shared_dir / "models"
    app = create_app(
        Settings(
            model_file=models / "mobilenet_v2_1.0_224_quant.tflite",
            labels_file=models / "imagenet_labels.txt",
        )
    )
    client = app.test_client()
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200, probe
