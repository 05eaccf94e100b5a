"""TensorProto <-> numpy against TensorFlow's own C++ decoder (``tf.io.parse_tensor`` runs
``Tensor::FromProto``) and its Python client (``tf.make_tensor_proto`` / ``tf.make_ndarray``)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.serving.grpc_tensor import TensorParseError, decode_tensor, encode_tensor

tf = pytest.importorskip("tensorflow")
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402


def proto(dtype: int, shape: tuple[int, ...] | None, field: str | None = None, values=(), content: bytes = b""):
    p = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape or ():
        p.tensor_shape.dim.add().size = size
    if field is not None:
        getattr(p, field).extend(values)
    if content:
        p.tensor_content = content
    return p


CASES = [
    ("no values: zeros", proto(types_pb2.DT_FLOAT, (2, 3), "float_val", []), tf.float32),
    ("one value broadcasts", proto(types_pb2.DT_UINT8, (2, 2), "int_val", [7]), tf.uint8),
    ("fewer: the last repeats", proto(types_pb2.DT_INT32, (5,), "int_val", [1, 2, 3]), tf.int32),
    ("extra values ignored", proto(types_pb2.DT_INT64, (2,), "int64_val", [1, 2, 3, 4]), tf.int64),
    ("uint8 narrowed unchecked", proto(types_pb2.DT_UINT8, (4,), "int_val", [256, 300, -1]), tf.uint8),
    ("int8 narrowed unchecked", proto(types_pb2.DT_INT8, (3,), "int_val", [128, -129, 5]), tf.int8),
    ("other field ignored", proto(types_pb2.DT_UINT8, (3,), "float_val", [1.0, 2.0]), tf.uint8),
    ("scalar: no shape", proto(types_pb2.DT_FLOAT, None, "float_val", [3.0, 4.0]), tf.float32),
    ("half from bit patterns", proto(types_pb2.DT_HALF, (2,), "half_val", [0x3C00]), tf.half),
    ("strings fill", proto(types_pb2.DT_STRING, (3,), "string_val", [b"a", b"bc"]), tf.string),
    ("complex pairs", proto(types_pb2.DT_COMPLEX64, (2,), "scomplex_val", [1, 2, 3]), tf.complex64),
    ("bool zeros", proto(types_pb2.DT_BOOL, (2,), "bool_val", []), tf.bool),
    ("double", proto(types_pb2.DT_DOUBLE, (2,), "double_val", [0.1]), tf.float64),
    ("uint32", proto(types_pb2.DT_UINT32, (2,), "uint32_val", [2**32 - 1]), tf.uint32),
    ("content", proto(types_pb2.DT_FLOAT, (2,), content=np.array([1.5, -2], "<f4").tobytes()), tf.float32),
    ("content wins", proto(types_pb2.DT_INT32, (1,), "int_val", [9], content=b"\x01\0\0\0"), tf.int32),
    ("string content", tf.make_tensor_proto(np.array([b"ab", b"", b"xyz"], dtype=object)), tf.string),
]


@pytest.mark.parametrize(("case", "message", "dtype"), CASES, ids=[c[0] for c in CASES])
def test_decode_matches_tensorflow_from_proto(case: str, message, dtype) -> None:
    want = tf.io.parse_tensor(message.SerializeToString(), dtype).numpy()
    got = decode_tensor(message)
    assert got.shape == want.shape
    if dtype == tf.string:
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


BAD = [
    ("dtype unset", proto(types_pb2.DT_INVALID, (1,), "float_val", [1.0])),
    ("negative dim", proto(types_pb2.DT_FLOAT, (-1, 2), "float_val", [1.0])),
    ("content too short", proto(types_pb2.DT_UINT8, (1, 4), content=b"abc")),
    ("content too long", proto(types_pb2.DT_FLOAT, (1,), content=b"12345")),
]


@pytest.mark.parametrize(("case", "message"), BAD, ids=[c[0] for c in BAD])
def test_what_tensorflow_rejects_is_a_parse_error(case: str, message) -> None:
    with pytest.raises(TensorParseError):
        decode_tensor(message)
    if message.dtype != types_pb2.DT_INVALID:
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.parse_tensor(message.SerializeToString(), tf.dtypes.as_dtype(message.dtype)).numpy()


def test_tensor_content_is_a_read_only_view_not_a_copy() -> None:
    batch = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    message = tf.make_tensor_proto(batch)
    array = decode_tensor(message)
    owner: object = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, bytes)
    assert not array.flags.writeable
    np.testing.assert_array_equal(array, batch)


@pytest.mark.parametrize(
    "value",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        np.array([3, 1], dtype=np.int64),
        np.array([[0, 255]], dtype=np.uint8),
        np.array([1.5, -2], dtype=np.float16),
        np.array([1 + 2j], dtype=np.complex64),
        np.array([True, False]),
        np.array([b"x", b"yz"], dtype=object),
        np.float32(2.5),
    ],
    ids=lambda v: str(np.asarray(v).dtype),
)
@pytest.mark.parametrize("as_content", [False, True], ids=["typed", "content"])
def test_encode_round_trips_through_tensorflow(value: np.ndarray, as_content: bool) -> None:
    message = tensor_pb2.TensorProto()
    encode_tensor(value, message, as_content=as_content)
    string = np.asarray(value).dtype == object
    assert bool(message.tensor_content) == (as_content and not string)
    back = tf.make_ndarray(message)
    if string:
        assert back.tolist() == np.asarray(value).tolist()
    else:
        assert back.dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(back, value)


def test_typed_float_outputs_keep_exact_float32_bits() -> None:
    value = np.array([0.1, 1 / 3, 1e-30], dtype=np.float32)
    message = tensor_pb2.TensorProto()
    encode_tensor(value, message)
    assert np.array(message.float_val, dtype=np.float32).tobytes() == value.tobytes()
