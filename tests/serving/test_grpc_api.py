"""The embedded server's gRPC API over a real channel, with the official ``tensorflow-serving-api``
stubs: every error row of ``shared/docs/tf-serving-grpc-api.md`` §6 (code and text), metadata and
status, predictions equal to REST's and to the SavedModel run in process, REST and gRPC requests
merged into one batch, HandleReloadConfigRequest, metrics labelled ``entrypoint="GRPC"``."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest
import requests

from bench.serving.batching import BatchingParameters
from bench.serving.model_config import ModelConfig
from bench.serving.server import EmbeddedServer, ServerOptions

tf = pytest.importorskip("tensorflow")
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

M = "classifier"
PREDICT_PATH = f"/v1/models/{M}:predict"


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def server(model_base_path: Path):
    with EmbeddedServer(model_base_path=model_base_path, model_name=M, port=0, grpc_port=0) as served:
        yield served


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as chan:
        yield chan


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def request_for(batch: np.ndarray | None = None, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = M
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    if batch is not None:
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(batch))
    return request


def rpc_error(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), caught.value.details()


INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _predict_cases() -> list[tuple[str, object, grpc.StatusCode, str]]:
    one = images(1)
    no_spec = predict_pb2.PredictRequest()
    no_spec.inputs["examples"].CopyFrom(tf.make_tensor_proto(one))
    empty_name = request_for(one)
    empty_name.model_spec.name = ""
    unknown = request_for(one)
    unknown.model_spec.name = "nosuchmodel"
    extra = request_for(one)
    extra.inputs["extra"].CopyFrom(tf.make_tensor_proto(one))
    wrong_dtype = request_for(one.astype(np.float32))
    short = request_for()
    short.inputs["examples"].CopyFrom(tf.make_tensor_proto(one))
    short.inputs["examples"].tensor_content = b"\0" * 10
    no_dtype = request_for(one)
    no_dtype.inputs["examples"].dtype = types_pb2.DT_INVALID
    negative = request_for(one)
    negative.inputs["examples"].tensor_shape.dim[0].size = -1
    unknown_filter = request_for(one)
    unknown_filter.output_filter.append("nope")
    duplicate = request_for(one)
    duplicate.output_filter.extend(["classes", "classes"])
    size = "input size does not match signature: "
    return [
        ("no model_spec", no_spec, INVALID, "Missing ModelSpec"),
        ("empty name", empty_name, INVALID, "ModelSpec has no name specified."),
        ("unknown model", unknown, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nosuchmodel)"),
        (
            "unknown version",
            request_for(one, version=99),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(classifier, 99)",
        ),
        (
            "unknown label",
            request_for(one, version_label="nosuchlabel"),
            INVALID,
            "Unrecognized servable version label: nosuchlabel",
        ),
        (
            "unknown signature",
            request_for(one, signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            "no inputs",
            request_for(),
            INVALID,
            size + "0!=1 len({}) != len({examples}). Sent extra: {}. Missing but required: {examples}.",
        ),
        (
            "extra input",
            extra,
            INVALID,
            size + "2!=1 len({examples,extra}) != len({examples}). Sent extra: {extra}. Missing but required: {}.",
        ),
        ("wrong dtype", wrong_dtype, INVALID, "Expects arg[0] to be uint8 but float is provided"),
        ("content length", short, INVALID, "tensor parsing error: examples"),
        ("dtype unset", no_dtype, INVALID, "tensor parsing error: examples"),
        ("negative dim", negative, INVALID, "tensor parsing error: examples"),
        (
            "unknown output_filter",
            unknown_filter,
            INVALID,
            "output tensor alias not found in signature: nope Outputs expected to be in the set "
            "{classes,probabilities}.",
        ),
        ("duplicate output_filter", duplicate, INVALID, "duplicate output tensor alias: classes"),
    ]


PREDICT_CASES = _predict_cases()


@pytest.mark.parametrize(("case", "request_", "code", "details"), PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_errors_match_the_reference(predict_stub, case, request_, code, details) -> None:
    assert rpc_error(predict_stub.Predict, request_) == (code, details)


def test_wrong_input_name_names_the_feed_and_the_request_inputs(predict_stub) -> None:
    request = request_for()
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images(1)))
    code, details = rpc_error(predict_stub.Predict, request)
    assert code == INVALID
    assert details.startswith("Signature input alias: examples(feed name: ")
    assert details.endswith(
        ") not found in request and no default value provided. Inputs expected to be in the request {images}, "
        "or default input alias set: "
    )


def test_wrong_shapes_are_the_graph_s_business(predict_stub) -> None:
    # Not checked against the signature: this global-pooling model serves 2x2 images; a rank-3
    # batch reaches a convolution and fails there.
    assert predict_stub.Predict(request_for(np.zeros((1, 2, 2, 3), np.uint8)), timeout=60).outputs
    code, _ = rpc_error(predict_stub.Predict, request_for(np.zeros((1, 128, 128), np.uint8)))
    assert code == INVALID


def test_long_messages_are_cut_at_1024_characters(predict_stub) -> None:
    request = request_for(images(1))
    request.model_spec.name = "m" * 2000
    code, details = rpc_error(predict_stub.Predict, request)
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == ("Servable not found for request: Latest(" + "m" * 2000)[:1024] + "...TRUNCATED"


def test_metadata_errors_and_missing_spec_elsewhere(predict_stub, model_stub) -> None:
    def metadata(fields, name=M):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
        if name is not None:
            request.model_spec.name = name
        return request

    no_field = "GetModelMetadataRequest must specify at least one metadata_field"
    assert rpc_error(predict_stub.GetModelMetadata, metadata(["signature_def"], None)) == (INVALID, "Missing ModelSpec")
    assert rpc_error(predict_stub.GetModelMetadata, metadata([], "nosuchmodel")) == (INVALID, no_field)
    assert rpc_error(predict_stub.GetModelMetadata, metadata(["foo"])) == (
        INVALID,
        "Metadata field foo is not supported",
    )
    assert rpc_error(predict_stub.GetModelMetadata, metadata(["signature_def"], "nosuchmodel")) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nosuchmodel)",
    )
    status = get_model_status_pb2.GetModelStatusRequest
    assert rpc_error(model_stub.GetModelStatus, status()) == (INVALID, "Missing ModelSpec")
    assert rpc_error(model_stub.GetModelStatus, status(model_spec={"name": "nosuchmodel"})) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nosuchmodel",
    )
    assert rpc_error(model_stub.GetModelStatus, status(model_spec={"name": M, "version": {"value": 99}})) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 99 of model classifier",
    )
    classify = classification_pb2.ClassificationRequest()
    assert rpc_error(predict_stub.Classify, classify) == (INVALID, "Missing ModelSpec")


def test_classify_and_regress_on_a_predict_signature(server, predict_stub, monkeypatch) -> None:
    example = tf.train.Example()
    classify = classification_pb2.ClassificationRequest(model_spec={"name": M})
    classify.input.example_list.examples.append(example)
    code, details = rpc_error(predict_stub.Classify, classify)
    assert (code, details.split(": ", 1)[0]) == (INVALID, "No classification inputs found in SignatureDef")
    regress = regression_pb2.RegressionRequest(model_spec={"name": M})
    regress.input.example_list.examples.append(example)
    assert rpc_error(predict_stub.Regress, regress) == (INVALID, "Expected one output Tensor.")
    monkeypatch.setattr(server.core, "method_name_check", True)  # --enable_signature_method_name_check
    assert rpc_error(predict_stub.Classify, classify) == (
        INVALID,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict",
    )


def test_reload_without_model_config_list_is_refused(model_stub) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.custom_model_config.Pack(predict_pb2.PredictRequest())
    assert rpc_error(model_stub.HandleReloadConfigRequest, request) == (
        INVALID,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported",
    )


def test_metadata_and_status(predict_stub, model_stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": M}, metadata_field=["signature_def"])
    reply = predict_stub.GetModelMetadata(request, timeout=60)
    assert (reply.model_spec.name, reply.model_spec.version.value, reply.model_spec.signature_name) == (M, 1, "")
    packed = reply.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert "__saved_model_init_op" in signatures.signature_def
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["examples"].dtype == types_pb2.DT_UINT8
    assert [d.size for d in default.inputs["examples"].tensor_shape.dim] == [-1, 128, 128, 3]
    assert sorted(default.outputs) == ["classes", "probabilities"]
    status = model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": M}), timeout=60)
    [row] = status.model_version_status
    assert (row.version, row.state, row.status.error_code, row.status.error_message) == (1, 30, 0, "")


def test_predictions_equal_rest_and_the_model_in_process(server, predict_stub, model_base_path) -> None:
    batch = images(3, seed=4)
    reply = predict_stub.Predict(request_for(batch), timeout=60)
    assert (reply.model_spec.name, reply.model_spec.version.value, reply.model_spec.signature_name) == (
        M,
        1,
        "serving_default",
    )
    probabilities = reply.outputs["probabilities"]
    assert len(probabilities.float_val) == 30
    assert not probabilities.tensor_content
    got = {alias: tf.make_ndarray(value) for alias, value in reply.outputs.items()}
    rest = requests.post(server.url + PREDICT_PATH, data=orjson.dumps({"instances": batch.tolist()}), timeout=60)
    assert rest.status_code == 200, rest.text
    predictions = rest.json()["predictions"]
    # REST prints float32 with 9 significant digits, which round-trips every float32 exactly.
    np.testing.assert_array_equal(got["probabilities"], np.array([p["probabilities"] for p in predictions], np.float32))
    assert got["classes"].tolist() == [p["classes"] for p in predictions]
    expected = tf.saved_model.load(str(model_base_path / "1")).signatures["serving_default"](
        examples=tf.constant(batch)
    )
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(), rtol=1e-5, atol=1e-6)
    assert got["classes"].tolist() == expected["classes"].numpy().tolist()


def test_typed_int_val_request_broadcasts_like_tensor_content(predict_stub) -> None:
    typed = request_for()
    examples = typed.inputs["examples"]
    examples.dtype = types_pb2.DT_UINT8
    for size in (2, 128, 128, 3):
        examples.tensor_shape.dim.add().size = size
    examples.int_val.append(7 + 256)  # narrowed unchecked to 7, then broadcast
    by_value = predict_stub.Predict(typed, timeout=60)
    by_content = predict_stub.Predict(request_for(np.full((2, 128, 128, 3), 7, np.uint8)), timeout=60)
    assert by_value.outputs["probabilities"] == by_content.outputs["probabilities"]


def test_a_request_over_grpc_s_default_4_mib_is_served(predict_stub) -> None:
    batch = images(110, seed=2)  # 5.4 MB of tensor_content
    request = request_for(batch)
    request.output_filter.append("classes")
    assert request.ByteSize() > 4 * 1024 * 1024
    reply = predict_stub.Predict(request, timeout=120)
    assert list(reply.outputs) == ["classes"]
    assert tf.make_ndarray(reply.outputs["classes"]).shape == (110,)


def test_metrics_count_grpc_calls_with_entrypoint_grpc(server, predict_stub) -> None:
    predict_stub.Predict(request_for(images(1)), timeout=60)
    text = server.metrics.render()
    assert 'request_latency_count{API="Predict",entrypoint="GRPC",model_name="classifier"}' in text
    assert ':tensorflow:serving:request_count{model_name="classifier",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nosuchmodel",status="NOT_FOUND"}' in text


# -- batching shared with REST; tensor_content outputs; reload ---------------------------------


def test_batching_merges_a_grpc_and_a_rest_request(model_base_path: Path) -> None:
    # A batch of 2 runs only once full (the timeout is far away), so one model run holding both
    # requests proves they were merged, whatever the machine's speed.
    options = ServerOptions(
        models=(ModelConfig(M, model_base_path),),
        port=0,
        grpc_port=0,
        batching=BatchingParameters(max_batch_size=2, batch_timeout_micros=60_000_000, num_batch_threads=1),
        tensor_content_outputs=True,  # --enable_serialization_as_tensor_content
    )
    batch = images(2, seed=9)
    answers: dict[str, object] = {}
    with EmbeddedServer(options=options) as served, grpc.insecure_channel(served.grpc_target) as chan:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)

        def by_grpc() -> None:
            answers["grpc"] = stub.Predict(request_for(batch[:1]), timeout=120)

        def by_rest() -> None:
            body = orjson.dumps({"instances": batch[1:].tolist()})
            answers["rest"] = requests.post(served.url + PREDICT_PATH, data=body, timeout=120).json()

        threads = [threading.Thread(target=by_grpc), threading.Thread(target=by_rest)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(130)
        text = served.metrics.render()
        alone = stub.Predict(request_for(batch), timeout=120)  # a full batch of its own: runs at once
    assert ":tensorflow:serving:batching_session:processed_batch_size_count 1" in text.replace(".0\n", "\n")
    assert 'request_latency_count{API="Predict",entrypoint="GRPC",model_name="classifier"} 1' in text
    grpc_reply = answers["grpc"]
    probabilities = grpc_reply.outputs["probabilities"]  # type: ignore[attr-defined]
    assert probabilities.tensor_content
    assert not probabilities.float_val
    merged = np.concatenate(
        [tf.make_ndarray(probabilities), np.array([answers["rest"]["predictions"][0]["probabilities"]], np.float32)]  # type: ignore[index]
    )
    np.testing.assert_array_equal(merged, tf.make_ndarray(alone.outputs["probabilities"]))


def test_reload_config_applies_a_model_config_list(model_base_path: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    shutil.copytree(model_base_path / "1", second / "5")
    with EmbeddedServer(model_base_path=model_base_path, model_name=M, port=0, grpc_port=0) as served:
        with grpc.insecure_channel(served.grpc_target) as chan:
            models = model_service_pb2_grpc.ModelServiceStub(chan)
            predict = prediction_service_pb2_grpc.PredictionServiceStub(chan)
            request = model_management_pb2.ReloadConfigRequest()
            for name, base in ((M, model_base_path), ("second", second)):
                entry = request.config.model_config_list.config.add()
                entry.name, entry.base_path, entry.model_platform = name, str(base), "tensorflow"
            request.metric_names.append(":tensorflow:serving:model_count")
            reply = models.HandleReloadConfigRequest(request, timeout=120)
            assert (reply.status.error_code, reply.status.error_message) == (0, "")
            assert [m.name for m in reply.metric] == [":tensorflow:serving:model_count"]
            answer = predict.Predict(request_for(images(1)), timeout=60)
            other = request_for(images(1))
            other.model_spec.name = "second"
            assert predict.Predict(other, timeout=60).model_spec.version.value == 5
            assert answer.model_spec.version.value == 1
            del request.config.model_config_list.config[0]
            models.HandleReloadConfigRequest(request, timeout=120)
            status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": M}))
            assert [row.state for row in status.model_version_status] == [50]  # END: unloaded, still listed
            assert rpc_error(predict.Predict, request_for(images(1)))[0] == grpc.StatusCode.NOT_FOUND
