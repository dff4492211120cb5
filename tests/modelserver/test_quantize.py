"""INT8 by `modelserver quantize`: a small Keras classifier trained here on images made here
(so FP32 and INT8 answers can be compared), quantized, checked, refused, and served."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from modelserver.config import Settings
from PIL import Image
from serving import ready_app

COLOURS = ("red", "green", "blue")
SIZE = 32


def coloured_image(rng: np.random.Generator, colour: int) -> np.ndarray:
    """Noise with one channel brighter: the class is the bright channel."""
    pixels = rng.integers(0, 140, (SIZE, SIZE, 3))
    pixels[..., colour] += rng.integers(60, 116)
    return pixels.astype(np.uint8)


def write_folder(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir()
    for index, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{index:03}.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-way colour classifier trained to near-perfect accuracy, and image folders."""
    directory = tmp_path_factory.mktemp("quantize")
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 3, 600)
    images = np.stack([coloured_image(rng, int(c)) for c in classes])
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(images[:400], classes[:400], epochs=15, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    model.save(directory / "colours.keras")
    (directory / "labels.txt").write_text("\n".join(COLOURS) + "\n")
    write_folder(directory / "calibration", list(images[400:500]))
    write_folder(directory / "held-out", list(images[500:600]))
    write_folder(directory / "black", [np.zeros((SIZE, SIZE, 3), np.uint8)] * 20)
    return directory


def quantize(directory: Path, calibration: str, output: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserver", "quantize",
         "--model-file", str(directory / "colours.keras"),
         "--labels", str(directory / "labels.txt"),
         "--calibration", str(directory / calibration),
         "--held-out", str(directory / "held-out"),
         "--output", str(directory / output)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=directory,  # not a source checkout, whose modelserver/ folder would shadow
    )  # fmt: skip


def test_a_well_calibrated_model_passes_and_is_served_as_int8(trained: Path) -> None:
    result = quantize(trained, "calibration", "colours_int8.xml")
    assert result.returncode == 0, result.stderr
    assert "top-1 agrees with FP32 on" in result.stdout
    ir = trained / "colours_int8.xml"
    assert 'type="FakeQuantize"' in ir.read_text() and ir.with_suffix(".bin").is_file()

    client = ready_app(Settings(model_file=ir, labels_file=trained / "labels.txt")).test_client()
    status = client.get("/v1/models/colours_int8").json
    assert status["backend"] == "openvino" and status["precision"] == "int8"  # type: ignore[index]
    assert status["quantized"] is True  # type: ignore[index]
    model = keras.models.load_model(trained / "colours.keras")
    for path in sorted((trained / "held-out").iterdir())[:10]:
        answer = client.post("/predict", data={"image": (io.BytesIO(path.read_bytes()), path.name)})
        assert answer.status_code == 200, answer.json
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[np.newaxis]
        expected = COLOURS[int(np.argmax(model(pixels)))]
        assert answer.json["predictions"][0]["label"] == expected  # type: ignore[index]


def test_a_calibration_that_misses_the_threshold_is_refused_with_the_figure(trained: Path) -> None:
    result = quantize(trained, "black", "refused.xml")
    assert result.returncode == 1, result.stderr
    assert "held-out images" in result.stderr and "below the threshold of 99.0%" in result.stderr
    assert re.search(r"agrees with FP32 on \d+\.\d% of the 100", result.stderr)
    assert not (trained / "refused.xml").exists() and not (trained / "refused.bin").exists()
