"""The TF Serving client against the real embedded server, a stopped server, and TF Serving error bodies."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.errors import ConfigError, PredictError, ServerError
from bench.payloads.encodings import ENCODINGS, get_encoding
from bench.payloads.images import SyntheticImages
from bench.payloads.specs import InputSpec, image_size
from bench.target.client import TFServingClient

BATCH = SyntheticImages(seed=11).batch(3)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_stopped_server_gives_a_clear_error() -> None:
    port = _closed_port()
    client = TFServingClient(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(ServerError, match=rf"cannot reach TF Serving at http://127.0.0.1:{port}/v1/models/classifier"):
        client.status()
    with pytest.raises(ServerError, match=r"cannot reach .*:predict: .*(refused|Errno)"):
        client.predict(b"{}")
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"not AVAILABLE after 0.5 s \(cannot reach"):
        client.wait_until_available(0.5)
    assert time.monotonic() - started < 5


def test_bad_client_arguments() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        TFServingClient("127.0.0.1:8501")
    with pytest.raises(ConfigError, match="timeout"):
        TFServingClient("http://127.0.0.1:8501", timeout_s=0)
    client = TFServingClient("http://127.0.0.1:8501/", "my model", version=3)
    assert client.predict_url == "http://127.0.0.1:8501/v1/models/my%20model/versions/3:predict"


def test_image_size_needs_an_image_batch() -> None:
    assert image_size(InputSpec("x", "uint8", (None, 96, 64, 3))) == (96, 64)
    with pytest.raises(ConfigError, match="not a batch of images"):
        image_size(InputSpec("image_bytes", "string", (None,)))


# --- against the real embedded server ---------------------------------------------------------


@pytest.fixture(scope="module")
def client(embedded_server: Any) -> Iterator[TFServingClient]:
    with TFServingClient(embedded_server.url, "classifier", timeout_s=30) as c:
        c.wait_until_available(timeout_s=60)
        yield c


def test_status_and_metadata(client: TFServingClient) -> None:
    status = client.status()
    assert status["model_version_status"][0]["version"] == "1"
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert client.input_spec() == InputSpec("examples", "uint8", (None, 128, 128, 3))
    assert client.input_spec("serving_bytes") == InputSpec("image_bytes", "string", (None,))
    assert image_size(client.input_spec()) == (128, 128)
    outputs = client.output_specs()
    assert outputs["probabilities"].shape == (None, 10)
    assert outputs["classes"].dtype == "int64"
    with pytest.raises(ConfigError, match=r"no signature 'nope' \(has: serving_bytes, serving_default\)"):
        client.input_spec("nope")


@pytest.mark.parametrize("name", [n for n, e in ENCODINGS.items() if e.protocol == "rest"])  # gRPC: test_grpc_client
def test_every_encoding_is_accepted_by_the_server(client: TFServingClient, name: str) -> None:
    encoding = get_encoding(name)
    body = encoding.encode(BATCH, client.input_spec(encoding.signature_name or "serving_default").name)
    response = client.predict(body, encoding.headers(), encoding.signature_name, batch=len(BATCH))
    if name == "columnar-orjson":  # the response format follows the request's
        assert len(response["outputs"]["classes"]) == len(BATCH)
    else:
        assert len(response["predictions"]) == len(BATCH)


@pytest.fixture(scope="module")
def in_process(model_base_path: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    model = tf.saved_model.load(str(model_base_path / "1"))
    outputs = model.signatures["serving_default"](examples=tf.constant(BATCH))
    return {name: value.numpy() for name, value in outputs.items()}


def test_predictions_match_in_process_model(client: TFServingClient, in_process: dict[str, np.ndarray]) -> None:
    for name in ("row-fast", "columnar-orjson", "b64-png"):
        encoding = get_encoding(name)
        response = client.predict(encoding.encode(BATCH), encoding.headers(), encoding.signature_name, batch=3)
        comparison = client.compare(response, in_process)
        assert comparison.ok, (name, comparison.mismatches)
        assert comparison.rows_checked == 3
    # a wrong expectation is caught, with the row and output named
    wrong = dict(in_process, probabilities=in_process["probabilities"] + 0.01)
    response = client.predict(get_encoding("row-orjson").encode(BATCH), batch=3)
    result = client.compare(response, wrong, sample=[1])
    assert not result.ok
    assert result.rows_checked == 1
    assert "row 1 'probabilities'" in result.mismatches[0]


def test_tf_serving_error_bodies_become_predict_errors(client: TFServingClient) -> None:
    body = get_encoding("row-orjson").with_signature("nope").encode(BATCH)
    with pytest.raises(PredictError, match='HTTP 400: Serving signature name: "nope" not found') as info:
        client.predict(body)
    assert info.value.status == 400
    assert info.value.message == 'Serving signature name: "nope" not found in signature def'
    with pytest.raises(PredictError, match="JSON Parse error") as info:
        client.predict(b'{"instances": [1, 2')
    assert info.value.status == 400
    other = TFServingClient(client.base_url, "nope", timeout_s=10)
    with pytest.raises(PredictError, match="Could not find any versions of model nope") as info:
        other.status()
    assert info.value.status == 404
    with pytest.raises(PredictError, match=r"Servable not found for request: Latest\(nope\)"):
        other.predict(get_encoding("row-orjson").encode(BATCH))


def test_response_checks(client: TFServingClient) -> None:
    body = get_encoding("row-orjson").encode(BATCH)
    with pytest.raises(ServerError, match="returned 3 predictions for a batch of 5"):
        client.predict(body, batch=5)
    response = client.predict(body)
    response["predictions"][0]["probabilities"] = [0.5] * 9
    with pytest.raises(ServerError, match=r"output 'probabilities' has shape \[9\], signature says \[10\]"):
        client.check_response(response, 3)


def test_a_server_that_stopped_gives_a_clear_error(model_base_path: Path) -> None:
    from bench.serving.server import EmbeddedServer

    with EmbeddedServer(model_base_path=model_base_path, model_name="classifier", port=0) as server:
        url = server.url
        client = TFServingClient(url, timeout_s=10)
        client.wait_until_available(timeout_s=60)
        assert client.predict(get_encoding("row-fast").encode(BATCH), batch=3)
    with pytest.raises(ServerError, match=rf"cannot reach TF Serving at {url}/v1/models/classifier:predict"):
        client.predict(get_encoding("row-fast").encode(BATCH))
