"""Pure pieces of the server: configuration, image decoding, the batcher, top-k."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from modelserver.batcher import DynamicBatcher
from modelserver.cli import main as cli_main
from modelserver.config import OPTIONS, Settings
from modelserver.images import ImageError, load_rgb
from modelserver.models.base import as_probabilities
from modelserver.protocol.rest.v1_endpoints import top_predictions
from PIL import Image
from serving import wait_until

SIZE = (224, 224)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"PORT": "8080", "BATCH_MAX_DELAY_MS": "0.5", "TOP_K": "3"})
    assert (settings.port, settings.batch_max_delay_ms, settings.top_k) == (8080, 0.5, 3)
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"PORT": "eighty"}, "PORT='eighty'"),
        ({"BATCH_MAX_SIZE": "0"}, "BATCH_MAX_SIZE must be at least 1, got 0"),
        ({"BATCH_MAX_DELAY_MS": "-1"}, "BATCH_MAX_DELAY_MS must be at least 0"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL must be one of"),
        ({"MODEL_NAME": "vgg16"}, "MODEL_NAME must be one of"),
        ({"MODEL_LABELS": "labels.txt"}, "MODEL_LABELS only applies with MODEL_FILE"),
        ({"MAX_QUEUE": "-1"}, "MAX_QUEUE must be at least 0"),
        ({"MAX_QUEUE": "32"}, r"MAX_QUEUE \(32\) must be below THREADS \(32\)"),
        ({"THREADS": "8", "MAX_QUEUE": "9"}, "must be below THREADS"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    environ: dict[str, str], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("environ", "limit"),
    [
        ({}, 24),
        ({"THREADS": "8"}, 6),
        ({"THREADS": "1"}, 1),
        ({"MAX_QUEUE": "10"}, 10),
        ({"MAX_QUEUE": "0"}, None),
    ],
)
def test_the_queue_bound_defaults_to_three_quarters_of_the_threads(
    environ: dict[str, str], limit: int | None
) -> None:
    assert Settings.from_env(environ).queue_limit == limit


def test_every_option_is_documented_in_the_readme(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    for option in OPTIONS:
        assert f"`{option.env}`" in readme and f"`{option.flag}`" in readme, option.env


def test_a_bad_flag_value_is_a_clear_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--top-k", "lots"]) == 2
    assert "TOP_K='lots'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("RGB", (640, 480), (200, 10, 10)), "JPEG"),
        (Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "JPEG"),
        (Image.new("P", (50, 60), 3), "GIF"),
        (Image.new("RGBA", (64, 64), (10, 200, 10, 128)), "PNG"),
        (Image.new("LA", (64, 64), (90, 255)), "PNG"),
        (Image.new("1", (64, 64), 1), "BMP"),
        (Image.new("I;16", (64, 64), 40000), "PNG"),
        (Image.new("RGB", (32, 32), (0, 0, 250)), "WEBP"),
        (Image.new("RGB", (32, 32), (0, 0, 250)), "TIFF"),
    ],
    ids=lambda value: getattr(value, "mode", value),
)
def test_every_image_mode_becomes_rgb_of_the_model_size(image: Image.Image, fmt: str) -> None:
    rgb = load_rgb(encoded(image, fmt), SIZE, 40_000_000)
    assert rgb.mode == "RGB" and rgb.size == SIZE


def test_sixteen_bit_samples_are_scaled_not_clipped() -> None:
    gray = load_rgb(encoded(Image.new("I;16", (8, 8), 32768), "PNG"), SIZE, 1000)
    assert 120 <= np.asarray(gray)[0, 0, 0] <= 135


def test_an_animated_gif_is_classified_by_its_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, _, blue = np.asarray(load_rgb(data, SIZE, 10_000))[10, 10]
    assert red > 200 and blue < 50


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (400, 100), (255, 0, 0))
    stored.paste((0, 0, 255), (200, 0, 400, 100))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: red on top, blue below
    displayed = np.asarray(load_rgb(encoded(stored, "PNG", exif=exif), (50, 200), 10**6))
    assert displayed[10, 10, 0] > 200 and displayed[190, 10, 2] > 200


def test_a_big_jpeg_decodes_at_reduced_scale_with_the_same_result() -> None:
    gradient = np.tile(np.linspace(0, 255, 4000, dtype=np.uint8), (3000, 1))
    photo = Image.fromarray(np.stack([gradient] * 3, axis=-1))
    data = encoded(photo, "JPEG", quality=95)
    fast = np.asarray(load_rgb(data, SIZE, 40_000_000), dtype=np.float32)
    exact = np.asarray(photo.resize(SIZE, Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(fast - exact).mean() < 3


def test_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(ImageError, match="over the limit of 1000 pixels"):
        load_rgb(encoded(Image.new("RGB", (100, 100)), "PNG"), SIZE, 1000)


def test_top_predictions_are_the_k_most_probable_in_order() -> None:
    probabilities = np.array([0.1, 0.5, 0.05, 0.35])
    top = top_predictions(probabilities, ("a", "b", "c", "d"), 2)
    assert top == [{"label": "b", "probability": 0.5}, {"label": "d", "probability": 0.35}]


def test_the_batcher_groups_concurrent_inputs_and_keeps_their_order() -> None:
    """Eight inputs that queue while a pass is held (however fast the machine) go in full
    batches, and each gets its own answer."""
    sizes: list[int] = []
    passing, released, queued = threading.Event(), threading.Event(), threading.Event()

    def held_double(batch: np.ndarray) -> np.ndarray:
        passing.set()
        assert released.wait(timeout=30), "the test never let the pass go"
        return batch * 2

    def note_depth(depth: int) -> None:
        if depth == 8:
            queued.set()

    batcher = DynamicBatcher(
        held_double, max_size=4, max_delay_s=0.05, on_batch=sizes.append,
        on_queue_change=note_depth,
    )  # fmt: skip
    results: dict[int, list[np.ndarray]] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.submit([np.full(3, i)])))
        for i in range(9)
    ]
    threads[0].start()
    try:
        assert passing.wait(timeout=10), "the first input never reached the model"
        for thread in threads[1:]:
            thread.start()
        assert queued.wait(timeout=10), "the other eight never queued"
    finally:
        released.set()
    for thread in threads:
        thread.join(timeout=10)
    batcher.close()
    assert sizes == [1, 4, 4]
    assert all(np.array_equal(results[i][0], np.full(3, 2 * i)) for i in range(9))


def test_a_failed_batch_fails_its_requests_and_the_batcher_goes_on() -> None:
    calls = iter([RuntimeError("out of memory"), None])

    def flaky(batch: np.ndarray) -> np.ndarray:
        error = next(calls)
        if error:
            raise error
        return batch + 1

    batcher = DynamicBatcher(flaky, max_size=2, max_delay_s=0.0)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.submit([np.zeros(2)])
    assert np.array_equal(batcher.submit([np.zeros(2)])[0], np.ones(2))
    batcher.close()


def test_the_batcher_waits_only_for_inputs_announced_as_coming() -> None:
    """A lone input is not kept waiting for company (up to 30 s); one the batcher has taken
    while another is announced waits for it, and both share a pass."""
    sizes: list[int] = []
    queued = threading.Event()
    batcher = DynamicBatcher(
        lambda batch: batch, max_size=2, max_delay_s=30, on_batch=sizes.append,
        on_queue_change=lambda depth: queued.set() if depth else None,
    )  # fmt: skip
    started = time.monotonic()
    batcher.submit([np.zeros(1)])
    assert time.monotonic() - started < 10, "a lone input waited for company nobody announced"
    queued.clear()
    # The second is announced until it is queued too: that fills the pass, so the batcher
    # does not go on waiting after it.
    with batcher.expecting(1):
        first = threading.Thread(target=batcher.submit, args=([np.zeros(1)],))
        first.start()
        assert queued.wait(timeout=10), "the first input never queued"
        # Taken off the queue (nothing public says so): from here only waiting can pair them.
        wait_until(batcher._queue.empty, "the batcher never took the first input", timeout_s=10)
        batcher.submit([np.ones(1)])
    first.join(timeout=30)
    batcher.close()
    assert sizes == [1, 2]


def test_a_softmax_output_is_renormalized_never_softmaxed_again() -> None:
    """A quantized softmax sums to about 0.95: a second softmax would flatten it."""
    quantized = np.array([[0.78, 0.12, 0.05, 0.0]], dtype=np.float32)
    probabilities = as_probabilities(quantized, already=True)
    assert np.allclose(probabilities, quantized / quantized.sum())


def test_logits_get_a_softmax() -> None:
    logits = np.array([[2.0, 1.0, 0.0]], dtype=np.float32)
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(as_probabilities(logits, already=False), expected)
