"""Open Inference Protocol tensors, as every transport decodes and encodes them.

The raw form (the binary tensor data extension over REST, `raw_input_contents` and
`raw_output_contents` over gRPC) is one codec; JSON and gRPC's typed contents give values.
Whatever the wire form, the shape must agree with the data, or the request is `InvalidInput`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInput

# The numeric datatypes this server reads and writes, little-endian as the protocol says.
NUMERIC: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
_MAX_RANK = 8


@dataclass(frozen=True)
class Tensor:
    """One named tensor: numeric data as an array of `shape`, BYTES as a flat list."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]


def checked_shape(name: str, shape: object) -> tuple[int, ...]:
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str | bytes)
        or len(shape) > _MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(f"input {name!r}: shape must be a list of sizes >= 0, got {shape!r}")
    return tuple(int(d) for d in shape)


def _count(name: str, shape: tuple[int, ...], found: int) -> None:
    if math.prod(shape) != found:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} holds {math.prod(shape)} elements, "
            f"the data has {found}"
        )


def _datatype(name: str, datatype: object) -> str:
    if datatype != "BYTES" and datatype not in NUMERIC:
        raise InvalidInput(
            f"input {name!r}: datatype {str(datatype)[:20]!r} is not taken: BYTES (encoded "
            "images) or UINT8 / FP32 (pixels)"
        )
    return str(datatype)


def from_raw(name: str, datatype: object, shape: tuple[int, ...], raw: bytes) -> Tensor:
    """A tensor from its raw bytes: BYTES elements each prefixed by a 4-byte little-endian
    length, numbers packed little-endian in row-major order."""
    datatype = _datatype(name, datatype)
    if datatype == "BYTES":
        elements: list[bytes] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InvalidInput(f"input {name!r}: raw BYTES end inside a length prefix")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise InvalidInput(f"input {name!r}: a raw BYTES element runs past the data")
            elements.append(raw[offset : offset + length])
            offset += length
        _count(name, shape, len(elements))
        return Tensor(name, datatype, shape, elements)
    dtype = NUMERIC[datatype]
    if len(raw) % dtype.itemsize:
        raise InvalidInput(f"input {name!r}: {len(raw)} raw bytes are not whole {datatype}s")
    _count(name, shape, len(raw) // dtype.itemsize)
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype).reshape(shape))


def from_values(name: str, datatype: object, shape: tuple[int, ...], values: Any) -> Tensor:
    """A tensor from values (JSON's `data`, gRPC's typed contents): BYTES as a list of bytes,
    numbers as a flat or nested list."""
    datatype = _datatype(name, datatype)
    if datatype == "BYTES":
        _count(name, shape, len(values))
        return Tensor(name, datatype, shape, list(values))
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"input {name!r}: {datatype} data must be numbers") from None
    _count(name, shape, array.size)
    if (
        datatype == "UINT8"
        and array.size
        and (
            not np.isfinite(array).all()
            or (array != np.rint(array)).any()
            or array.min() < 0
            or array.max() > 255
        )
    ):
        raise InvalidInput(f"input {name!r}: UINT8 data must be whole numbers in [0, 255]")
    return Tensor(name, datatype, shape, array.astype(NUMERIC[datatype]).reshape(shape))


def to_raw(tensor: Tensor) -> bytes:
    """The raw form of a tensor (see `from_raw`)."""
    if isinstance(tensor.data, list):
        return b"".join(struct.pack("<I", len(item)) + item for item in tensor.data)
    raw: bytes = tensor.data.astype(NUMERIC[tensor.datatype], copy=False).tobytes()
    return raw
