"""Models made by the tests themselves, where the real files cannot be had offline."""

from __future__ import annotations

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
