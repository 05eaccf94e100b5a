"""TFServingGrpcClient against the real embedded server's gRPC front end: the REST client's answers, over gRPC."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.errors import ConfigError, PredictError, ServerError
from bench.payloads.encodings import get_encoding
from bench.payloads.images import SyntheticImages
from bench.target.client import TFServingClient
from bench.target.grpc_client import TFServingGrpcClient

BATCH = SyntheticImages(seed=11).batch(3)


@pytest.fixture(scope="module")
def server(model_base_path: Path) -> Iterator[Any]:
    from bench.serving.server import EmbeddedServer

    with EmbeddedServer(model_base_path=model_base_path, model_name="classifier", port=0, grpc_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def clients(server: Any) -> Iterator[tuple[TFServingClient, TFServingGrpcClient]]:
    with TFServingClient(server.url) as rest, TFServingGrpcClient(server.grpc_target) as grpc:
        yield rest, grpc


def test_status_metadata_and_specs_read_as_over_rest(clients: tuple[TFServingClient, TFServingGrpcClient]) -> None:
    rest, grpc = clients
    assert grpc.wait_until_available(10) == rest.wait_until_available(10) == 1
    assert grpc.available_version(grpc.status()) == 1
    assert grpc.status()["model_version_status"][0]["state"] == "AVAILABLE"
    assert set(grpc.signatures()) == set(rest.signatures()) == {"serving_default", "serving_bytes"}
    for signature in ("serving_default", "serving_bytes"):
        assert grpc.input_specs(signature) == rest.input_specs(signature)
        assert grpc.output_specs(signature) == rest.output_specs(signature)
    assert grpc.is_serving()
    assert grpc.describe()["host"] == f"grpc://{grpc.target}"


@pytest.mark.parametrize("name", ["grpc-tensor-content", "grpc-int-val", "grpc-bytes-png"])
def test_predictions_over_grpc_equal_those_over_rest(
    clients: tuple[TFServingClient, TFServingGrpcClient], name: str
) -> None:
    rest, grpc = clients
    encoding = get_encoding(name)
    over_grpc = grpc.predict(encoding.encode(BATCH), batch=len(BATCH), signature_name=encoding.signature_name)
    reference = "b64-png" if encoding.image_format else "row-orjson"
    over_rest = rest.predict(get_encoding(reference).encode(BATCH), batch=len(BATCH))
    expected = {
        "classes": np.array([row["classes"] for row in over_rest["predictions"]]),
        "probabilities": np.array([row["probabilities"] for row in over_rest["predictions"]]),
    }
    comparison = grpc.compare(over_grpc, expected)
    assert comparison.ok, comparison.mismatches


def test_failed_calls_carry_rest_status_and_the_grpc_code(server: Any) -> None:
    with TFServingGrpcClient(server.grpc_target, "nope") as unknown:
        with pytest.raises(PredictError) as caught:
            unknown.status()
    assert caught.value.status == 404
    assert caught.value.message == "NOT_FOUND: Could not find any versions of model nope"
    with TFServingGrpcClient(server.grpc_target) as client, pytest.raises(PredictError) as caught:
        client.predict(get_encoding("grpc-tensor-content").with_model("classifier", 7).encode(BATCH))
    assert caught.value.status == 404
    assert caught.value.message.startswith("NOT_FOUND: ")


def test_unreachable_target_and_bad_targets_are_one_line_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with TFServingGrpcClient(f"127.0.0.1:{port}", timeout_s=2) as client:
        with pytest.raises(ServerError, match=rf"cannot reach TF Serving's gRPC at 127.0.0.1:{port}: UNAVAILABLE"):
            client.status()
        assert not client.is_serving(timeout_s=1)
    for bad in ("http://127.0.0.1:8500", "127.0.0.1", "127.0.0.1:0", "host:port"):
        with pytest.raises(ConfigError, match="--grpc-target"):
            TFServingGrpcClient(bad)
