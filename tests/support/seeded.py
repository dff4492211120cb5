"""Models made by the tests themselves, where the real files cannot be had offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def write_seeded_resnet50_weights(path: Path, seed: int) -> None:
    """A randomly initialised ResNet50 in the official weights layout (Keras' legacy HDF5):
    for tests and benchmarks where the official file cannot be had. Speed and shapes are
    those of the real model; the answers are not."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50(weights=None)
    with h5py.File(path, "w") as weights_file:
        legacy_h5_format.save_weights_to_hdf5_group(weights_file, model)


def write_int8_ir(weights: Path, photos: Path, cache_dir: Path) -> Path:
    """The INT8 IR of a seeded ResNet50, beside its weights (where MODEL_PRECISION=int8 looks),
    by `modelserver quantize` on the photos of `photos` (alternately calibration and held
    out). Random weights give near-uniform answers, so the agreement gate is off (threshold
    0); tests/modelserver/test_quantize.py checks the gate on a model that has answers."""
    folders: dict[str, list[Path]] = {"calibration": [], "held-out": []}
    for index, photo in enumerate(sorted(photos.glob("*.*"))):
        folders["calibration" if index % 2 else "held-out"].append(photo)
    for name, members in folders.items():
        (weights.parent / name).mkdir(exist_ok=True)
        for photo in members:
            (weights.parent / name / photo.name).write_bytes(photo.read_bytes())
    subprocess.run(
        [sys.executable, "-m", "modelserver", "quantize", "--weights", str(weights),
         "--calibration", str(weights.parent / "calibration"),
         "--held-out", str(weights.parent / "held-out"),
         "--threshold", "0", "--cache-dir", str(cache_dir)],
        check=True,
        capture_output=True,
        cwd=weights.parent,  # not a source checkout, whose modelserver/ folder would shadow
    )  # fmt: skip
    return weights.with_name(weights.stem + ".int8.xml")
