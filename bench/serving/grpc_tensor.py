"""``TensorProto`` <-> numpy, with TensorFlow's rules (``Tensor::FromProto``, ``AsProtoField``,
``AsProtoTensorContent``), for the gRPC front end.

Decoding (``shared/docs/tf-serving-grpc-api.md`` §4.2): the shape must be concrete, the dtype
set; non-empty ``tensor_content`` wins and must hold exactly elements x itemsize bytes (viewed
with ``np.frombuffer``: no copy beyond the one protobuf makes when it hands the field to Python);
otherwise the dtype's typed field, where no values mean zeros, fewer values than elements are
filled up with the last one and extra values are ignored; integers narrower than the field wrap
unchecked (uint8 from ``int_val``: 256 -> 0). Any failure is :class:`TensorParseError`, which the
caller turns into ``tensor parsing error: <alias>``.

Encoding (§4.3): every element in the typed field (the default, as upstream), or raw
``tensor_content`` with ``--enable_serialization_as_tensor_content``. Messages are the official
``tensorflow.core.framework.tensor_pb2.TensorProto`` objects, passed in (this module imports no
protobuf code, so it stays cheap to import)::

    array = decode_tensor(request.inputs["examples"])        # uint8 [b,128,128,3], read-only view
    encode_tensor(array, response.outputs["probabilities"])  # float_val, dtype, tensor_shape
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DTYPES", "TensorParseError", "decode_string_content", "decode_tensor", "encode_tensor"]

MAX_DIMS = 254  # TensorShape::MaxDimensions()

# DataType enum value (types.proto) -> (numpy dtype, typed field). Quantized types and bfloat16
# have no numpy dtype here; a request using them fails to parse.
DTYPES: dict[int, tuple[np.dtype[Any], str]] = {
    1: (np.dtype(np.float32), "float_val"),  # DT_FLOAT
    2: (np.dtype(np.float64), "double_val"),  # DT_DOUBLE
    3: (np.dtype(np.int32), "int_val"),  # DT_INT32
    4: (np.dtype(np.uint8), "int_val"),  # DT_UINT8
    5: (np.dtype(np.int16), "int_val"),  # DT_INT16
    6: (np.dtype(np.int8), "int_val"),  # DT_INT8
    7: (np.dtype(object), "string_val"),  # DT_STRING
    8: (np.dtype(np.complex64), "scomplex_val"),  # DT_COMPLEX64
    9: (np.dtype(np.int64), "int64_val"),  # DT_INT64
    10: (np.dtype(np.bool_), "bool_val"),  # DT_BOOL
    17: (np.dtype(np.uint16), "int_val"),  # DT_UINT16
    18: (np.dtype(np.complex128), "dcomplex_val"),  # DT_COMPLEX128
    19: (np.dtype(np.float16), "half_val"),  # DT_HALF
    22: (np.dtype(np.uint32), "uint32_val"),  # DT_UINT32
    23: (np.dtype(np.uint64), "uint64_val"),  # DT_UINT64
}
_ENUM_OF = {dtype: number for number, (dtype, _) in DTYPES.items() if dtype != np.dtype(object)}
_STRING = 7


class TensorParseError(ValueError):
    """``Tensor::FromProto`` returned false: what upstream reports as ``tensor parsing error``."""


def _shape(proto: Any) -> tuple[int, ...]:
    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if len(dims) > MAX_DIMS or any(d < 0 for d in dims):
        raise TensorParseError("shape is not concrete")
    count = 1
    for d in dims:
        count *= d
        if count >= 2**63:
            raise TensorParseError("too many elements")
    return dims


def decode_tensor(proto: Any) -> np.ndarray:
    """A request ``TensorProto`` as an array (``tensor_content``: a read-only view of its bytes)."""
    entry = DTYPES.get(int(proto.dtype))
    if entry is None:
        raise TensorParseError(f"dtype {proto.dtype} not supported")
    dtype, field = entry
    shape = _shape(proto)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    content = proto.tensor_content
    if content:
        if int(proto.dtype) == _STRING:
            return decode_string_content(content, count).reshape(shape)
        if len(content) != count * dtype.itemsize:
            raise TensorParseError("tensor_content size does not match the shape")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    if field == "half_val":
        typed = np.asarray(values, dtype=np.int64).astype(np.uint16).view(np.float16)
    elif field in ("scomplex_val", "dcomplex_val"):
        pairs = np.asarray(values, dtype=np.float32 if field == "scomplex_val" else np.float64)
        typed = pairs[: len(pairs) // 2 * 2].view(dtype)
    elif dtype == np.dtype(object):
        typed = np.empty(len(values), dtype=object)
        typed[:] = list(values)
    elif field == "int_val" and dtype != np.dtype(np.int32):
        typed = np.asarray(values, dtype=np.int64).astype(dtype)  # narrowed unchecked, as the C++ cast
    else:
        typed = np.asarray(values, dtype=dtype)
    return _fill(typed, dtype, count).reshape(shape)


def _fill(values: np.ndarray, dtype: np.dtype[Any], count: int) -> np.ndarray:
    """``FromProtoField``: none -> zeros, fewer -> the last value repeated, more -> cut."""
    have = len(values)
    if have >= count:
        return values[:count]
    if have == 0:
        if dtype == np.dtype(object):
            out = np.empty(count, dtype=object)
            out[:] = b""
            return out
        return np.zeros(count, dtype=dtype)
    out = np.empty(count, dtype=dtype)
    out[:have] = values
    out[have:] = values[-1]
    return out


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise TensorParseError("bad string length")
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7


def decode_string_content(content: bytes, count: int) -> np.ndarray:
    """DT_STRING ``tensor_content``: ``count`` varint lengths, then the strings back to back."""
    lengths = []
    pos = 0
    for _ in range(count):
        length, pos = _varint(content, pos)
        lengths.append(length)
    out = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        if pos + length > len(content):
            raise TensorParseError("string content too short")
        out[i] = content[pos : pos + length]
        pos += length
    if pos != len(content):
        raise TensorParseError("string content too long")
    return out


def encode_tensor(value: np.ndarray, proto: Any, *, as_content: bool = False) -> None:
    """Fill ``proto`` (a ``TensorProto``) with ``value``: typed field, or ``tensor_content`` when
    ``as_content`` (strings always go to ``string_val``, as ``AsProtoTensorContent`` of TF's
    Python client sees them)."""
    array = np.asarray(value)
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    if array.dtype.kind in ("O", "S", "U"):
        proto.dtype = _STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
        return
    number = _ENUM_OF.get(array.dtype.newbyteorder("="))  # a big-endian array is the same dtype
    if number is None:
        raise ValueError(f"no TensorProto dtype for {array.dtype}")
    proto.dtype = number
    dtype, field = DTYPES[number]
    if as_content:
        proto.tensor_content = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<")).tobytes()
        return
    flat = array.ravel()
    if field == "half_val":
        proto.half_val.extend(flat.astype(np.float16).view(np.uint16).tolist())
    elif field in ("scomplex_val", "dcomplex_val"):
        getattr(proto, field).extend(flat.view(flat.real.dtype).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
