"""What the real MobileNetV2 must answer for each photo in ../shared/images, and how close:
shared by the model server's accuracy tests and the end-to-end ones, which serve the same
model on the same CPU (one as a process, one in a pod)."""

from __future__ import annotations

import re
from pathlib import Path

import openvino as ov  # type: ignore[import-untyped]
from serving import EXPECTED_TOP1

PROBABILITY_TOLERANCE = 0.05
# BF16 keeps 8 significant bits: one unit in the last place is 2^-7 of the value.
BF16_EPSILON = 2.0**-7


def expected_label(labels: list[str], photo: str) -> str:
    """The photo's top-1 as the MobileNetV2 labels file spells it: that file starts with
    "background", so its index is the README's Keras index plus one."""
    return labels[EXPECTED_TOP1[photo] + 1]


def logit_bound(model_file: Path) -> float:
    """The largest logit the quantized model can give: the range its softmax's input is
    quantized to, read from the model."""
    model = ov.Core().read_model(str(model_file))
    [softmax] = [op for op in model.get_ordered_ops() if op.get_type_name() == "Softmax"]
    node = softmax.input_value(0).get_node()
    while node.get_type_name() != "FakeQuantize":
        node = node.input_value(0).get_node()
    low, high = (float(node.input_value(i).get_node().get_data().flat[0]) for i in (1, 2))
    return max(abs(low), abs(high))


def tolerance(probability: float, float_precision: str, logits: float) -> float:
    """How far a top-1 probability may be from the model's FP32 reference.

    FP32 float parts: PROBABILITY_TOLERANCE, as the photos' README rounds and resizes. BF16
    float parts (the quantized model's tail: the logits, at most `logits` in size, and the
    softmax) add their rounding: each logit is off by up to one BF16 unit in the last place,
    BF16_EPSILON * logits (half for storing it, half for the softmax's own arithmetic), so the
    top-1 log-odds move by up to twice that, and the probability by p(1 - p) times that."""
    if float_precision == "fp32":
        return PROBABILITY_TOLERANCE
    log_odds = 2 * BF16_EPSILON * logits
    return PROBABILITY_TOLERANCE + probability * (1 - probability) * log_odds


def readme_probabilities(images_dir: Path) -> dict[str, float]:
    """The MobileNetV2 (quantized) top-1 probability of each photo, as ../shared/images'
    README gives it: the model run directly, outside this server."""
    rows = re.findall(
        r"^\| (\S+) \| \d+ \|.*?\| ([01]\.\d+) / ", (images_dir / "README.md").read_text(), re.M
    )
    return {photo: float(probability) for photo, probability in rows}
