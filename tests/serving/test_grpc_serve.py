"""``tfsbench serve`` with gRPC as a process: the start-up line names both front ends, the gRPC
flags reach the server (also through the stand-in's tensorflow_model_server translation), and
SIGTERM stops gRPC with REST and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import IO, cast

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.serving import flags
from bench.serving.grpc_api import parse_channel_arguments
from tests.helpers.paths import REPO

grpc = pytest.importorskip("grpc")
tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

PREFIX = "tfsbench serve: listening on gRPC "


def test_serve_prints_both_urls_serves_grpc_and_stops_on_sigterm(model_base_path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "bench", "serve", "--port=0", "--rest_api_port=0", "--grpc_max_threads=2",
            "--enable_serialization_as_tensor_content=true", "--model_name=classifier",
            f"--model_base_path={model_base_path}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    try:
        line = cast(IO[str], proc.stdout).readline().strip()  # stdout=PIPE: never None
        assert line.startswith(PREFIX), line
        target, _, url = line.removeprefix(PREFIX).partition(" and ")
        assert target.startswith("127.0.0.1:")
        assert url.startswith("http://127.0.0.1:")
        assert int(line.rsplit(":", 1)[1]) == int(url.rsplit(":", 1)[1])  # what REST-only parsers read
        with grpc.insecure_channel(target) as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "classifier"
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 128, 128, 3), np.uint8)))
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
            assert reply.outputs["probabilities"].tensor_content  # --enable_serialization_as_tensor_content
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            with pytest.raises(grpc.RpcError) as caught:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
            assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_tensorflow_model_server_grpc_flags_pass_through_to_serve() -> None:
    argv = ["--port=8500", "--grpc_max_threads=3", "--enable_serialization_as_tensor_content=true"]
    result = flags.translate(argv)
    assert result.serve_args == ("--port=8500", "--grpc_max_threads=3", "--enable_serialization_as_tensor_content")
    assert result.ignored == ()


def test_channel_arguments_parse_as_upstream() -> None:
    text = "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,big=4294967296,,k=a=b"
    assert parse_channel_arguments(text) == (
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.lb_policy_name", "grpclb"),
        ("big", "4294967296"),
        ("k", "a"),
    )
    with pytest.raises(ConfigError, match="'novalue' is not key=value"):
        parse_channel_arguments("a=1,novalue")


def test_a_busy_grpc_port_is_a_one_line_config_error(model_base_path) -> None:
    import socket

    from bench.serving.server import EmbeddedServer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedServer(model_base_path=model_base_path, model_name="classifier", port=0, grpc_port=port)
        with pytest.raises(ConfigError, match=rf"^cannot listen on 127\.0\.0\.1:{port} \(gRPC, --port\)"):
            server.start()
        server.store.stop()
        server.core.close()
