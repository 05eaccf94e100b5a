"""The cases of tensorflow/serving's integration suite (``tensorflow_model_server_test.py``) that a
Python server can serve, in our words, on real servers on loopback with models our exporter writes.

Upstream's test names are in each docstring. Cases that go over gRPC upstream are exercised
here through REST or through the protocol-free predict core that a gRPC front end calls. Left
out: TF Lite models, the profiler service, tf_text ops, and the gRPC transport itself (the
Unix-socket predict included)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bench.api_names import PROMETHEUS_PATH
from bench.serving.example_inference import Class, InferenceTask
from bench.serving.example_proto import ExampleInput
from bench.serving.metrics import Metrics
from bench.serving.model_config import ModelConfig
from bench.serving.server import EmbeddedServer, ServerOptions
from bench.serving.status import ServingError

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def rest(server_url: str, path: str, body: object = None) -> tuple[int, object]:
    """What the suite's ``CallREST`` sends: JSON via urllib; (status, parsed reply)."""
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(server_url + path, data=data), timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def example(**features: float) -> bytes:
    """A serialized tf.Example built by TensorFlow's own proto, as a gRPC client sends it."""
    import tensorflow as tf

    return tf.train.Example(
        features=tf.train.Features(
            feature={k: tf.train.Feature(float_list=tf.train.FloatList(value=[v])) for k, v in features.items()}
        )
    ).SerializeToString()


def serve(base: Path, **overrides: object) -> EmbeddedServer:
    options = ServerOptions(models=(ModelConfig("default", base),), port=0, **overrides)  # type: ignore[arg-type]
    return EmbeddedServer(options=options)


@pytest.fixture(scope="module")
def tf1_server(half_plus_two_models):
    with serve(half_plus_two_models / "half_plus_two", prometheus_path=PROMETHEUS_PATH) as server:
        yield server


@pytest.fixture(scope="module")
def tf2_server(half_plus_two_models):
    with serve(half_plus_two_models / "half_plus_two_tf2") as server:
        yield server


@pytest.fixture(params=["tf1", "tf2"])
def either_server(request, tf1_server, tf2_server):
    return tf1_server if request.param == "tf1" else tf2_server


# -- status and metadata ------------------------------------------------------------------------


def test_status_reports_the_zero_padded_directory_as_version_123(tf1_server) -> None:
    """testGetStatusREST, testGetModelStatus: ``00000123/`` is loaded and reported as 123."""
    assert rest(tf1_server.url, "/v1/models/default") == (
        200,
        {
            "model_version_status": [
                {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )
    assert rest(tf1_server.url, "/v1/models/default/versions/123")[0] == 200


COLUMN = {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}
ANY_SHAPE = {"dim": [], "unknown_rank": True}


def _tensor(name: str, dtype: str, shape: dict) -> dict:
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature(method: str, inputs: dict, outputs: dict) -> dict:
    return {"inputs": inputs, "outputs": outputs, "method_name": f"tensorflow/serving/{method}", "defaults": {}}


def test_metadata_is_half_plus_two_s_whole_signature_def_map(tf1_server) -> None:
    """testGetModelMetadataREST (upstream compares with half_plus_two_model_metadata.json), testGetModelMetadata."""
    examples = {"inputs": _tensor("tf_example:0", "DT_STRING", ANY_SHAPE)}
    expected = {
        "model_spec": {"name": "default", "signature_name": "", "version": "123"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": _signature(
                        "predict", {"x": _tensor("x:0", "DT_FLOAT", COLUMN)}, {"y": _tensor("y:0", "DT_FLOAT", COLUMN)}
                    ),
                    "classify_x_to_y": _signature("classify", examples, {"scores": _tensor("y:0", "DT_FLOAT", COLUMN)}),
                    "regress_x_to_y": _signature("regress", examples, {"outputs": _tensor("y:0", "DT_FLOAT", COLUMN)}),
                    "regress_x_to_y2": _signature(
                        "regress", examples, {"outputs": _tensor("y2:0", "DT_FLOAT", COLUMN)}
                    ),
                    "regress_x2_to_y3": _signature(
                        "regress",
                        {"inputs": _tensor("x2:0", "DT_FLOAT", COLUMN)},
                        {"outputs": _tensor("y3:0", "DT_FLOAT", COLUMN)},
                    ),
                }
            }
        },
    }
    assert rest(tf1_server.url, "/v1/models/default/metadata") == (200, expected)


# -- predict ------------------------------------------------------------------------------------


def test_quick_start_predict_row_and_columnar(either_server) -> None:
    """testPredictREST, testPredictColumnarREST: x is declared [-1,1] (TF2: [1]); the graph takes [3]."""
    url = either_server.url
    assert rest(url, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]}) == (
        200,
        {"predictions": [3.0, 3.5, 4.0]},
    )
    assert rest(url, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]}) == (200, {"outputs": [3.0, 3.5, 4.0]})


def test_one_value_predict_with_and_without_an_output_filter(either_server) -> None:
    """testPredictSavedModel (VerifyPredictRequest): x=[2.0], output_filter ["y"] or none, and [[2.0]]."""
    core = either_server.core
    loaded = core.lookup("default", None, None)
    x = np.array([2.0], np.float32)
    assert core.run(loaded, "serving_default", {"x": x}, ("y",))["y"].tolist() == [3.0]
    assert core.run(loaded, "serving_default", {"x": x})["y"].tolist() == [3.0]
    assert rest(either_server.url, "/v1/models/default:predict", {"inputs": {"x": [2.0]}}) == (200, {"outputs": [3.0]})
    with pytest.raises(ServingError, match="output tensor alias not found in signature: z Outputs expected"):
        core.run(loaded, "serving_default", {"x": x}, ("z",))


def test_a_tf2_signature_default_fills_a_missing_input(tf2_server) -> None:
    """SignatureDef.defaults (TF2 exports of functions with default arguments): x defaults to [0]."""
    core = tf2_server.core
    assert core.run(core.lookup("default", None, None), "", {})["y"].tolist() == [2.0]


# -- classify, regress, multi-inference ---------------------------------------------------------


def test_classify_and_regress_over_rest(either_server) -> None:
    """testClassifyREST, testRegressREST (and the TF2 model, which upstream tests over gRPC)."""
    url = either_server.url
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert rest(url, "/v1/models/default:classify", body) == (200, {"results": [[["", 3.0]]]})
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert rest(url, "/v1/models/default:regress", body) == (200, {"results": [3.0]})


def test_classify_and_regress_through_the_core(either_server) -> None:
    """testClassify, testClassifyTf2, testRegress, testRegressTf2: what a gRPC front end calls."""
    core = either_server.core
    loaded = core.lookup("default", None, None)
    examples = ExampleInput((example(x=2.0),))
    assert core.classify(loaded, "classify_x_to_y", examples) == ((Class(b"", 3.0),),)
    assert core.regress(loaded, "regress_x_to_y", examples) == (3.0,)
    assert core.regress(loaded, "regress_x_to_y2", examples) == (4.0,)


def test_multi_inference_regress_and_classify_in_one_run(either_server) -> None:
    """testMultiInference, testMultiInferenceTf2: results in task order."""
    core = either_server.core
    loaded = core.lookup("default", None, None)
    tasks = [InferenceTask("default", "regress_x_to_y", REGRESS), InferenceTask("default", "classify_x_to_y", CLASSIFY)]
    assert core.multi_inference(loaded, tasks, ExampleInput((example(x=2.0),))) == ((3.0,), ((Class(b"", 3.0),),))


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        (
            [InferenceTask("", "regress_x_to_y", REGRESS)],
            "INVALID_ARGUMENT",
            "Found ModelSpec with an empty model name.",
        ),
        (
            [InferenceTask("default", "regress_x_to_y", REGRESS), InferenceTask("other", "classify_x_to_y", CLASSIFY)],
            "INVALID_ARGUMENT",
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            [InferenceTask("default", "regress_x_to_y", REGRESS), InferenceTask("default", "regress_x_to_y", REGRESS)],
            "INVALID_ARGUMENT",
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            [InferenceTask("default", "nope", REGRESS)],
            "INVALID_ARGUMENT",
            "Requested signature not found in model graph: nope",
        ),
        (
            [InferenceTask("default", "serving_default", "tensorflow/serving/predict")],
            "UNIMPLEMENTED",
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
    ],
)
def test_multi_inference_refuses_what_upstream_refuses(tf1_server, tasks, code, message) -> None:
    core = tf1_server.core
    with pytest.raises(ServingError) as info:
        core.multi_inference(core.lookup("default", None, None), tasks, ExampleInput((example(x=2.0),)))
    assert (info.value.code, info.value.message) == (code, message)


# -- model config files -------------------------------------------------------------------------


def _config(*models: tuple[str, Path]) -> str:
    entries = "".join(
        f'  config: {{\n    name: "{name}",\n    base_path: "{path}",\n    model_platform: "tensorflow"\n  }},\n'
        for name, path in models
    )
    return "model_config_list: {\n" + entries.rstrip(",\n") + "\n}\n"


def test_good_model_config_serves_both_models(half_plus_two_models, tmp_path) -> None:
    """testGoodModelConfig: half_plus_two and half_plus_three from one config file."""
    config = tmp_path / "good_model_config.conf"
    config.write_text(
        _config(
            ("half_plus_two", half_plus_two_models / "half_plus_two"),
            ("half_plus_three", half_plus_two_models / "half_plus_three"),
        )
    )
    with EmbeddedServer(model_config_file=config) as server:
        for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
            assert rest(server.url, f"/v1/models/{name}:predict", {"instances": [2.0]}) == (
                200,
                {"predictions": [expected]},
            )


def _wait_for(check, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("poll_s", [1, 0])
def test_model_config_reload_follows_the_poll_period(half_plus_two_models, tmp_path, poll_s) -> None:
    """testModelConfigReload (poll 1 s: the new model is served) and
    testModelConfigReloadWithZeroPollPeriod (0: the first config stays)."""
    config = tmp_path / "model_config.txt"
    config.write_text(_config(("half_plus_two", half_plus_two_models / "half_plus_two")))
    with EmbeddedServer(model_config_file=config, config_poll_wait_s=float(poll_s)) as server:
        assert rest(server.url, "/v1/models/half_plus_two:predict", {"instances": [2.0]})[1] == {"predictions": [3.0]}
        config.write_text(_config(("half_plus_three", half_plus_two_models / "half_plus_three")))

        def three_served() -> bool:
            return rest(server.url, "/v1/models/half_plus_three:predict", {"instances": [2.0]})[0] == 200

        if poll_s:
            assert _wait_for(three_served)
            assert rest(server.url, "/v1/models/half_plus_three:predict", {"instances": [2.0]})[1] == {
                "predictions": [4.0]
            }
        else:
            time.sleep(poll_s + 1.5)
            assert not three_served()
            assert rest(server.url, "/v1/models/half_plus_two:predict", {"instances": [2.0]})[1] == {
                "predictions": [3.0]
            }


def test_prometheus_endpoint_has_metric_types(tf1_server) -> None:
    """testPrometheusEndpoint (upstream asks right after start-up: every family has its # TYPE line)."""
    assert "# TYPE :tensorflow:serving:request_count counter\n" in Metrics().render()
    with urllib.request.urlopen(tf1_server.url + PROMETHEUS_PATH, timeout=30) as reply:
        assert "# TYPE :tensorflow:serving:runtime_latency histogram" in reply.read().decode()


# -- the tensorflow_model_server console script -------------------------------------------------


def _model_server() -> str:
    script = Path(sys.executable).parent / "tensorflow_model_server"
    if not script.exists():
        pytest.skip("the tensorflow_model_server console script is not installed (pip install -e .)")
    return str(script)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_console_script_help_version_and_unknown_flags() -> None:
    script = _model_server()
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: tensorflow_model_server")
    assert "--rest_api_port PORT" in done.stdout
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.split(":")[0]) == (0, "TensorFlow ModelServer")
    done = subprocess.run([script, "--no_such_flag=1"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (
        1,
        "tensorflow_model_server (tfsbench): unknown command line flag 'no_such_flag'",
    )


def test_bad_model_config_fails_with_the_text_format_parse_error(tmp_path) -> None:
    """testBadModelConfig: the suite reads this text from the server's stderr."""
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("improperly formatted file")
    proc = subprocess.run(
        [_model_server(), f"--port={_free_port()}", f"--rest_api_port={_free_port()}", f"--model_config_file={bad}"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert b"Error parsing text-format tensorflow.serving.ModelServerConfig" in proc.stderr


def test_console_script_takes_the_suite_s_command_line(half_plus_two_models, tmp_path) -> None:
    """testGoodGrpcChannelArgs, and every RunServer: the suite's flags are accepted and applied,
    REST answers on loopback, SIGTERM stops the server with 0."""
    port, rest_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            _model_server(),
            f"--port={port}",
            f"--rest_api_port={rest_port}",
            "--rest_api_timeout_in_ms=5000",
            f"--grpc_socket_path={tmp_path / 'tf-serving.sock'}",
            "--model_name=default",
            f"--model_base_path={half_plus_two_models / 'half_plus_two'}",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,grpc.so_reuseaddr=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        listening = proc.stdout.readline().decode()  # type: ignore[union-attr]
        assert (
            listening.strip() == f"tfsbench serve: listening on gRPC 127.0.0.1:{port} and http://127.0.0.1:{rest_port}"
        )
        url = f"http://127.0.0.1:{rest_port}"
        assert rest(url, "/v1/models/default:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        for target in (f"127.0.0.1:{port}", f"unix:{tmp_path / 'tf-serving.sock'}"):
            with grpc.insecure_channel(target) as channel:
                status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                    get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "default"}), timeout=60
                )
            assert [row.state for row in status.model_version_status] == [30]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert "not implemented" not in stderr  # gRPC, its socket path and channel arguments are served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


# -- SavedModels written by tf.saved_model.save and Keras ---------------------------------------


def _save(tmp_path: Path, name: str, write) -> Path:
    base = tmp_path / name
    write(str(base / "00000123"))
    return base


def test_tf_saved_model_save_with_an_unknown_rank_input(tmp_path) -> None:
    """test_tf_saved_model_save: y = v1 * v2 * x over TensorSpec(None); x=[2.0] gives 12."""
    import tensorflow as tf

    def write(path: str) -> None:
        root = tf.train.Checkpoint()
        root.v1, root.v2 = tf.Variable(3.0), tf.Variable(2.0)
        root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
        tf.saved_model.save(root, path, root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))

    with serve(_save(tmp_path, "tf_saved_model_save", write)) as server:
        assert rest(server.url, "/v1/models/default:predict", {"inputs": {"x": [2.0]}}) == (200, {"outputs": [12.0]})
        assert rest(server.url, "/v1/models/default:predict", {"inputs": 2.0}) == (200, {"outputs": 12.0})


def test_tf_saved_model_save_with_two_signatures(tmp_path) -> None:
    """test_tf_saved_model_save_multiple_signatures: scalar outputs 1.0 (default) and 2.0."""
    import tensorflow as tf

    def write(path: str) -> None:
        root = tf.train.Checkpoint()
        root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
        root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
        tf.saved_model.save(root, path, signatures={"serving_default": root.f, "custom_signature_key": root.g})

    with serve(_save(tmp_path, "two_signatures", write)) as server:
        body = {"signature_name": "custom_signature_key", "inputs": {"x": [2.0]}}
        assert rest(server.url, "/v1/models/default:predict", body) == (200, {"outputs": 2.0})
        assert rest(server.url, "/v1/models/default:predict", {"inputs": {"x": [2.0]}}) == (200, {"outputs": 1.0})
        # A scalar output has no batch dimension to split into row-format predictions.
        status, reply = rest(server.url, "/v1/models/default:predict", {"instances": [2.0]})
        assert (status, reply) == (400, {"error": "Tensor name: y has no shape information "})


def test_keras_sequential_saved_model(tmp_path) -> None:
    """test_sequential_keras_saved_model_save: an identity Lambda; Keras 3 names the signature's
    tensors ``inputs``/``output_0`` where Keras 2 used the layer names ``x``/``y``."""
    import tensorflow as tf

    def write(path: str) -> None:
        model = tf.keras.models.Sequential()
        model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
        model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
        tf.saved_model.save(model, path)

    with serve(_save(tmp_path, "keras_sequential", write)) as server:
        loaded = server.core.lookup("default", None, None)
        (alias,) = loaded.signatures["serving_default"].inputs
        body = {"inputs": {alias: [[2.0]]}}
        assert rest(server.url, "/v1/models/default:predict", body) == (200, {"outputs": [[2.0]]})
