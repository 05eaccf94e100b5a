"""What a signature takes: input specs, the signature names of the reference model, image sizes.

Shared by the payload builders, the client (specs read from a server's metadata) and the embedded
server (specs read from a SavedModel)::

    InputSpec("examples", "uint8", (None, 128, 128, 3))    # TF short dtype name, None = unknown dim
    image_size(spec)                                       # (128, 128)
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.api_names import DEFAULT_SIGNATURE
from bench.errors import ConfigError

BYTES_SIGNATURE = "serving_bytes"
"""The reference model's signature for encoded PNG/JPEG images."""
IMAGE_INPUT = "examples"
"""The reference model's uint8 image input (the seed's ``ServingInputReceiver`` key)."""
BYTES_INPUT = "image_bytes"
"""The reference model's encoded-image input of ``serving_bytes``."""


@dataclass(frozen=True)
class InputSpec:
    """One signature input: its key, TF short dtype name (``uint8``, ``string``, ``float``...)
    and declared shape (``None`` for unknown dimensions)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


def reference_signatures(height: int = 128, width: int = 128) -> dict[str, dict[str, InputSpec]]:
    """The reference model's signature inputs (``tfsbench export``), for images of ``height x width``."""
    return {
        DEFAULT_SIGNATURE: {IMAGE_INPUT: InputSpec(IMAGE_INPUT, "uint8", (None, height, width, 3))},
        BYTES_SIGNATURE: {BYTES_INPUT: InputSpec(BYTES_INPUT, "string", (None,))},
    }


REFERENCE_SIGNATURES = reference_signatures()


def short_dtype(enum_name: str) -> str:
    """``DT_UINT8`` -> ``uint8``: TensorFlow's short dtype names, as TF Serving's messages use them."""
    return enum_name.removeprefix("DT_").lower()


def image_size(spec: InputSpec) -> tuple[int, int]:
    """``(height, width)`` of an image-like input ``[batch, height, width, channels]``.

    ``ConfigError`` for an input that is not a batch of images with known height and width.
    """
    shape = spec.shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None or shape[3] not in (1, 3, None):
        raise ConfigError(
            f"input '{spec.name}' ({spec.dtype} {list(shape)}) is not a batch of images [batch, height, width, 1|3]"
        )
    return int(shape[1]), int(shape[2])
