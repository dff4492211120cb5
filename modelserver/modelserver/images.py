"""Turning untrusted upload bytes into an RGB image of the model's input size.

Everything a client can get wrong raises `ImageError` with a message fit to send back;
nothing here touches the model, so it runs in request threads, outside the batcher.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Modes whose samples are wider than 8 bits: scaled down rather than clipped by convert().
_WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0}


class ImageError(ValueError):
    """The upload is not an image this server can classify; the message says why."""


def load_rgb(data: bytes, size: tuple[int, int], max_pixels: int) -> Image.Image:
    """Decode `data` and resize it to `size` (width, height) as RGB.

    The declared dimensions are checked before any pixel is decoded, so a
    decompression bomb costs nothing; JPEGs are decoded at a reduced scale (draft mode)
    when they are much larger than `size`, which makes big photos cheap.
    """
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError("not an image: the format is not recognised") from None
        except Image.DecompressionBombError:
            raise ImageError(
                f"the image's dimensions are over the limit of {max_pixels} pixels"
            ) from None
        except Exception as error:
            raise ImageError(f"the image header is corrupt ({type(error).__name__})") from None
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageError(f"the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageError(
                f"the image's dimensions, {width}x{height}, are over the limit of "
                f"{max_pixels} pixels"
            )
        try:
            if image.format == "JPEG":
                image.draft("RGB", size)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image).resize(size, Image.Resampling.BILINEAR)
        except Exception as error:
            raise ImageError(
                f"the {image.format} image is truncated or corrupt ({_reason(error)})"
            ) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode Pillow opens, with 16-bit and float samples scaled, not clipped."""
    if image.mode == "F":
        samples = np.asarray(image, dtype=np.float64)
        span = float(samples.max() - samples.min()) or 1.0
        image = Image.fromarray(((samples - samples.min()) * (255.0 / span)).astype(np.uint8))
    elif image.mode in _WIDE_MODES:
        samples = np.asarray(image, dtype=np.float64) * (255.0 / _WIDE_MODES[image.mode])
        image = Image.fromarray(np.clip(samples, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _reason(error: Exception) -> str:
    """Pillow's own words where short and safe, else the exception's kind."""
    text = str(error)
    if isinstance(error, OSError) and 0 < len(text) <= 120 and text.isprintable():
        return text
    return type(error).__name__


def rgb_from_pixels(pixels: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Decoded RGB pixels, (height, width, 3) in [0, 255] (uint8 or float), as an RGB image
    of `size` (width, height): resized the same way as an upload when they differ."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ImageError(f"pixels must be (height, width, 3), got {tuple(pixels.shape)}")
    if pixels.dtype != np.uint8:
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
            raise ImageError("pixel values must be finite and within [0, 255]")
        pixels = np.rint(pixels).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)
