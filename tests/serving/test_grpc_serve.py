"""``tfsbench serve``'s gRPC flags: they reach the front end (also through the stand-in's
tensorflow_model_server translation), a busy port is a one-line error, and stopping the server
stops gRPC with REST."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cli import build_parser
from bench.errors import ConfigError
from bench.serving import flags
from bench.serving.grpc_api import parse_channel_arguments
from bench.serving.server import EmbeddedServer, options_from_args

grpc = pytest.importorskip("grpc")
tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402


def test_serve_flags_configure_the_grpc_front_end(model_base_path) -> None:
    # The process itself (start-up line, SIGTERM, a UNIX socket) is run in
    # test_upstream_suite_cases.py::test_console_script_takes_the_suite_s_command_line.
    args = build_parser().parse_args(
        [
            "serve", "--port=0", "--rest_api_port=0", "--grpc_max_threads=2",
            "--enable_serialization_as_tensor_content=true", "--model_name=classifier",
            f"--model_base_path={model_base_path}", "--grpc_channel_arguments=grpc.max_connection_age_ms=60000",
        ]
    )  # fmt: skip
    options = options_from_args(args)
    assert (options.grpc_port, options.grpc_max_threads, options.tensor_content_outputs) == (0, 2, True)
    assert options.grpc_channel_arguments == (("grpc.max_connection_age_ms", 60000),)
    with EmbeddedServer(options=options) as server, grpc.insecure_channel(server.grpc_target) as channel:
        assert server.grpc_target == f"127.0.0.1:{server.grpc_port}"
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "classifier"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 128, 128, 3), np.uint8)))
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        assert reply.outputs["probabilities"].tensor_content  # --enable_serialization_as_tensor_content
        assert not reply.outputs["probabilities"].float_val
    with pytest.raises(grpc.RpcError) as caught:  # stopped with REST
        with grpc.insecure_channel(server.grpc_target) as channel:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


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

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedServer(model_base_path=model_base_path, model_name="classifier", port=0, grpc_port=port)
        with pytest.raises(ConfigError, match=rf"^cannot listen on 127\.0\.0\.1:{port} \(gRPC, --port\)"):
            server.start()
        server.store.stop()
        server.core.close()
