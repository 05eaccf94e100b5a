"""Bodies that are valid JSON but pathological: lists nested past a tensor's rank limit, numbers
with thousands of digits, at every depth the parsers switch at. Each gets a 400 with
tensorflow/serving's text (rapidjson's for numbers), never a 500."""

from __future__ import annotations

import http.client
import json

import pytest

NUMBER_TOO_BIG = "JSON Parse error: Number too big to be stored in double. at offset: "
TOO_MANY_DIMS = "Too many dimensions in tensor: JSON lists nested more than 64 deep"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def post(port: int, verb: str, body: bytes) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", f"/v1/models/classifier:{verb}", body=body)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())["error"]
    finally:
        conn.close()


@pytest.mark.parametrize("depth", [64, 65, 100, 1500, 200_000])  # 1500: past orjson's limit
@pytest.mark.parametrize("duplicate_key", [False, True])  # True: the standard library parser's turn
def test_deep_lists_in_predict_get_400(embedded_server, depth, duplicate_key) -> None:
    prefix = b'{"x": 1, "x": 2, ' if duplicate_key else b"{"
    status, error = post(embedded_server.port, "predict", prefix + b'"instances": ' + nested(depth) + b"}")
    assert status == 400, error
    if depth > 64:
        assert TOO_MANY_DIMS in error
    status, error = post(embedded_server.port, "predict", prefix + b'"inputs": ' + nested(depth) + b"}")
    assert status == 400, error
    if depth > 64:
        assert error.startswith(TOO_MANY_DIMS)


@pytest.mark.parametrize(
    ("verb", "template"),
    [
        ("predict", b'{"instances": [%s]}'),
        ("predict", b'{"x": 1, "x": 2, "instances": [%s]}'),
        ("classify", b'{"examples": [{"f": %s}]}'),
        ("regress", b'{"examples": [{"f": [%s]}]}'),
    ],
)
@pytest.mark.parametrize(
    "number",
    [b"9" * 5000, b"-" + b"9" * 5000, b"1e" + b"9" * 5000, b"1" * 400, b"1e400"],
    ids=["5000-digits", "negative-5000-digits", "5000-digit-exponent", "400-digits", "1e400"],
)
def test_numbers_too_big_for_a_double_get_rapidjsons_400(embedded_server, verb, template, number) -> None:
    body = template % number
    status, error = post(embedded_server.port, verb, body)
    assert status == 400, error
    assert error == NUMBER_TOO_BIG + str(body.index(number))


def test_a_long_but_small_number_is_a_double(embedded_server) -> None:
    # 5000 fraction digits and a 5000-digit negative exponent are fine doubles for rapidjson.
    for number in (b"1." + b"9" * 5000, b"1e-" + b"9" * 5000):
        status, error = post(embedded_server.port, "predict", b'{"instances": [%s]}' % number)
        assert status == 400
        assert "Type: Number is not of expected type: uint8" in error


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_deep_values_in_examples_get_400(embedded_server, verb) -> None:
    for body in (b'{"examples": ' + nested(5000) + b"}", b'{"examples": [{"f": ' + nested(5000) + b"}]}"):
        status, error = post(embedded_server.port, verb, body)
        assert status == 400, error
