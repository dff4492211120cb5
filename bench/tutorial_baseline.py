"""The tutorial's design, as the baseline: Flask's dev server, a global Keras model, one
`model.predict` per request. Only what cannot run offline is changed: the weights come from
a file and the labels from our package instead of `decode_predictions`' download.

Run: python bench/tutorial_baseline.py WEIGHTS PORT
"""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
from flask import Flask, jsonify, request
from keras.applications import ResNet50, imagenet_utils
from keras.preprocessing.image import img_to_array
from modelserver.models.labels import imagenet_labels
from PIL import Image

app = Flask(__name__)
model: Any = None
LABELS = imagenet_labels()


def load_model(weights: str) -> None:
    global model
    model = ResNet50(weights=None)
    model.load_weights(weights)


def prepare_image(image: Image.Image, target: tuple[int, int]) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = image.resize(target)
    array = np.expand_dims(img_to_array(image), axis=0)
    prepared: np.ndarray = imagenet_utils.preprocess_input(array)
    return prepared


@app.route("/predict", methods=["POST"])
def predict() -> Any:
    data: dict[str, Any] = {"success": False}
    if request.method == "POST" and request.files.get("image"):
        image = Image.open(io.BytesIO(request.files["image"].read()))
        preds = model.predict(prepare_image(image, (224, 224)), verbose=0)
        best = np.argsort(-preds[0])[:5]
        data["predictions"] = [
            {"label": LABELS[i], "probability": float(preds[0][i])} for i in best
        ]
        data["success"] = True
    return jsonify(data)


if __name__ == "__main__":
    load_model(sys.argv[1])
    app.run(host="127.0.0.1", port=int(sys.argv[2]))
