"""Encodings: round trips, headers, registry, and the fast uint8 JSON writer."""

from __future__ import annotations

import gzip
import json
import threading

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bench.errors import ConfigError
from bench.payloads.encodings import ENCODING_NAMES, ENCODINGS, decode_batch, get_encoding, get_encodings
from bench.payloads.fast_json import dumps_uint8, padded_bytes
from bench.payloads.images import SyntheticImages

BATCH = SyntheticImages(32, 32, seed=1).batch(3)
REST_NAMES = tuple(name for name in ENCODING_NAMES if ENCODINGS[name].protocol == "rest")  # gRPC: test_grpc_encodings


def test_registry_matches_the_cli_contract() -> None:
    assert tuple(ENCODINGS) == ENCODING_NAMES
    with pytest.raises(ConfigError, match=r"unknown encoding 'nope' \(valid: row-orjson, row-json"):
        get_encoding("nope")
    with pytest.raises(ConfigError, match="a, b"):
        get_encodings(["row-json", "a", "b"])


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_every_encoding_round_trips(name: str) -> None:
    encoding = get_encoding(name)
    body = encoding.encode(BATCH)
    assert isinstance(body, bytes)
    decoded = decode_batch(encoding, body)
    assert decoded.shape == BATCH.shape
    if encoding.lossless:
        assert np.array_equal(decoded, BATCH)
    else:
        # JPEG quality 90 smooths the mild pixel noise away but keeps the picture: PSNR >= 30 dB
        mse = np.mean((decoded.astype(float) - BATCH.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) >= 30.0
        assert not np.array_equal(decoded, BATCH)  # it really is lossy, the tolerance is needed


@pytest.mark.parametrize("name", REST_NAMES)
def test_bodies_are_the_documented_json(name: str) -> None:
    encoding = get_encoding(name)
    body = encoding.encode(BATCH)
    raw = gzip.decompress(body) if encoding.content_encoding == "gzip" else body
    doc = json.loads(raw)  # strict stdlib parser: valid JSON, not just something orjson accepts
    headers = encoding.headers()
    assert headers["Content-Type"] == "application/json"
    assert headers.get("Content-Encoding") == encoding.content_encoding
    if encoding.signature_name:
        assert doc["signature_name"] == encoding.signature_name == "serving_bytes"
        assert all(set(row) == {"b64"} for row in doc["instances"])
    else:
        assert "signature_name" not in doc
    if name == "columnar-orjson":
        assert list(doc["inputs"]) == ["examples"]
    elif name == "row-named-orjson":
        assert all(list(row) == ["examples"] for row in doc["instances"])
        assert list(orjson.loads(encoding.encode(BATCH, "images"))["instances"][0]) == ["images"]
    else:
        assert len(doc["instances"]) == len(BATCH)


def test_row_orjson_is_orjson_numpy_output_and_row_json_is_the_stdlib() -> None:
    assert get_encoding("row-orjson").encode(BATCH) == orjson.dumps(
        {"instances": BATCH}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    assert get_encoding("row-json").encode(BATCH) == json.dumps({"instances": BATCH.tolist()}).encode()


def test_non_contiguous_batches_are_accepted() -> None:
    view = SyntheticImages(16, 16).batch(4)[::2, :, ::-1]
    for name in ENCODING_NAMES:
        encoding = get_encoding(name)
        if encoding.lossless:
            assert np.array_equal(decode_batch(encoding, encoding.encode(view)), view), name


def test_bad_batches_are_rejected() -> None:
    with pytest.raises(TypeError, match="uint8"):
        get_encoding("row-fast").encode(BATCH.astype(np.float32))
    with pytest.raises(ValueError, match="batch >= 1"):
        get_encoding("row-orjson").encode(BATCH[:0])


def test_with_signature_targets_another_signature() -> None:
    encoding = get_encoding("row-fast").with_signature("predict_images")
    assert orjson.loads(encoding.encode(BATCH))["signature_name"] == "predict_images"
    assert get_encoding("row-fast").signature_name == ""


# --- bench.payloads.fast_json -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint8, st.lists(st.integers(1, 4), min_size=2, max_size=5).map(tuple)),
    st.sampled_from([None, 0.0, 0.05, 0.15]),
)
def test_fast_json_decodes_to_the_same_integers(array: np.ndarray, max_overhead: float | None) -> None:
    body = dumps_uint8(array, b'{"instances":', b"}", max_overhead=max_overhead)
    assert np.array_equal(np.asarray(json.loads(body)["instances"], dtype=np.uint8).reshape(array.shape), array)
    assert json.loads(body)["instances"] == array.tolist()
    compact = orjson.dumps({"instances": array}, option=orjson.OPT_SERIALIZE_NUMPY)
    if max_overhead is None:
        assert len(body) == len(compact) + padded_bytes(array)
    else:
        assert len(body) <= (1 + max_overhead) * len(compact)
    if max_overhead == 0.0:
        assert body == compact


def test_fast_json_bounds_the_padding_on_dark_images() -> None:
    batch = SyntheticImages(64, 64, seed=2).batch(8)
    batch[4:] //= 12  # four dark images, values 0..21: mostly 1-2 digits, 1-2 spaces of padding each
    compact = len(orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY))
    padded = dumps_uint8(batch)
    assert len(padded) > 1.2 * compact
    bounded = dumps_uint8(batch, max_overhead=0.15)
    assert compact < len(bounded) <= 1.15 * compact
    # the bright images keep their (cheap) padding; only dark ones were compacted
    assert b" " in bounded
    assert np.array_equal(np.asarray(orjson.loads(bounded), dtype=np.uint8), batch)


def test_fast_json_rejects_what_it_cannot_write() -> None:
    with pytest.raises(TypeError):
        dumps_uint8(np.zeros((2, 3), dtype=np.int16))
    with pytest.raises(ValueError, match="rank"):
        dumps_uint8(np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        dumps_uint8(np.zeros((0, 3), dtype=np.uint8))


def test_fast_json_is_correct_from_many_threads() -> None:
    batches = [SyntheticImages(16, 16, seed=s).batch(4) for s in range(4)]
    errors: list[int] = []

    def work(index: int) -> None:
        for _ in range(30):
            body = dumps_uint8(batches[index])
            if not np.array_equal(np.asarray(orjson.loads(body), dtype=np.uint8), batches[index]):
                errors.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
