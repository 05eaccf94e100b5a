"""Conformance of the embedded server with the reference (shared/docs/tf-serving-rest-api.md),
over real HTTP on an ephemeral loopback port: one case per rule, exact statuses and texts."""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json

import numpy as np
import orjson
import pytest
from PIL import Image

M = "/v1/models/classifier"
IMAGE = np.arange(128 * 128 * 3, dtype=np.int64).reshape(128, 128, 3) % 251


def call(server, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """One raw request (http.client sends the path exactly as given); (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def instances(*images: np.ndarray) -> bytes:
    return orjson.dumps({"instances": [im.tolist() for im in images]})


ERRORS = [
    # §2 routing
    ("PUT", M, b"", 400, "Malformed request: PUT /v1/models/classifier"),
    ("DELETE", M, b"", 400, "Malformed request: DELETE /v1/models/classifier"),
    ("PATCH", M + ":predict", b"{}", 400, "Malformed request: PATCH /v1/models/classifier:predict"),
    ("GET", M + ":predict", b"", 400, "Malformed request: GET /v1/models/classifier:predict"),
    ("POST", M + "/metadata", b"{}", 400, "Malformed request: POST /v1/models/classifier/metadata"),
    ("POST", M + ":PREDICT", b"{}", 400, "Malformed request: POST /v1/models/classifier:PREDICT"),
    ("POST", M + ":explain", b"{}", 400, "Malformed request: POST /v1/models/classifier:explain"),
    ("GET", M + "/version/1", b"", 400, "Malformed request: GET /v1/models/classifier/version/1"),
    ("GET", M + "/versions/one", b"", 400, "Malformed request: GET /v1/models/classifier/versions/one"),
    ("GET", M + "/versions/1/labels/a", b"", 400, "Malformed request: GET /v1/models/classifier/versions/1/labels/a"),
    ("GET", "/v1/models/", b"", 400, "Malformed request: GET /v1/models/"),
    ("POST", M + ":predict?x=1", b"{}", 400, "Malformed request: POST /v1/models/classifier:predict?x=1"),
    ("GET", "/v1/models", b"", 400, "Missing model name in request."),
    ("GET", M + "?x=1", b"", 404, "Could not find any versions of model classifier?x=1"),
    # §3 status
    ("GET", "/v1/models/nope", b"", 404, "Could not find any versions of model nope"),
    ("GET", M + "/versions/7", b"", 404, "Could not find version 7 of model classifier"),
    # §4 metadata
    ("GET", "/v1/models/nope/metadata", b"", 404, "Servable not found for request: Latest(nope)"),
    ("GET", M + "/versions/7/metadata", b"", 404, "Servable not found for request: Specific(classifier, 7)"),
    ("GET", M + "/labels/stable/metadata", b"", 400, "Unrecognized servable version label: stable"),
    # §5.1 order and §5.2 parsing
    ("POST", M + ":predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", M + ":predict", b"instances = [1, 2]", 400, "JSON Parse error: Invalid value. at offset: 0"),
    ("POST", "/v1/models/nope:predict", b"{x", 400, "JSON Parse error: Missing a name for object member. at offset: 1"),
    ("POST", "/v1/models/nope:predict", b"{}", 404, "Servable not found for request: Latest(nope)"),
    ("POST", M + "/versions/7:predict", b"{}", 404, "Servable not found for request: Specific(classifier, 7)"),
    ("POST", M + "/labels/canary:predict", b"{}", 400, "Unrecognized servable version label: canary"),
    ("POST", M + ":predict", b"[1, 2]", 400, "JSON Value: [1, 2] Is not object"),
    (
        "POST",
        M + ":predict",
        b'{"signature_name": 1}',
        400,
        'JSON Value: {\n    "signature_name": 1\n} not formatted correctly. '
        "'signature_name' key must be a string value.",
    ),
    (
        "POST",
        M + ":predict",
        b'{"signature_name": "nope"}',
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    # §5.4 row format
    ("POST", M + ":predict", b"{}", 400, "Missing 'inputs' or 'instances' key"),
    (
        "POST",
        M + ":predict",
        b'{"instances": [1], "inputs": [1]}',
        400,
        'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly expecting only one of '
        "'inputs' or 'instances' keys to exist ",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": {}}',
        400,
        "JSON Value: {\n    \"instances\": {}\n} Expecting 'instances' to be an list/array",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": []}',
        400,
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [[[[1.5]]]]}',
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: 1.5 Type: Number is not of expected type: uint8",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [[[["7"]]]]}',
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "7" Type: String is not of expected type: uint8',
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [[[[1, 2], [3]]]]}',
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Encountered list at unexpected size: 1 at level: 2 expected size: 2",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [[[[1, 2, 3]]], [[[1, 2]]]]}',
        400,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 3 but got: 2",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [[[[1, 2, 3, 4]]], [[[1, 2], [3, 4]]]]}',
        400,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting shape [1,1,4] but got: [1,2,2]",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [{"pixels": [1]}]}',
        400,
        "Failed to process element: 0 key: pixels of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: pixels",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [[1], {"examples": [1]}]}',
        400,
        "Expecting value/list but got object at item 1 of input list",
    ),
    (
        "POST",
        M + ":predict",
        b'{"instances": [{"examples": [1]}, [1]]}',
        400,
        "Expecting object but got list at item 1 of input list",
    ),
    # §5.5 columnar
    ("POST", M + ":predict", b'{"inputs": {"images": []}}', 400, "Missing named input: examples in 'inputs' object."),
    (
        "POST",
        M + ":predict",
        b'{"inputs": [[[[1, 2]], [[3]]]]}',
        400,
        "Encountered list at unexpected size: 1 at level: 3 expected size: 2",
    ),
    # §5.6 strings
    (
        "POST",
        M + ":predict",
        b'{"signature_name": "serving_bytes", "instances": [{"b64": "@@@"}]}',
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 decode",
    ),
    # §6 classify / regress
    (
        "POST",
        M + ":classify",
        b"{}",
        400,
        "JSON Value: {} When method is classify, key 'examples' is expected and was not found",
    ),
    (
        "POST",
        M + ":regress",
        b'{"examples": []}',
        400,
        "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
    ),
    ("POST", M + ":classify", b'{"examples": [3]}', 400, "Example must be JSON object but got JSON Number"),
    (
        "POST",
        "/v1/models/nope:classify",
        b'{"examples": [{"x": 1}]}',
        404,
        "Servable not found for request: Latest(nope)",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"), ERRORS, ids=[f"{e[0]} {e[1]} {e[2][:30]!r}" for e in ERRORS]
)
def test_error_status_and_exact_message(embedded_server, method, path, body, status, message) -> None:
    got_status, headers, got_body = call(embedded_server, method, path, body)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert json.loads(got_body) == {"error": message}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", M + "/versions/1234567890123456789012345", 400, id="version-overflow"),
        pytest.param("POST", M + "/versions/99999999999999999999:predict", 400, id="version-overflow-predict"),
        pytest.param("OPTIONS", M, 400, id="options-without-origin"),
        pytest.param("HEAD", M, 400, id="head"),
    ],
)
def test_empty_body_errors(embedded_server, method, path, status) -> None:
    got_status, _, body = call(embedded_server, method, path)
    assert (got_status, body) == (status, b"")


def test_options_preflight_with_origin(embedded_server) -> None:
    assert call(embedded_server, "OPTIONS", M + ":predict", headers={"Origin": "http://example.test"})[::2] == (
        200,
        b"",
    )


@pytest.mark.parametrize("path", ["/", "/v2/models/classifier", "/healthz", "/v1"])
def test_outside_v1_is_html_404(embedded_server, path) -> None:
    status, headers, body = call(embedded_server, "GET", path)
    assert status == 404
    assert "json" not in headers.get("content-type", "")
    assert b"Not Found" in body


def test_status_shape_and_case_insensitive_routing(embedded_server) -> None:
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    for path in (M, M + "/versions/1", M + "/labels/anything", "/V1/MODELS/classifier", "/v1/models/class%69fier"):
        status, headers, body = call(embedded_server, "GET", path)
        assert (status, json.loads(body)) == (200, expected), path
        assert headers["content-type"] == "application/json"
    # "/METADATA" is captured case-insensitively but compared case-sensitively: a status request.
    assert json.loads(call(embedded_server, "GET", M + "/METADATA")[2]) == expected


def test_metadata_prints_signature_defs(embedded_server) -> None:
    for path in (M + "/metadata", M + "/versions/1/metadata"):
        status, _, body = call(embedded_server, "GET", path)
        assert status == 200
        doc = json.loads(body)
        assert doc["model_spec"] == {"name": "classifier", "signature_name": "", "version": "1"}
        sigs = doc["metadata"]["signature_def"]["signature_def"]
        default = sigs["serving_default"]
        assert default["method_name"] == "tensorflow/serving/predict"
        examples = default["inputs"]["examples"]
        assert examples["dtype"] == "DT_UINT8"
        assert [d["size"] for d in examples["tensor_shape"]["dim"]] == ["-1", "128", "128", "3"]
        assert examples["tensor_shape"]["unknown_rank"] is False
        assert default["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
        assert default["outputs"]["classes"]["dtype"] == "DT_INT64"
        assert sigs["serving_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"


def predict(server, body: bytes, path: str = M + ":predict", headers: dict | None = None) -> dict:
    status, _, reply = call(server, "POST", path, body, headers)
    assert status == 200, reply
    return json.loads(reply)


def test_row_columnar_named_and_version_urls_agree(embedded_server) -> None:
    a, b = IMAGE, (IMAGE * 7) % 256
    row = predict(embedded_server, instances(a, b))["predictions"]
    assert len(row) == 2
    assert set(row[0]) == {"classes", "probabilities"}
    columnar = predict(embedded_server, orjson.dumps({"inputs": [a.tolist(), b.tolist()]}))["outputs"]
    assert columnar["classes"] == [r["classes"] for r in row]
    np.testing.assert_allclose(columnar["probabilities"], [r["probabilities"] for r in row], rtol=1e-6)
    named = orjson.dumps({"instances": [{"examples": a.tolist()}, {"examples": b.tolist()}]})
    assert predict(embedded_server, named)["predictions"] == row
    assert predict(embedded_server, instances(a, b), M + "/versions/1:predict")["predictions"] == row
    with_sig = orjson.dumps({"signature_name": "serving_default", "instances": [a.tolist(), b.tolist()]})
    assert predict(embedded_server, with_sig + b"  trailing bytes are ignored")["predictions"] == row


def test_uint8_values_wrap_instead_of_failing(embedded_server) -> None:
    wrapped = (IMAGE + 256).tolist()  # 256 -> 0 ... exactly like tensorflow/serving
    negative = (IMAGE - 256).tolist()  # -1 -> 255
    expected = predict(embedded_server, instances(IMAGE))["predictions"]
    assert predict(embedded_server, orjson.dumps({"instances": [wrapped]}))["predictions"] == expected
    assert predict(embedded_server, orjson.dumps({"instances": [negative]}))["predictions"] == expected


def test_the_graph_decides_which_shapes_run_not_the_declared_signature(embedded_server) -> None:
    # [-1,128,128,3] is declared; tensorflow/serving feeds the placeholder whatever the body holds.
    small = orjson.dumps({"instances": np.ones((2, 2, 2, 3), int).tolist()})
    assert len(predict(embedded_server, small)["predictions"]) == 2
    status, _, body = call(
        embedded_server, "POST", M + ":predict", orjson.dumps({"instances": np.ones((1, 4, 4, 4), int).tolist()})
    )
    assert status == 400
    assert json.loads(body)["error"].startswith("input depth must be evenly divisible by filter depth: 4 vs 3")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3), "convolution input must be 4-dimensional: [1,3]"),
        ((2,), "convolution input must be 4-dimensional: [2]"),
        ((2, 128, 3), "convolution input must be 4-dimensional: [2,128,3]"),
    ],
)
def test_a_batch_below_rank_4_is_refused_instead_of_aborting_the_server(embedded_server, shape, message) -> None:
    # oneDNN's convolution fails a CHECK (the process aborts) on such input; TensorFlow's own
    # kernel answers it with this INVALID_ARGUMENT, and so do we.
    status, _, body = call(
        embedded_server, "POST", M + ":predict", orjson.dumps({"instances": np.ones(shape, int).tolist()})
    )
    assert (status, json.loads(body)) == (400, {"error": message})
    assert call(embedded_server, "GET", M)[0] == 200  # and the server is still there


def test_b64_images_on_serving_bytes(embedded_server) -> None:
    buf = io.BytesIO()
    Image.fromarray(IMAGE.astype(np.uint8)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    body = orjson.dumps({"signature_name": "serving_bytes", "instances": [{"b64": b64}]})
    got = predict(embedded_server, body)["predictions"]
    expected = predict(embedded_server, instances(IMAGE))["predictions"]
    assert got[0]["classes"] == expected[0]["classes"]
    np.testing.assert_allclose(got[0]["probabilities"], expected[0]["probabilities"], atol=1e-5)


def test_gzip_request_bodies(embedded_server) -> None:
    body = instances(IMAGE)
    got = predict(embedded_server, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert got == predict(embedded_server, body)
    status, _, reply = call(embedded_server, "POST", M + ":predict", b"not gzip", {"Content-Encoding": "gzip"})
    assert (status, json.loads(reply)) == (400, {"error": "JSON Parse error: The document is empty"})


def test_classify_on_a_predict_only_model_is_a_400(embedded_server) -> None:
    status, _, body = call(embedded_server, "POST", M + ":classify", b'{"examples": [{"x": [1.0]}]}')
    assert status == 400
    assert json.loads(body)["error"]
    status, _, body = call(embedded_server, "POST", M + ":regress", b'{"examples": [{"x": [1.0]}]}')
    assert status == 400
