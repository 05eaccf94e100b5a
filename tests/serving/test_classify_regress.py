"""``:classify`` and ``:regress``: JSON examples become the tf.Examples TensorFlow itself would
build, and the server's results equal the model run in process (TF1 and TF2 exports)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from bench.serving.json_examples import parse_classify_regress_body
from bench.serving.model_config import ModelConfig
from bench.serving.server import EmbeddedServer, ServerOptions
from bench.serving.status import ServingError


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def tf_example(**features: object) -> bytes:
    """A tf.Example from TensorFlow's proto classes: floats, ints (int64_list) or bytes."""
    import tensorflow as tf

    def feature(values: list) -> tf.train.Feature:
        if not values:
            return tf.train.Feature()  # a feature with no kind (an empty JSON list)
        if all(isinstance(v, bytes) for v in values):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if all(isinstance(v, int) for v in values):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    return tf.train.Example(
        features=tf.train.Features(feature={k: feature(v if isinstance(v, list) else [v]) for k, v in features.items()})
    ).SerializeToString()


def parsed(serialized: bytes):
    import tensorflow as tf

    return tf.train.Example.FromString(serialized)


# -- JSON -> tf.Example ---------------------------------------------------------------------------


def test_json_features_become_the_example_tensorflow_builds() -> None:
    body = json.dumps(
        {
            "signature_name": "s",
            "context": {"c": 7},
            "examples": [
                {"x": 2.5, "n": [1, -2, True], "s": "text", "b": {"b64": "AAE="}, "f": [1.0, 2.0], "e": []},
                {"x": 1e300},
            ],
        }
    ).encode()
    request = parse_classify_regress_body(body)
    assert request.signature_name == "s"
    first, second = request.input.examples
    # Booleans are int64 values; b64 objects are bytes.
    assert parsed(first) == parsed(tf_example(x=2.5, n=[1, -2, 1], s=b"text", b=b"\x00\x01", f=[1.0, 2.0], e=[]))
    assert parsed(first).features.feature["e"].WhichOneof("kind") is None
    assert np.isinf(parsed(second).features.feature["x"].float_list.value[0])  # GetFloat() of 1e300
    assert request.input.context is not None
    assert parsed(request.input.context) == parsed(tf_example(c=7))
    merged = parsed(request.input.tensor()[1])  # context bytes + example bytes: one merged Example
    assert set(merged.features.feature) == {"c", "x"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", "JSON Value: {} When method is classify, key 'examples' is expected and was not found"),
        (b'{"examples": 1}', "JSON Value: {\n    \"examples\": 1\n} Expecting 'examples' value to be an list/array"),
        (b'{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
        (b'{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        (b'{"context": [], "examples": [{}]}', "Example must be JSON object but got JSON Array"),
        (b'{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
        (b'{"examples": [{"x": [[1]]}]}', "Feature: x has element with unexpected JSON type: Array"),
        (b'{"examples": [{"x": {"a": 1}}]}', "Feature: x has element with unexpected JSON type: Object"),
        (b'{"examples": [{"x": [1, 2.5]}]}', "Unexpected element type in feature: x expecting type: int64"),
        (b'{"examples": [{"x": [2.5, "a"]}]}', "Unexpected element type in feature: x expecting type: float"),
        (b'{"examples": [{"x": ["a", true]}]}', "Unexpected element type in feature: x expecting type: bytes"),
        (
            b'{"examples": [{"x": 9223372036854775808}]}',
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
        (b'{"examples": [{"x": {"b64": "!!"}}]}', "Unable to base64 decode"),
        (b'{"signature_name": 3, "examples": []}', None),
    ],
)
def test_classify_regress_body_errors(body: bytes, message: str | None) -> None:
    with pytest.raises(ServingError) as info:
        parse_classify_regress_body(body)
    assert info.value.code == "INVALID_ARGUMENT"
    if message is None:
        assert info.value.message.endswith("'signature_name' key must be a string value.")
    else:
        assert info.value.message == message


# -- results against the model run in process -----------------------------------------------------


@pytest.fixture(scope="module", params=["half_plus_two", "half_plus_two_tf2"])
def model(request, half_plus_two_models):
    import tensorflow as tf

    base = half_plus_two_models / request.param
    options = ServerOptions(models=(ModelConfig("default", base),), port=0)
    with EmbeddedServer(options=options) as server:
        yield server, tf.saved_model.load(str(base / "00000123"))


def in_process(module, signature: str, examples: list[bytes]) -> np.ndarray:
    import tensorflow as tf

    outputs = module.signatures[signature](inputs=tf.constant(examples))
    (value,) = outputs.values()
    return value.numpy()


def f32(values: list) -> np.ndarray:
    """JSON floats back to float32: the server writes each float32 in its shortest round-trip form."""
    return np.array(values, dtype=np.float32)


def test_regress_and_classify_equal_the_model_run_in_process(model) -> None:
    server, module = model
    xs = [float(np.float32(v)) for v in np.random.default_rng(5).normal(0, 10, 6)]
    examples = [tf_example(x=x) for x in xs]
    body = {"examples": [{"x": x} for x in xs]}
    for signature in ("regress_x_to_y", "regress_x_to_y2"):
        status, reply = post(server.url + "/v1/models/default:regress", {"signature_name": signature, **body})
        assert status == 200
        np.testing.assert_array_equal(f32(reply["results"]), in_process(module, signature, examples).reshape(-1))
    status, reply = post(server.url + "/v1/models/default:classify", {"signature_name": "classify_x_to_y", **body})
    assert status == 200
    assert [[label for label, _ in row] for row in reply["results"]] == [[""]] * len(xs)
    scores = f32([[score for _, score in row] for row in reply["results"]])
    np.testing.assert_array_equal(scores, in_process(module, "classify_x_to_y", examples))


def test_context_features_fill_in_what_an_example_leaves_out(model) -> None:
    server, module = model
    body = {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{"x": 2.0}, {}]}
    # What ExampleListWithContext means: each example merged over the context.
    expected = in_process(module, "regress_x_to_y", [tf_example(x=10.0) + tf_example(x=2.0), tf_example(x=10.0)])
    assert expected.reshape(-1).tolist() == [3.0, 7.0]
    assert post(server.url + "/v1/models/default:regress", body) == (200, {"results": [3.0, 7.0]})


def test_the_graph_s_own_errors_come_back(model) -> None:
    server, _ = model
    status, reply = post(
        server.url + "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{}]}
    )
    assert status == 400
    assert reply["error"].startswith(
        "Name: <unknown>, Feature: x (data type: float) is required but could not be found."
    )
    status, reply = post(
        server.url + "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}
    )
    assert status == 400
    assert "Data types don't match" in reply["error"]  # an integer is an int64_list feature


def test_signature_checks_before_the_run(model) -> None:
    server, _ = model
    url = server.url + "/v1/models/default"
    assert post(url + ":classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}) == (
        400,
        {"error": "No signature was found with the name: nope"},
    )
    status, reply = post(url + ":classify", {"examples": [{"x": 1.0}]})  # serving_default takes "x", not "inputs"
    assert status == 400
    assert reply["error"].startswith('No classification inputs found in SignatureDef: inputs {\n  key: "x"')
    status, reply = post(url + ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]})
    assert status == 200
    assert post(url + ":classify", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]})[1][
        "error"
    ].startswith('Expected classification signature outputs to contain at least one of "classes" or "scores".')


def test_method_name_check_flag(half_plus_two_models) -> None:
    """--enable_signature_method_name_check: a signature's method name must match the API."""
    base = half_plus_two_models / "half_plus_two"
    options = ServerOptions(models=(ModelConfig("default", base),), port=0, method_name_check=True)
    with EmbeddedServer(options=options) as server:
        url = server.url + "/v1/models/default"
        body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}
        assert post(url + ":classify", body) == (
            400,
            {
                "error": "Expected classification signature method_name to be tensorflow/serving/classify. "
                "Was: tensorflow/serving/regress"
            },
        )
        assert post(url + ":regress", body) == (200, {"results": [2.5]})
        assert post(url + ":predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
