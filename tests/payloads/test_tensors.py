"""Named-array batches: every REST dtype and several inputs, parsed back by tensorflow/serving's rules.

The parser is ``bench.serving.json_tensor``, the port of ``json_tensor.cc`` that the embedded
server runs; each body must rebuild exactly the tensors that were encoded.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from bench.payloads.encodings import ENCODING_NAMES, get_encoding
from bench.payloads.images import SyntheticImages
from bench.payloads.specs import InputSpec
from bench.payloads.tensors import REST_DTYPES, ImageBytes, image_bytes
from bench.serving.json_tensor import decode_predict_body

NUMERIC = [d for d in REST_DTYPES if d != "string"]
JSON_ENCODINGS = ["row-orjson", "row-json", "columnar-orjson", "row-named-orjson", "row-orjson-gzip"]


def _values(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype in ("float", "double"):
        # awkward values: not short decimals, tiny and huge magnitudes, negative zero
        values = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)
        values.flat[0] = -0.0
        return values.astype(REST_DTYPES[dtype])
    info = np.iinfo(REST_DTYPES[dtype])
    low = max(int(info.min), -(2**62))
    return rng.integers(low, int(info.max), size=shape, endpoint=True, dtype=REST_DTYPES[dtype])


def _parse(name: str, body: bytes, specs: dict[str, InputSpec]) -> dict[str, np.ndarray]:
    if get_encoding(name).content_encoding == "gzip":
        body = gzip.decompress(body)
    return decode_predict_body(body, specs, fast=False).tensors


@pytest.mark.parametrize("name", JSON_ENCODINGS)
@pytest.mark.parametrize("dtype", NUMERIC)
def test_every_numeric_dtype_round_trips_through_the_servers_parser(name: str, dtype: str) -> None:
    batch = {"x": _values(dtype, (3, 2, 4))}
    spec = {"x": InputSpec("x", dtype, (None, 2, 4))}
    encoding = get_encoding(name)
    assert encoding.refusal(list(spec.values())) is None
    got = _parse(name, encoding.encode(batch), spec)["x"]
    assert got.dtype == batch["x"].dtype
    assert np.array_equal(got, batch["x"])
    assert np.array_equal(np.signbit(got), np.signbit(batch["x"]))


@pytest.mark.parametrize("name", JSON_ENCODINGS)
def test_two_inputs_go_as_named_instances_or_named_columns(name: str) -> None:
    images = np.random.default_rng(1).random((4, 8, 8, 3), dtype=np.float32)
    threshold = np.array([0.1, 0.25, 0.5, 0.9], dtype=np.float32)
    specs = {
        "pixels": InputSpec("pixels", "float", (None, 8, 8, 3)),
        "threshold": InputSpec("threshold", "float", (None,)),
    }
    body = get_encoding(name).encode({"pixels": images, "threshold": threshold})
    raw = gzip.decompress(body) if name.endswith("gzip") else body
    doc = json.loads(raw)
    if name.startswith("columnar"):
        assert set(doc["inputs"]) == {"pixels", "threshold"}
    else:
        assert all(set(row) == {"pixels", "threshold"} for row in doc["instances"])
    got = _parse(name, body, specs)
    assert np.array_equal(got["pixels"], images)
    assert np.array_equal(got["threshold"], threshold)


@pytest.mark.parametrize("name", ["b64-png", "b64-jpeg"])
def test_b64_encodings_send_string_inputs_beside_numbers(name: str) -> None:
    images = SyntheticImages(16, 16).batch(2)
    specs = {"image_bytes": InputSpec("image_bytes", "string", (None,)), "k": InputSpec("k", "int64", (None,))}
    encoding = get_encoding(name).with_signature("")
    body = encoding.encode({"image_bytes": ImageBytes(images), "k": np.array([3, 4], dtype=np.int64)})
    got = _parse(name, body, specs)
    fmt = "PNG" if name == "b64-png" else "JPEG"
    assert list(got["image_bytes"]) == [image_bytes(image, fmt) for image in images]
    assert got["k"].tolist() == [3, 4]


def test_raw_bytes_inputs_are_sent_as_they_are() -> None:
    data = np.empty(2, dtype=object)
    data[:] = [b"\x00\xffraw", b""]
    spec = {"blob": InputSpec("blob", "string", (None,))}
    got = _parse("b64-png", get_encoding("b64-png").with_signature("").encode({"blob": data}), spec)
    assert list(got["blob"]) == [b"\x00\xffraw", b""]


def test_one_uint8_input_as_a_mapping_gives_the_reference_bodies() -> None:
    images = SyntheticImages(16, 16).batch(2)
    for name in ENCODING_NAMES:
        encoding = get_encoding(name)
        key = "image_bytes" if encoding.image_format else "examples"
        value = ImageBytes(images) if encoding.image_format else images
        assert encoding.encode({key: value}) == encoding.encode(images, key)


@pytest.mark.parametrize(
    ("name", "specs", "reason"),
    [
        ("row-orjson", [InputSpec("h", "half", (None, 3))], "float16, which tensorflow/serving's REST API cannot"),
        ("row-orjson", [InputSpec("image_bytes", "string", (None,))], "only the b64 encodings send it"),
        ("b64-png", [InputSpec("x", "float", (None, 3))], "b64-png sends string (bytes) inputs and this signature"),
        ("row-fast", [InputSpec("x", "float", (None, 3))], "row-fast writes a single uint8 input only"),
        ("row-fast", [InputSpec("a", "uint8", (None, 3)), InputSpec("b", "uint8", (None,))], "single uint8"),
        ("row-fast", [InputSpec("b", "uint8", (None,))], "single uint8 input only (of rank 2 or more)"),
    ],
)
def test_an_encoding_says_why_it_cannot_express_a_signature(name: str, specs: list[InputSpec], reason: str) -> None:
    refusal = get_encoding(name).refusal(specs)
    assert refusal is not None
    assert reason in refusal
    assert "\n" not in refusal
