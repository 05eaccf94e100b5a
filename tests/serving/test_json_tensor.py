"""JSON <-> tensor rules of tensorflow/serving (no TensorFlow needed), and fast vs general path."""

from __future__ import annotations

import json
import math
from typing import Any, cast

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.payloads.specs import REFERENCE_SIGNATURES, InputSpec
from bench.serving.json_response import encode_error, encode_predict_response, format_float
from bench.serving.json_tensor import decode_predict_body
from bench.serving.rapidjson import JsonParseError, debug_string, loads
from bench.serving.status import ServingError
from tests.helpers.decode_helpers import dense, outcome

SMALL = {"x": InputSpec("x", "uint8", (None, 2))}
TWO = {"a": InputSpec("a", "uint8", (None,)), "b": InputSpec("b", "float", (None,))}


def error_of(body: bytes, inputs=REFERENCE_SIGNATURES, fast: bool = True) -> tuple[int, str]:
    with pytest.raises(ServingError) as info:
        decode_predict_body(body, inputs, fast=fast)
    return info.value.http_status, info.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"instances = [1, 2]", "Invalid value. at offset: 0", id="not-json"),
        pytest.param(b'{"a" 1}', "Missing a colon after a name of object member. at offset: 5", id="colon"),
        pytest.param(b'{"a":1 "b":2}', "Missing a comma or '}' after an object member. at offset: 7", id="comma-curly"),
        pytest.param(b'{"a":[1 2]}', "Missing a comma or ']' after an array element. at offset: 8", id="comma-square"),
        pytest.param(b"{,}", "Missing a name for object member. at offset: 1", id="name"),
        pytest.param(b'{"a":"x', "Missing a closing quotation mark in string. at offset: 7", id="quote"),
        pytest.param(b'{"a":"\\q"}', "Invalid escape character in string. at offset: 6", id="escape"),
        pytest.param(b'{"a":"\x01"}', "Invalid encoding in string. at offset: 6", id="control-char"),
        pytest.param(b'{"a":1e999}', "Number too big to be stored in double. at offset: 5", id="too-big"),
        pytest.param(b'{"a":1.}', "Miss fraction part in number. at offset: 7", id="fraction"),
        pytest.param(b'{"a":1e}', "Miss exponent in number. at offset: 7", id="exponent"),
        pytest.param(b"   ", "The document is empty. at offset: 3", id="whitespace-only"),
        pytest.param(b"[1,]", "Invalid value. at offset: 3", id="trailing-comma"),
    ],
)
def test_parse_errors_name_rapidjson_message_and_offset(body: bytes, message: str) -> None:
    assert error_of(body) == (400, f"JSON Parse error: {message}")


def test_parse_accepts_what_rapidjson_accepts() -> None:
    assert cast("dict[str, Any]", loads(b'{"a": [NaN, Infinity, -Inf]}  garbage after the value'))["a"][1] == math.inf
    # Duplicate keys: the first wins, as rapidjson's FindMember finds it, whichever parser reads the body.
    assert loads(b'{"a": 1, "a": 2}') == {"a": 1}  # orjson's path
    assert loads(b'\xef\xbb\xbf{"a": 1, "a": 2}') == {"a": 1}  # this module's parser (orjson refuses a BOM)
    assert loads(b'{"a": 1, "a": 2} trailing') == {"a": 1}  # the prefix orjson re-reads
    assert loads(b'{"x": [{"k": "a:b", "k": 2}], "y": {"z": 1}}') == {"x": [{"k": "a:b"}], "y": {"z": 1}}
    assert loads(b'{"s": "no:dup", "t": 1}') == {"s": "no:dup", "t": 1}  # a colon in a string is no duplicate
    assert cast("dict[str, Any]", loads(b'{"big": 18446744073709551616}'))["big"] == pytest.approx(
        1.8446744073709552e19
    )
    with pytest.raises(JsonParseError):
        loads(b"{")


def test_debug_string_is_rapidjson_pretty_and_truncated() -> None:
    assert debug_string({"a": [1, 2], "b": {"c": None, "d": 1.5}}) == (
        '{\n    "a": [1, 2],\n    "b": {\n        "c": null,\n        "d": 1.5\n    }\n}'
    )
    assert debug_string(1e21) == "1e21"
    assert debug_string(1e20) == "100000000000000000000.0"
    long = debug_string({"instances": list(range(1000))})
    assert 256 <= len(long) < 300
    assert long.endswith(tuple("0123456789"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"", "JSON Parse error: The document is empty", id="empty"),
        pytest.param(b"[1, 2]", "JSON Value: [1, 2] Is not object", id="array"),
        pytest.param(b'"x"', 'JSON Value: "x" Is not object', id="string"),
        pytest.param(
            b'{"signature_name": 5}',
            'JSON Value: {\n    "signature_name": 5\n} not formatted correctly. '
            "'signature_name' key must be a string value.",
            id="signature-not-string",
        ),
        pytest.param(
            b'{"signature_name": "nope"}', 'Serving signature name: "nope" not found in signature def', id="sig"
        ),
        pytest.param(b"{}", "Missing 'inputs' or 'instances' key", id="neither"),
        pytest.param(
            b'{"instances": [], "inputs": []}',
            'JSON Value: {\n    "instances": [],\n    "inputs": []\n} Not formatted correctly expecting only one of '
            "'inputs' or 'instances' keys to exist ",
            id="both",
        ),
        pytest.param(
            b'{"instances": 3}',
            "JSON Value: {\n    \"instances\": 3\n} Expecting 'instances' to be an list/array",
            id="nl",
        ),
        pytest.param(
            b'{"instances": []}', "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array", id="e"
        ),
    ],
)
def test_document_level_errors(body: bytes, message: str) -> None:
    assert error_of(body) == (400, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            b'{"instances": [[1, 1.5]]}', "JSON Value: 1.5 Type: Number is not of expected type: uint8", id="f"
        ),
        pytest.param(
            b'{"instances": [[1, true]]}', "JSON Value: true Type: True is not of expected type: uint8", id="b"
        ),
        pytest.param(
            b'{"instances": [[1, "x"]]}', 'JSON Value: "x" Type: String is not of expected type: uint8', id="s"
        ),
        pytest.param(
            b'{"instances": [[1, null]]}', "JSON Value: null Type: Null is not of expected type: uint8", id="n"
        ),
        pytest.param(
            b'{"instances": [[1, NaN]]}', "JSON Value:  Type: Number is not of expected type: uint8", id="nan"
        ),
        pytest.param(
            b'{"instances": [[1, {"b64": "AA=="}]]}',
            'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: uint8',
            id="b64-to-uint8",
        ),
        pytest.param(
            b'{"instances": [[1, 2147483648]]}',
            "JSON Value: 2147483648 Type: Number is not of expected type: uint8",
            id="beyond-int32",
        ),
        pytest.param(
            b'{"instances": [[1, [2]]]}', "Encountered list at unexpected level: 1 expected < 1", id="deeper-list"
        ),
        pytest.param(
            b'{"instances": [[[1, 2], 3]]}',
            "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
            id="scalar-too-high",
        ),
        pytest.param(
            b'{"instances": [[[1, 2], [3]]]}',
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
            id="ragged-inside",
        ),
    ],
)
def test_element_errors_are_wrapped_with_the_index(body: bytes, message: str) -> None:
    status, text = error_of(body, SMALL)
    assert status == 400
    assert text == f"Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: {message}"


def test_cross_element_and_mode_errors() -> None:
    wrapped = "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
    assert error_of(b'{"instances": [[1, 2], [3]]}', SMALL)[1] == wrapped + "Expecting tensor size: 2 but got: 1"
    assert error_of(b'{"instances": [[1, 2], [[3], [4]]]}', SMALL)[1] == wrapped + "Expecting shape [2] but got: [2,1]"
    assert error_of(b'{"instances": [[1, 2], {"x": [3, 4]}]}', SMALL)[1] == (
        "Expecting value/list but got object at item 1 of input list"
    )
    assert error_of(b'{"instances": [{"x": [1, 2]}, [3, 4]]}', SMALL)[1] == (
        "Expecting object but got list at item 1 of input list"
    )
    assert error_of(b'{"instances": [{"y": [1, 2]}]}', SMALL)[1] == (
        "Failed to process element: 0 key: y of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: y"
    )
    assert error_of(b'{"instances": [{}]}', SMALL)[1] == (
        "Failed to process element: 0 of 'instances' list. JSON object: {} keys must be equal to: x"
    )
    assert error_of(b'{"instances": [1]}', TWO)[1] == (
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
        "tensorinfo_map"
    )
    assert error_of(b'{"inputs": [1]}', TWO)[1] == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map"
    )
    assert error_of(b'{"inputs": {"a": [1]}}', TWO)[1] == "Missing named input: b in 'inputs' object."
    assert error_of(b'{"inputs": [[1, 2], [3]]}', SMALL)[1] == (
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
    )


def test_successful_decodes() -> None:
    row = decode_predict_body(b'{"instances": [[1, 256], [-1, 300]]}', SMALL)
    assert row.row_format
    assert row.tensors["x"].tolist() == [[1, 0], [255, 44]]
    col = decode_predict_body(b'{"inputs": [[1, 2]], "extra": 1}', SMALL)
    assert not col.row_format
    assert col.tensors["x"].tolist() == [[1, 2]]
    named = decode_predict_body(b'{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}', SMALL)
    assert named.tensors["x"].tolist() == [[1, 2], [3, 4]]
    two = decode_predict_body(b'{"instances": [{"a": 1, "b": 2.5}, {"a": 3, "b": 4}]}', TWO)
    assert two.tensors["a"].tolist() == [1, 3]
    assert two.tensors["b"].dtype == np.float32
    scalar = decode_predict_body(b'{"inputs": 7}', SMALL)
    assert scalar.tensors["x"].shape == ()
    sig = decode_predict_body(
        b'{"signature_name": "serving_bytes", "instances": [{"b64": "aGk="}, {"b64": "aGk"}]}', REFERENCE_SIGNATURES
    )
    assert sig.signature_name == "serving_bytes"
    assert sig.tensors["image_bytes"].tolist() == [b"hi", b"hi"]
    # A key given twice: the first one is the request, as in tensorflow/serving (rapidjson's FindMember).
    for fast in (True, False):
        twice = decode_predict_body(b'{"instances": [[1, 2]], "instances": [[3, 4], [5, 6]]}', SMALL, fast=fast)
        assert twice.tensors["x"].tolist() == [[1, 2]]
        named_twice = decode_predict_body(b'{"inputs": {"x": [[7, 8]], "x": [[9, 9]]}}', SMALL, fast=fast)
        assert named_twice.tensors["x"].tolist() == [[7, 8]]


def test_base64_errors() -> None:
    assert error_of(b'{"signature_name": "serving_bytes", "instances": [{"b64": "a"}]}')[1].endswith(
        "Error: INVALID_ARGUMENT: Unable to base64 decode"
    )
    assert error_of(b'{"signature_name": "serving_bytes", "instances": [[{"b64": 1}]]}')[1].endswith(
        'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'
    )


def test_float_formatting_matches_tensorflow_serving() -> None:
    f32 = [float(np.float32(v)) for v in (0.1, 3.0, 3e-05, 9e06, 0.123456789)]
    assert [format_float(v) for v in f32] == ["0.1", "3.0", "3e-05", "9e+06", "0.123456791"]
    assert format_float(math.nan) == "NaN"
    assert format_float(-math.inf) == "-Infinity"
    assert format_float(0.1, double=True) == "0.1"
    assert format_float(1 / 3, double=True) == "0.33333333333333331"


def test_response_encoding() -> None:
    outputs = {"probabilities": np.array([[0.5, 0.25]], np.float32), "classes": np.array([1])}
    row = encode_predict_response(outputs, True)
    assert json.loads(row) == {"predictions": [{"classes": 1, "probabilities": [0.5, 0.25]}]}
    assert json.loads(encode_predict_response(outputs, False)) == {
        "outputs": {"classes": [1], "probabilities": [[0.5, 0.25]]}
    }
    single = encode_predict_response({"y": np.array([[1.0], [2.0]], np.float32)}, True)
    assert json.loads(single) == {"predictions": [[1.0], [2.0]]}
    assert b"[1.0]" in single
    with pytest.raises(ServingError, match="has no shape information"):
        encode_predict_response({"y": np.array(1.0, np.float32)}, True)
    with pytest.raises(ServingError, match="inconsistent batch size"):
        encode_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, True)
    assert json.loads(encode_error('bad "x"\n')) == {"error": 'bad "x"\n'}


# -- fast path agrees with the general path ------------------------------------------------------


HAND_PICKED = [
    b'{"instances": [[[[1, 2, 3]]]]}',
    b'{"instances":[[[[1,2,3]]]]}',
    b' \n{ "signature_name" : "serving_default" , "instances" : [ [ [ [ 0 , 255 , 256 ] ] ] ] } \n',
    b'{"instances": [[[[1, 2, 3]]]], "signature_name": "serving_default"}',
    b'{"signature_name": "serving_bytes", "instances": [[[[1, 2, 3]]]]}',
    b'{"signature_name": "nope", "instances": [[[[1, 2, 3]]]]}',
    b'{"instances": [[[[1, 2, 03]]]]}',
    b'{"instances": [[[[1, 2 3]]]]}',
    b'{"instances": [[[[1, 2, -3]]]]}',
    b'{"instances": [[[[1, 2, 3.0]]]]}',
    b'{"instances": [[[[1, 2, 1e2]]]]}',
    b'{"instances": [[[[1, 2, 3]], [[4, 5]]]]}',
    b'{"instances": [[[[1, 2, 3]]], [[[4, 5, 6]], [[7, 8, 9]]]]}',
    b'{"instances": [[[[1, 2, 3]]]]} trailing',
    b'{"instances": [[[[1, 2, 3]]]],}',
    b'{"instances": [[[[1, 2, 3]]]], "inputs": 1}',
    b'{"instances": [[[[1, 2, 3]]]]',
    b'{"instances": [[[[1, 2, 3],]]]}',
    b'{"instances": [[[[1, 2, 3]]]]]}',
    b'{"instances": [[[[]]]]}',
    b'{"instances": []}',
    b'{"instances": [1, 2, 3]}',
    b'{"instances": [[1, [2], 3]]}',
    b'{"instances": [[[[1, 2, 12345]]]]}',
    b'{"instances": [[[[1, 2, 2147483648]]]]}',
    b'{"inputs": [[[[1, 2, 3]]]]}',
    b'{"inputs": [[[[1, 2, 3]], [[4, 5, 6]]]]}',
    b'{"inputs": [[[[1, 2, 3]], [[4, 5]]]]}',
    b'{"instances": [[[[1, 2, 3]]]], "instances": [[[[4, 5, 6]]]]}',
    b'{"instances": [[[[1,\t2,\r\n3]]]]}',
    b'{"instances": [[[[1, 2, 3]]]]}\x00',
    b'{"instances": [[[[1, 2, 3\x00]]]]}',
]


@pytest.mark.parametrize("body", HAND_PICKED)
def test_fast_and_general_paths_agree_on_hand_picked_bodies(body: bytes) -> None:
    assert outcome(body, fast=True) == outcome(body, fast=False)


def test_fast_path_really_runs_on_plain_bodies() -> None:
    from bench.serving.fast_decode import try_fast_decode

    images = dense((4, 8, 8, 3), 0)
    for body in (
        orjson.dumps({"instances": images.tolist()}),
        json.dumps({"inputs": images.tolist()}).encode(),
        json.dumps({"signature_name": "serving_default", "instances": images.tolist()}, indent=2).encode(),
    ):
        fast = try_fast_decode(body, REFERENCE_SIGNATURES)
        assert fast is not None
        assert np.array_equal(fast.tensors["examples"], (images & 0xFF).astype(np.uint8))


def _render(value: object, style: int) -> bytes:
    if style == 0:
        return orjson.dumps(value)
    if style == 1:
        return json.dumps(value).encode()
    return json.dumps(value, indent=1, separators=(" ,", " : ")).encode()


MUTATIONS = ["", "-", "0", "1.5", "x", " ", ",", "[", "]", "{", '"', "true", "null", "01", "1e2", "\n", "[]", "7777"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
    seed=st.integers(0, 10_000),
    key=st.sampled_from(["instances", "inputs"]),
    style=st.integers(0, 2),
    signature=st.sampled_from([None, "serving_default", "serving_bytes"]),
    mutate=st.booleans(),
    position=st.floats(0, 1),
    mutation=st.sampled_from(MUTATIONS),
    cut=st.integers(0, 3),
)
def test_fast_and_general_paths_agree_on_generated_bodies(
    shape, seed, key, style, signature, mutate, position, mutation, cut
) -> None:
    doc: dict = {key: dense(shape, seed).tolist()}
    if signature is not None:
        doc = {"signature_name": signature, **doc} if seed % 2 else {**doc, "signature_name": signature}
    body = _render(doc, style)
    if mutate:
        at = int(position * len(body))
        body = body[:at] + mutation.encode() + body[at + cut :]
    assert outcome(body, fast=True) == outcome(body, fast=False)
