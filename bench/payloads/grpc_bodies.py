"""gRPC request bodies: a batch as a serialized ``PredictRequest``, with the official protos.

The gRPC encodings (``bench.payloads.encodings``) send what a client of tensorflow/serving's
``PredictionService/Predict`` sends (``shared/docs/tf-serving-grpc-api.md`` section 4)::

    body = request_body({"examples": images}, ModelSpec("classifier"), fill="content")
    PredictRequest.FromString(body)          # model_spec {name: "classifier"}, inputs {"examples": ...}

``fill``: ``content`` puts each numeric array's raw little-endian bytes in ``tensor_content``
(what ``tf.make_tensor_proto`` does for a numpy array); ``typed`` writes the values into
the dtype's repeated field (``int_val`` for uint8/int8/int16/uint16/int32, ``int64_val``,
``float_val``, ``double_val``, ``bool_val``, ``uint32_val``, ``uint64_val``, ``half_val`` for
float16's bit patterns). String inputs always go in ``string_val``, one element per example
(an :class:`~bench.payloads.tensors.ImageBytes` becomes PNG or JPEG bytes while encoding, so the
encode time counts the compression). The body is the serialized request: ``payload_bytes`` is its
length, and a load generator sends it as it is (no second serialization in the timed path).

With ``content`` the official protos build everything but the raw bytes, and the array's memory
is spliced in as field 4 of its ``TensorProto`` (protobuf's wire format: a tag, a length, the
bytes), so the batch is copied once, into the body. Setting ``tensor_content`` and calling
``SerializeToString`` copies it three times (``tobytes``, the field, the output): 2-3x the cost
for bytes that parse to the same message (tests/payloads/test_grpc_encodings.py checks it).

tensorflow_serving's protos import TensorFlow's, and those import the whole ``tensorflow``
package (seconds and hundreds of MB), so they load lazily, on the first gRPC body or decode:
a process that sends only REST never pays for them. A load generator that never runs TensorFlow
calls :func:`load_protos_without_tensorflow` instead: the same generated modules, read from
TensorFlow's package directory without running its ``__init__`` (0.2 s instead of 5 s, per
Locust process).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from bench.payloads.tensors import Batch, ImageBytes, batch_size

# numpy dtype name -> (TensorFlow DataType name, TensorProto typed field), tensor.proto's table.
DTYPES: dict[str, tuple[str, str]] = {
    "uint8": ("DT_UINT8", "int_val"),
    "int8": ("DT_INT8", "int_val"),
    "int16": ("DT_INT16", "int_val"),
    "uint16": ("DT_UINT16", "int_val"),
    "int32": ("DT_INT32", "int_val"),
    "int64": ("DT_INT64", "int64_val"),
    "uint32": ("DT_UINT32", "uint32_val"),
    "uint64": ("DT_UINT64", "uint64_val"),
    "float32": ("DT_FLOAT", "float_val"),
    "float64": ("DT_DOUBLE", "double_val"),
    "bool": ("DT_BOOL", "bool_val"),
    "float16": ("DT_HALF", "half_val"),
}
# TF short dtype names (as metadata says them) that a gRPC body carries: the table's, and strings.
GRPC_DTYPES = frozenset({"uint8", "int8", "int16", "uint16", "int32", "int64", "uint32", "uint64"}) | {
    "float",
    "double",
    "bool",
    "half",
    "string",
}
FILLS = ("content", "typed")


@dataclass(frozen=True)
class ModelSpec:
    """The request's ``model_spec``: model name, optional version, signature ("" = serving_default)."""

    name: str
    version: int | None = None
    signature_name: str = ""


@functools.cache
def protos() -> Any:
    """``tensorflow_serving.apis.predict_pb2`` (loaded once; see the module docstring for why lazily)."""
    # lazy: these protos import the whole tensorflow package; only processes that speak gRPC need them
    from tensorflow_serving.apis import predict_pb2

    return predict_pb2


_STUB_DOC = (
    "tensorflow's package directory, for its generated *_pb2 protos only: this process (a tfsbench load "
    "generator) loaded them without TensorFlow (bench.payloads.grpc_bodies.load_protos_without_tensorflow)"
)


def load_protos_without_tensorflow() -> bool:
    """Load the protos without running ``tensorflow/__init__.py``; for processes that never run TensorFlow.

    A bare ``tensorflow`` package module (its real directory as ``__path__``) stands in for the
    package, so ``tensorflow.core.framework.tensor_pb2`` and the rest import as plain modules. Only
    where TensorFlow is not imported yet; returns whether the stand-in was installed. A later
    ``import tensorflow`` in the same process would get the stand-in: Locust processes never do.
    """
    if "tensorflow" in sys.modules:
        protos()
        return False
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    package = types.ModuleType("tensorflow", _STUB_DOC)
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = package
    protos()
    return True


@functools.cache
def _dtype_numbers() -> dict[str, int]:
    # lazy: TensorFlow's DataType enum comes with its protos (see protos())
    from tensorflow.core.framework import types_pb2

    return {name: int(types_pb2.DataType.Value(name)) for name, _ in [*DTYPES.values(), ("DT_STRING", "")]}


def grpc_refusal(name: str, dtype: str) -> str | None:
    """Why an input of TF short dtype ``dtype`` cannot go in a gRPC body, or None when it can."""
    if dtype in GRPC_DTYPES:
        return None
    written = ", ".join(sorted(GRPC_DTYPES))
    return f"input '{name}' is {dtype}, which the gRPC encodings do not write (they write {written})"


def _strings(value: np.ndarray | ImageBytes, image_format: str) -> list[bytes] | None:
    if isinstance(value, ImageBytes):
        return value.encoded(image_format)
    if value.dtype == object or value.dtype.kind in "SU":
        return [v.encode() if isinstance(v, str) else bytes(v) for v in value.ravel()]
    return None


def _fill_tensor(tensor: Any, value: np.ndarray | ImageBytes, fill: str, image_format: str) -> memoryview | None:
    """Fill ``tensor``; with ``fill="splice"`` leave ``tensor_content`` out and return the bytes it holds."""
    numbers = _dtype_numbers()
    strings = _strings(value, image_format)
    if strings is not None:
        tensor.dtype = numbers["DT_STRING"]
        shape: tuple[int, ...] = (len(strings),) if isinstance(value, ImageBytes) else value.shape
        tensor.tensor_shape.dim.extend(tensor.tensor_shape.Dim(size=int(d)) for d in shape)
        tensor.string_val.extend(strings)
        return None
    assert isinstance(value, np.ndarray)
    try:
        dtype_name, field = DTYPES[value.dtype.name]
    except KeyError:
        raise TypeError(f"a gRPC body cannot carry {value.dtype} arrays (it writes {', '.join(DTYPES)})") from None
    tensor.dtype = numbers[dtype_name]
    tensor.tensor_shape.dim.extend(tensor.tensor_shape.Dim(size=int(d)) for d in value.shape)
    if fill in ("content", "splice"):
        # C order, little-endian: TensorFlow reads tensor_content as host memory, and every
        # platform TF Serving runs on is little-endian.
        little = np.ascontiguousarray(value.astype(value.dtype.newbyteorder("<"), copy=False))
        if fill == "splice":
            return little.data.cast("B")
        tensor.tensor_content = little.tobytes()
    elif value.dtype == np.float16:
        getattr(tensor, field).extend(value.view(np.uint16).ravel().tolist())
    else:
        # tolist(): upb's repeated fields take Python numbers; extending from an array converts
        # one element at a time and is several times slower.
        getattr(tensor, field).extend(value.ravel().tolist())
    return None


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _length_delimited(field_number: int, length: int) -> bytes:
    """The tag (wire type 2) and length prefix of a bytes/message field."""
    return _varint(field_number << 3 | 2) + _varint(length)


# Field numbers (predict.proto, tensor.proto; a map entry is {1: key, 2: value}).
_INPUTS, _ENTRY_KEY, _ENTRY_VALUE, _TENSOR_CONTENT = 2, 1, 2, 4


def request_body(batch: Batch, spec: ModelSpec, *, fill: str = "content", image_format: str = "PNG") -> bytes:
    """The serialized ``PredictRequest`` for ``batch`` (``{input: array or ImageBytes}``)."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    batch_size(batch)
    predict_pb2 = protos()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.name
    if spec.version is not None:
        request.model_spec.version.value = spec.version
    if spec.signature_name:
        request.model_spec.signature_name = spec.signature_name
    if fill == "typed":
        for name, value in batch.items():
            _fill_tensor(request.inputs[name], value, fill, image_format)
        typed: bytes = request.SerializeToString()
        return typed
    parts: list[bytes | memoryview] = [request.SerializeToString()]  # the model_spec (field 1)
    for name, value in batch.items():
        tensor = predict_pb2.PredictRequest().inputs["x"]  # a TensorProto without importing tensor_pb2
        content = _fill_tensor(tensor, value, "splice", image_format)
        head = tensor.SerializeToString()
        tail: list[bytes | memoryview] = []
        tensor_len = len(head)
        if content is not None and content.nbytes:  # proto3 leaves an empty bytes field out
            prefix = _length_delimited(_TENSOR_CONTENT, content.nbytes)
            tail = [prefix, content]
            tensor_len += len(prefix) + content.nbytes
        key = name.encode()
        entry = [_length_delimited(_ENTRY_KEY, len(key)), key, _length_delimited(_ENTRY_VALUE, tensor_len)]
        entry_len = sum(len(part) for part in entry) + tensor_len
        parts += [_length_delimited(_INPUTS, entry_len), *entry, head, *tail]
    return b"".join(parts)


# --- client-side decoding: round-trip checks and responses ---------------------------------------


def tensor_array(tensor: Any) -> np.ndarray:
    """A ``TensorProto`` as a numpy array, with the server's fill rules for typed fields.

    String tensors give an object array of ``bytes``. Fewer typed values than elements repeat
    the last one, none give zeros (``Tensor::FromProto``), so what this returns is what the
    server would have seen.
    """
    numbers = _dtype_numbers()
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if tensor.dtype == numbers["DT_STRING"]:
        out = np.empty(len(tensor.string_val), dtype=object)
        out[:] = list(tensor.string_val)
        return out.reshape(shape) if out.size == int(np.prod(shape)) else out
    by_number = {numbers[dt]: (np_name, field) for np_name, (dt, field) in DTYPES.items()}
    try:
        np_name, field = by_number[int(tensor.dtype)]
    except KeyError:
        raise ValueError(f"TensorProto dtype {tensor.dtype} is not one the gRPC encodings write") from None
    dtype = np.dtype(np_name)
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
    count = int(np.prod(shape))
    values = list(getattr(tensor, field))
    if dtype == np.float16:
        raw = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        # int_val holds uint8 etc. as int32: narrowed unchecked, as the server does.
        raw = np.array(values, dtype=np.int64 if field == "int_val" else dtype).astype(dtype)
    filled = np.zeros(count, dtype=dtype)
    if raw.size:
        filled[: min(count, raw.size)] = raw[:count]
        filled[raw.size :] = raw[-1]
    return filled.reshape(shape)


def decode_request(body: bytes) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """A serialized ``PredictRequest`` back to its model spec and ``{input: array}``."""
    request = protos().PredictRequest.FromString(body)
    version = request.model_spec.version.value if request.model_spec.HasField("version") else None
    spec = ModelSpec(request.model_spec.name, version, request.model_spec.signature_name)
    return spec, {name: tensor_array(tensor) for name, tensor in request.inputs.items()}


def decode_images(values: np.ndarray) -> np.ndarray:
    """A string tensor of PNG/JPEG bytes as a uint8 image batch ``[batch, height, width, 3]``."""
    images = []
    for data in values.ravel():
        with Image.open(io.BytesIO(data)) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return np.stack(images)


def response_outputs(body: bytes) -> dict[str, np.ndarray]:
    """A serialized ``PredictResponse``'s outputs as arrays."""
    response = protos().PredictResponse.FromString(body)
    return {name: tensor_array(tensor) for name, tensor in response.outputs.items()}


def prediction_count(outputs: dict[str, Any]) -> int | None:
    """Rows in a response's outputs (their common first dimension), or None without outputs."""
    sizes = {len(value) for value in outputs.values() if getattr(value, "ndim", 1) >= 1}
    return sizes.pop() if len(sizes) == 1 else None
