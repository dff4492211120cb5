"""Which server image a classifier runs: the lean OpenVINO image unless its spec needs
TensorFlow or a GPU; a named image is kept, or refused where it cannot serve the spec."""

from typing import Any

import pytest
from kubeclassify_operator import builders
from kubeclassify_operator.builders import Owner
from kubeclassify_operator.images import ServerImages, server_image
from kubeclassify_operator.spec import InvalidSpec, parse_spec

IMAGES = ServerImages(openvino="reg/ms:1", tensorflow="reg/ms:1-tf", gpu="reg/ms:1-gpu")
GPU = {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}}
KERAS = {"modelSource": {"storageUri": "s3://models/cats.keras"}}
TFLITE = {"modelSource": {"storageUri": "s3://models/cats.tflite"}}
IR = {"modelSource": {"storageUri": "s3://models/cats.xml"}}


@pytest.mark.parametrize(
    ("raw", "image"),
    [
        ({}, "reg/ms:1"),
        ({"runtime": {"backend": "openvino", "precision": "bf16"}}, "reg/ms:1"),
        (TFLITE, "reg/ms:1"),
        (IR, "reg/ms:1"),
        ({"runtime": {"backend": "tensorflow"}}, "reg/ms:1-tf"),
        ({**TFLITE, "runtime": {"backend": "tensorflow"}}, "reg/ms:1-tf"),
        (KERAS, "reg/ms:1-tf"),
        ({"resources": GPU}, "reg/ms:1-gpu"),
        ({"resources": GPU, **KERAS}, "reg/ms:1-gpu"),
        ({"image": "mine/ms:2", "runtime": {"backend": "tensorflow"}}, "mine/ms:2"),
        ({"image": "reg/ms:1-tf", **KERAS}, "reg/ms:1-tf"),
    ],
)
def test_the_image_that_serves_the_spec(raw: dict[str, Any], image: str) -> None:
    assert server_image(parse_spec(raw), IMAGES) == image


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (
            {"image": "reg/ms:1", "runtime": {"backend": "tensorflow"}},
            "spec.image: reg/ms:1 has OpenVINO only, and runtime.backend: tensorflow needs "
            "TensorFlow: remove spec.image (the operator then runs reg/ms:1-tf)",
        ),
        ({"image": "reg/ms:1", **KERAS}, "a .keras model"),
        (
            {"resources": GPU, "runtime": {"backend": "openvino"}},
            "spec.runtime.backend: openvino cannot drive nvidia.com/gpu",
        ),
    ],
)
def test_an_image_that_cannot_serve_the_spec_is_refused_with_the_fix(
    raw: dict[str, Any], said: str
) -> None:
    with pytest.raises(InvalidSpec) as refused:
        server_image(parse_spec(raw), IMAGES)
    assert said in str(refused.value)


def test_the_operators_variables_name_mirrored_images() -> None:
    images = ServerImages.from_environ(
        {"KUBECLASSIFY_SERVER_IMAGE": "m/ov:1", "KUBECLASSIFY_SERVER_IMAGE_TENSORFLOW": "m/tf:1"}
    )
    assert images == ServerImages(openvino="m/ov:1", tensorflow="m/tf:1", gpu=ServerImages().gpu)
    assert ServerImages.from_environ({}) == ServerImages()


def test_the_fetchers_run_the_servers_image() -> None:
    """One image per node to pull: `modelserver fetch` is in every server image."""
    spec = parse_spec(
        {**KERAS, "modelSource": {**KERAS["modelSource"], "labelsUri": "s3://models/labels.txt"}}
    )
    owner = Owner(name="cats", namespace="ml", uid="u-1")
    pod = builders.build_deployment(owner, spec, images=IMAGES)["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert images == {"reg/ms:1-tf"}
