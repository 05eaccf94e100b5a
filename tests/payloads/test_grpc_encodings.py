"""The gRPC encodings: each body is a PredictRequest that decodes back to the batch it was made from."""

from __future__ import annotations

import numpy as np
import pytest

from bench.payloads import grpc_bodies
from bench.payloads.encodings import ENCODINGS, decode_batch, get_encoding, protocol_of
from bench.payloads.images import image_source
from bench.payloads.pool import PayloadPool
from bench.payloads.specs import BYTES_SIGNATURE, InputSpec
from bench.payloads.tensors import ImageBytes

GRPC = ("grpc-tensor-content", "grpc-int-val", "grpc-bytes-png", "grpc-bytes-jpeg")
SOURCE = image_source(None, 32, 32)


def test_registry_names_the_protocol_of_every_encoding() -> None:
    assert {name for name, e in ENCODINGS.items() if e.protocol == "grpc"} == set(GRPC)
    assert protocol_of("row-orjson") == "rest"
    assert protocol_of("grpc-int-val") == "grpc"
    assert protocol_of("an-encoding-from-an-old-run") == "rest"
    assert get_encoding("grpc-tensor-content").headers() == {}


@pytest.mark.parametrize("name", GRPC)
def test_body_is_a_predict_request_that_decodes_to_the_batch(name: str) -> None:
    encoding = get_encoding(name).with_model("classifier", 3)
    batch = SOURCE.batch(3, index=1)
    body = encoding.encode(batch)
    spec, inputs = grpc_bodies.decode_request(body)
    assert spec == grpc_bodies.ModelSpec("classifier", 3, encoding.signature_name)
    assert list(inputs) == [encoding.default_input]
    decoded = decode_batch(encoding, body)
    if encoding.lossless:
        np.testing.assert_array_equal(decoded, batch)
    else:
        assert decoded.shape == batch.shape
        assert np.abs(decoded.astype(int) - batch).mean() < 12  # JPEG q90


def test_tensor_content_is_the_raw_bytes_and_typed_fields_the_values() -> None:
    batch = SOURCE.batch(2)
    request = grpc_bodies.protos().PredictRequest
    content = request.FromString(get_encoding("grpc-tensor-content").encode(batch)).inputs["examples"]
    assert content.tensor_content == batch.tobytes()
    assert [d.size for d in content.tensor_shape.dim] == list(batch.shape)
    typed = request.FromString(get_encoding("grpc-int-val").encode(batch)).inputs["examples"]
    assert not typed.tensor_content
    assert list(typed.int_val) == batch.ravel().tolist()


@pytest.mark.parametrize("name", ["grpc-tensor-content", "grpc-int-val"])
def test_named_batches_of_any_dtype_round_trip(name: str) -> None:
    rng = np.random.default_rng(0)
    batch: dict[str, np.ndarray] = {
        "pixels": rng.random((2, 4, 4, 3)).astype(np.float32),
        "half": rng.random(2).astype(np.float16),
        "ids": np.array([1, -(2**40)], dtype=np.int64),
        "flags": np.array([True, False]),
        "weights": rng.random((2, 3)),
    }
    _, inputs = grpc_bodies.decode_request(get_encoding(name).encode(batch))
    for key, value in batch.items():
        assert inputs[key].dtype == value.dtype, key
        np.testing.assert_array_equal(inputs[key], value)


def test_string_inputs_go_in_string_val_one_per_example() -> None:
    images = SOURCE.batch(2)
    body = get_encoding("grpc-bytes-png").encode({"image_bytes": ImageBytes(images), "k": np.array([1, 2], np.int32)})
    _, inputs = grpc_bodies.decode_request(body)
    assert inputs["image_bytes"].shape == (2,)
    np.testing.assert_array_equal(grpc_bodies.decode_images(inputs["image_bytes"]), images)
    np.testing.assert_array_equal(inputs["k"], [1, 2])


def test_typed_fields_decode_with_the_servers_fill_rules() -> None:
    tensor = grpc_bodies.protos().PredictRequest().inputs["x"]
    tensor.dtype = 4  # DT_UINT8
    tensor.tensor_shape.dim.add(size=4)
    tensor.int_val.extend([300, 7])  # narrowed unchecked; the last value repeats
    np.testing.assert_array_equal(grpc_bodies.tensor_array(tensor), np.array([44, 7, 7, 7], np.uint8))


def test_refusals_say_what_a_grpc_encoding_cannot_send() -> None:
    strings = [InputSpec("image_bytes", "string", (None,))]
    assert get_encoding("grpc-bytes-png").refusal(strings) is None
    assert "grpc-bytes" in (get_encoding("grpc-tensor-content").refusal(strings) or "")
    several = [InputSpec("a", "half", (None, 3)), InputSpec("b", "int64", (None,))]
    assert get_encoding("grpc-tensor-content").refusal(several) is None  # REST cannot send half
    assert get_encoding("row-orjson").refusal(several) is not None
    assert get_encoding("grpc-bytes-jpeg").signature_name == BYTES_SIGNATURE


def test_pool_measures_grpc_encode_and_sizes_as_for_json() -> None:
    encoding = get_encoding("grpc-tensor-content")
    pool = PayloadPool.build(encoding, SOURCE, 4, 3)
    assert len(pool) == 3
    for payload in pool:
        assert payload.payload_bytes == len(payload.body) > SOURCE.batch(4).nbytes
        assert payload.encode_us > 0
        assert payload.headers == {}


def test_spliced_tensor_content_parses_to_what_the_official_serializer_writes() -> None:
    batch: dict[str, np.ndarray | ImageBytes] = {
        "examples": SOURCE.batch(2),
        "scale": np.array([0.5, 2.0], np.float32),
        "image_bytes": ImageBytes(SOURCE.batch(2)),
    }
    spec = grpc_bodies.ModelSpec("classifier", 2, "serving_default")
    body = grpc_bodies.request_body(batch, spec, fill="content")
    official = grpc_bodies.protos().PredictRequest()
    official.model_spec.name, official.model_spec.signature_name = "classifier", "serving_default"
    official.model_spec.version.value = 2
    for name in ("examples", "scale"):
        tensor = official.inputs[name]
        value = batch[name]
        assert isinstance(value, np.ndarray)
        tensor.dtype = 4 if value.dtype == np.uint8 else 1
        tensor.tensor_shape.dim.extend(tensor.tensor_shape.Dim(size=d) for d in value.shape)
        tensor.tensor_content = value.tobytes()
    strings = official.inputs["image_bytes"]
    strings.dtype = 7
    strings.tensor_shape.dim.add(size=2)
    strings.string_val.extend(ImageBytes(SOURCE.batch(2)).encoded("PNG"))
    assert grpc_bodies.protos().PredictRequest.FromString(body) == official
    assert len(body) == len(official.SerializeToString())
