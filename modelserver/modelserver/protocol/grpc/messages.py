"""The protocol's message classes, built at import from the compiled descriptor.

They live in a descriptor pool of their own, not protobuf's default one: tritonclient and
kserve register the same `inference` package there, and a process that imports either
beside this server (a test, a benchmark, a notebook) must not fail on duplicate symbols.
Messages carry no Python types (their classes are made at run time), hence `Any`.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor

from .oip_descriptor import SERIALIZED_BASE64

_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(base64.b64decode(SERIALIZED_BASE64))

SERVICE: ServiceDescriptor = _POOL.FindServiceByName("inference.GRPCInferenceService")


def message_class(name: str) -> Any:
    """The class of `inference.<name>`."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"inference.{name}"))
