"""Classify, Regress and MultiInference over gRPC on tensorflow/serving's half_plus_two test model:
results equal the model run in process and REST's, the context example merges into each example,
and request metrics carry ``entrypoint="GRPC"``."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from bench.serving.model_config import ModelConfig
from bench.serving.server import EmbeddedServer, ServerOptions

grpc = pytest.importorskip("grpc")
tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    inference_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)


@pytest.fixture(scope="module")
def served(half_plus_two_models):
    base = half_plus_two_models / "half_plus_two"
    options = ServerOptions(models=(ModelConfig("default", base),), port=0, grpc_port=0)
    with EmbeddedServer(options=options) as server, grpc.insecure_channel(server.grpc_target) as channel:
        yield (
            server,
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            tf.saved_model.load(str(base / "00000123")),
        )


def example(**features: float):
    return tf.train.Example(
        features=tf.train.Features(
            feature={k: tf.train.Feature(float_list=tf.train.FloatList(value=[v])) for k, v in features.items()}
        )
    )


def in_process(module, signature: str, examples: list[bytes]) -> np.ndarray:
    (value,) = module.signatures[signature](inputs=tf.constant(examples)).values()
    return value.numpy()


XS = [float(np.float32(v)) for v in np.random.default_rng(3).normal(0, 10, 4)]


def test_regress_equals_rest_and_the_model_in_process(served) -> None:
    server, stub, module = served
    request = regression_pb2.RegressionRequest(model_spec={"name": "default", "signature_name": "regress_x_to_y"})
    request.input.example_list.examples.extend(example(x=x) for x in XS)
    reply = stub.Regress(request, timeout=60)
    got = np.array([r.value for r in reply.result.regressions], np.float32)
    expected = in_process(module, "regress_x_to_y", [example(x=x).SerializeToString() for x in XS]).reshape(-1)
    np.testing.assert_array_equal(got, expected)
    assert (reply.model_spec.name, reply.model_spec.version.value, reply.model_spec.signature_name) == (
        "default",
        123,
        "regress_x_to_y",
    )
    body = json.dumps({"signature_name": "regress_x_to_y", "examples": [{"x": x} for x in XS]}).encode()
    with urllib.request.urlopen(urllib.request.Request(server.url + "/v1/models/default:regress", body)) as rest:
        np.testing.assert_array_equal(np.array(json.loads(rest.read())["results"], np.float32), got)
    assert 'request_latency_count{API="Regress",entrypoint="GRPC",model_name="default"} 1' in server.metrics.render()


def test_classify_with_a_context_example(served) -> None:
    _, stub, module = served
    request = classification_pb2.ClassificationRequest(
        model_spec={"name": "default", "signature_name": "classify_x_to_y"}
    )
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(example(x=10.0))
    listed.examples.extend([example(x=2.0), tf.train.Example()])
    reply = stub.Classify(request, timeout=60)
    scores = [[c.score for c in row.classes] for row in reply.result.classifications]
    labels = [[c.label for c in row.classes] for row in reply.result.classifications]
    merged = [
        example(x=10.0).SerializeToString() + example(x=2.0).SerializeToString(),
        example(x=10.0).SerializeToString(),
    ]
    np.testing.assert_array_equal(np.array(scores, np.float32), in_process(module, "classify_x_to_y", merged))
    assert labels == [[""], [""]]


def test_multi_inference_runs_classify_and_regress_tasks_together(served) -> None:
    _, stub, module = served
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = "default", signature
        task.method_name = f"tensorflow/serving/{method}"
    request.input.example_list.examples.extend(example(x=x) for x in XS)
    reply = stub.MultiInference(request, timeout=60)
    serialized = [example(x=x).SerializeToString() for x in XS]
    regression, classification = reply.results
    np.testing.assert_array_equal(
        np.array([r.value for r in regression.regression_result.regressions], np.float32),
        in_process(module, "regress_x_to_y", serialized).reshape(-1),
    )
    np.testing.assert_array_equal(
        np.array(
            [[c.score for c in row.classes] for row in classification.classification_result.classifications], np.float32
        ),
        in_process(module, "classify_x_to_y", serialized),
    )
    assert [r.model_spec.signature_name for r in reply.results] == ["regress_x_to_y", "classify_x_to_y"]
    request.tasks[1].model_spec.name = "other"
    with pytest.raises(grpc.RpcError) as caught:
        stub.MultiInference(request, timeout=60)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
    )
