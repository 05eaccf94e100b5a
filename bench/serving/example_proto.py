"""``tensorflow.Example`` in protobuf wire format, and the serialized examples a classify or regress runs on.

Classify, Regress and MultiInference feed a signature one string tensor of serialized
``tf.Example`` protos (``InputToSerializedExampleTensor`` in ``servables/tensorflow/util.cc``).
The REST front end builds those bytes from JSON here, without TensorFlow (``example.proto`` and
``feature.proto``: ``Example.features`` = 1, ``Features.feature`` = 1 (a map), ``Feature`` is one
of ``bytes_list`` = 1, ``float_list`` = 2, ``int64_list`` = 3, each ``value`` = 1, numbers
packed); a gRPC front end passes ``Example.SerializeToString()`` as it is::

    example = encode_example({"x": ("float", [2.0])})
    ExampleInput((example,)).tensor()     # np.ndarray of 1 bytes object, what the graph parses
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bench.serving.status import invalid_argument

__all__ = ["ExampleInput", "Feature", "encode_example"]

# ("bytes" | "float" | "int64" | None for a feature given as an empty list, values)
Feature = tuple[str | None, Sequence[bytes] | Sequence[float] | Sequence[int]]

_LIST_FIELD = {"bytes": 1, "float": 2, "int64": 3}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(kind: str | None, values: Sequence[bytes] | Sequence[float] | Sequence[int]) -> bytes:
    if kind is None:
        return b""
    if kind == "bytes":
        inner = b"".join(_field(1, bytes(v)) for v in values)  # type: ignore[arg-type]
    elif kind == "float":
        with np.errstate(over="ignore"):  # a double beyond float range becomes inf, as GetFloat()
            packed = np.asarray(values, dtype="<f4").tobytes()
        inner = _field(1, packed) if values else b""
    else:
        inner = _field(1, b"".join(_varint(int(v)) for v in values)) if values else b""
    return _field(_LIST_FIELD[kind], inner)


def encode_example(features: Mapping[str, Feature]) -> bytes:
    """A serialized ``tf.Example`` with these features (feature name -> (kind, values))."""
    entries = b"".join(
        _field(1, _field(1, name.encode("utf-8", "surrogateescape")) + _field(2, _feature(*feature)))
        for name, feature in features.items()
    )
    return _field(1, entries) if entries else b""


@dataclass(frozen=True)
class ExampleInput:
    """tensorflow.serving ``Input``: serialized examples, and an optional serialized context
    example merged into each of them (``ExampleListWithContext``)."""

    examples: tuple[bytes, ...]
    context: bytes | None = None

    def tensor(self) -> np.ndarray:
        """The DT_STRING ``[num_examples]`` tensor fed to the signature: context + example bytes
        (two serialized messages concatenated parse as one merged message; the example's
        features win over the context's)."""
        if not self.examples:
            raise invalid_argument("Input is empty.")
        out = np.empty(len(self.examples), dtype=object)
        prefix = self.context or b""
        out[:] = [prefix + example for example in self.examples]
        return out
