"""tensorflow/serving's gRPC API over the predict core: PredictionService and ModelService.

What ``tensorflow_model_server --port=8500`` answers (``shared/docs/tf-serving-grpc-api.md``):
Predict, GetModelMetadata, Classify, Regress and MultiInference; GetModelStatus and
HandleReloadConfigRequest. Checks run in upstream's order with its status codes and texts
(``prediction_service_impl.cc``, ``predict_util.cc``, TensorFlow's ``GetInputValues``,
``get_model_metadata_impl.cc``, ``get_model_status_impl.cc``, ``model_service_impl.cc``);
errors carry the bare message, cut at 1024 characters (``grpc_status_util.cc``). Model runs,
deadlines (the client's gRPC deadline is the run timeout), batching and metrics are the predict
core's, shared with the REST front end, so gRPC and REST requests batch together::

    front = GrpcFrontEnd(core, "127.0.0.1", 0, max_threads=8)
    front.start()                  # front.port: the bound port
    ...
    front.stop(drain_timeout_s=30)  # in-flight calls finish; new ones are refused

Messages are the official ``tensorflow-serving-api`` protos; they import TensorFlow, so they are
imported when the front end starts (a process that serves has TensorFlow loaded by then).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from bench.api_names import DEFAULT_SIGNATURE
from bench.errors import ConfigError
from bench.serving.example_inference import ClassificationResult, InferenceTask, RegressionResult
from bench.serving.example_proto import ExampleInput
from bench.serving.grpc_tensor import TensorParseError, decode_tensor, encode_tensor
from bench.serving.model_config import parse_model_server_config_text
from bench.serving.predict_core import PredictCore
from bench.serving.saved_model import CLASSIFY_METHOD, LoadedVersion
from bench.serving.status import CODE_NAMES, ServingError, invalid_argument
from bench.tensorflow_import import import_tensorflow

__all__ = [
    "ENTRYPOINT",
    "MAX_MESSAGE_BYTES",
    "GrpcFrontEnd",
    "decode_predict_inputs",
    "decode_predict_message",
    "parse_channel_arguments",
]

log = logging.getLogger("tfsbench.serve")

ENTRYPOINT = "GRPC"  # the request_latency label of tensorflow/serving's gRPC handlers
MAX_MESSAGE_BYTES = 2**31 - 1  # ServerBuilder::SetMaxMessageSize(INT32_MAX)
ERROR_MESSAGE_LIMIT = 1024
CODE_NUMBERS = {name: number for number, name in CODE_NAMES.items()} | {"OK": 0}
STATE_NUMBERS = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}
SIGNATURE_DEF = "signature_def"


def parse_channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """``--grpc_channel_arguments``: ``key=value`` entries split on commas; values that parse as
    int32 go in as ints, others as strings (``parseGrpcChannelArgs``); unknown keys are gRPC's
    to ignore. An entry without ``=`` is a ``ConfigError`` (upstream reads past its split)."""
    out: list[tuple[str, int | str]] = []
    for entry in (e for e in text.split(",") if e):
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ConfigError(f"--grpc_channel_arguments: '{entry}' is not key=value")
        value = value.split("=", 1)[0]  # str_util::Split: key_val[1] is up to the next '='
        try:
            number = int(value)
        except ValueError:
            out.append((key, value))
            continue
        out.append((key, number) if -(2**31) <= number < 2**31 else (key, value))
    return tuple(out)


def grpc_details(message: str) -> str:
    """``ToGRPCStatus``: messages over 1024 characters are cut and marked."""
    if len(message) > ERROR_MESSAGE_LIMIT:
        return message[:ERROR_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def decode_predict_inputs(
    loaded: LoadedVersion, signature_name: str, inputs: Any, *, method_name_check: bool = False
) -> dict[str, np.ndarray]:
    """``PreProcessPrediction`` up to the output filter: signature, method, input count, then
    TensorFlow's ``GetInputValues`` (each signature input in alias order: missing without a
    default, then ``FromProto``; then request inputs the signature does not use).

    ``inputs`` is ``PredictRequest.inputs`` (alias -> TensorProto). Defaults are left to the
    predict core (``LoadedVersion.predict_call`` feeds them)."""
    signature = loaded.predict_signature(signature_name, list(inputs), method_name_check=method_name_check)
    tensors: dict[str, np.ndarray] = {}
    for alias in sorted(signature.input_tensors):
        if alias not in inputs:
            if alias not in signature.defaults:
                sent, defaults = ",".join(sorted(inputs)), ",".join(sorted(signature.defaults))
                raise invalid_argument(
                    f"Signature input alias: {alias}(feed name: {signature.input_tensors[alias]}) not found in "
                    f"request and no default value provided. Inputs expected to be in the request "
                    f"{{{sent}}}, or default input alias set: {defaults}"
                )
            continue
        try:
            tensors[alias] = decode_tensor(inputs[alias])
        except TensorParseError:
            raise invalid_argument(f"tensor parsing error: {alias}") from None
    if inputs and len(tensors) != len(inputs):
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {','.join(sorted(tensors))}, "
            f"request input: {','.join(sorted(inputs))}"
        )
    return tensors


class _Apis:
    """The generated protobuf modules (imported once, when the first front end starts)."""

    def __init__(self) -> None:
        import_tensorflow()  # the protos below import it: once, quietly
        # lazy: tensorflow-serving-api's protos import TensorFlow's
        from google.protobuf import json_format, text_format
        from tensorflow_serving.apis import (
            classification_pb2,
            get_model_metadata_pb2,
            get_model_status_pb2,
            inference_pb2,
            model_management_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
            regression_pb2,
        )

        self.json_format = json_format
        self.text_format = text_format
        self.classification = classification_pb2
        self.metadata = get_model_metadata_pb2
        self.status = get_model_status_pb2
        self.inference = inference_pb2
        self.management = model_management_pb2
        self.model_service = model_service_pb2_grpc
        self.predict = predict_pb2
        self.prediction_service = prediction_service_pb2_grpc
        self.regression = regression_pb2


@functools.cache
def _apis() -> _Apis:
    return _Apis()


def decode_predict_message(body: bytes) -> dict[str, np.ndarray]:
    """The server-side decode of a serialized ``PredictRequest``, as the front end does it before
    the model lookup: protobuf parse, then each input by TensorFlow's rules (``tensor_content``
    viewed, not copied). For decode benchmarks (``bench.perf.grpc_decode``, ``tfsbench codecs``);
    ``TensorParseError`` for an input TensorFlow would refuse."""
    request = _apis().predict.PredictRequest.FromString(body)
    return {alias: decode_tensor(proto) for alias, proto in request.inputs.items()}


def _version_of(spec: Any) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, str(spec.version_label)
    return None, None


class _Handlers:
    """The RPC bodies: each returns a response message or raises ``ServingError``."""

    def __init__(self, core: PredictCore, apis: _Apis, *, as_content: bool) -> None:
        self.core = core
        self.apis = apis
        self.as_content = as_content

    def lookup(self, spec: Any) -> LoadedVersion:
        """``ServerCore::GetServableHandle(ModelSpec)``."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        version, label = _version_of(spec)
        return self.core.lookup(spec.name, version, label)

    def _model_spec(self, out: Any, name: str, signature_name: str | None, version: int) -> None:
        """``MakeModelSpec``: the name as requested, the version served, the resolved signature."""
        out.name = name
        out.version.value = version
        if signature_name is not None:
            out.signature_name = signature_name or DEFAULT_SIGNATURE

    @staticmethod
    def _require_spec(request: Any) -> None:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")

    @staticmethod
    def _timeout_ms(context: Any) -> int:
        """The client's deadline as the run timeout (``DeadlineToTimeoutMillis``); 0: none."""
        remaining = context.time_remaining()
        return 0 if remaining is None else max(1, int(remaining * 1000))

    def predict(self, request: Any, context: Any) -> Any:
        self._require_spec(request)
        spec = request.model_spec
        loaded = self.lookup(spec)
        tensors = decode_predict_inputs(
            loaded, spec.signature_name, request.inputs, method_name_check=self.core.method_name_check
        )
        signature = spec.signature_name or DEFAULT_SIGNATURE
        outputs = self.core.run(
            loaded, signature, tensors, tuple(request.output_filter), timeout_ms=self._timeout_ms(context)
        )
        response = self.apis.predict.PredictResponse()
        self._model_spec(response.model_spec, spec.name, signature, loaded.version)
        for alias, value in outputs.items():
            encode_tensor(value, response.outputs[alias], as_content=self.as_content)
        return response

    def metadata(self, request: Any, context: Any) -> Any:
        self._require_spec(request)
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF:
                raise invalid_argument(f"Metadata field {field} is not supported")
        loaded = self.lookup(request.model_spec)
        response = self.apis.metadata.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        signature_map = self.apis.json_format.ParseDict(loaded.signature_map_json, self.apis.metadata.SignatureDefMap())
        response.metadata[SIGNATURE_DEF].Pack(signature_map)
        return response

    def _examples(self, request: Any) -> ExampleInput:
        """``tensorflow.serving.Input``: an example list, or one with a context example."""
        kind = request.input.WhichOneof("kind")
        if kind == "example_list_with_context":
            listed = request.input.example_list_with_context
            return ExampleInput(
                tuple(e.SerializeToString() for e in listed.examples), listed.context.SerializeToString()
            )
        if kind == "example_list":
            return ExampleInput(tuple(e.SerializeToString() for e in request.input.example_list.examples))
        return ExampleInput(())

    def _fill_classifications(self, out: Any, result: ClassificationResult) -> None:
        for classes in result:
            entry = out.classifications.add()
            for label, score in classes:
                item = entry.classes.add()
                item.label = label.decode("utf-8", "replace")
                item.score = score

    def classify(self, request: Any, context: Any) -> Any:
        self._require_spec(request)
        loaded = self.lookup(request.model_spec)
        result = self.core.classify(
            loaded, request.model_spec.signature_name, self._examples(request), timeout_ms=self._timeout_ms(context)
        )
        response = self.apis.classification.ClassificationResponse()
        self._model_spec(
            response.model_spec, request.model_spec.name, request.model_spec.signature_name, loaded.version
        )
        self._fill_classifications(response.result, result)
        return response

    def regress(self, request: Any, context: Any) -> Any:
        self._require_spec(request)
        loaded = self.lookup(request.model_spec)
        result = self.core.regress(
            loaded, request.model_spec.signature_name, self._examples(request), timeout_ms=self._timeout_ms(context)
        )
        response = self.apis.regression.RegressionResponse()
        self._model_spec(
            response.model_spec, request.model_spec.name, request.model_spec.signature_name, loaded.version
        )
        for value in result:
            response.result.regressions.add().value = value
        return response

    def multi_inference(self, request: Any, context: Any) -> Any:
        """``RunMultiInferenceWithServerCore``: the servable of the first task's model spec."""
        spec = request.tasks[0].model_spec if request.tasks else self.apis.predict.PredictRequest().model_spec
        loaded = self.lookup(spec)
        tasks = [InferenceTask(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in request.tasks]
        results = self.core.multi_inference(
            loaded, tasks, self._examples(request), timeout_ms=self._timeout_ms(context)
        )
        response = self.apis.inference.MultiInferenceResponse()
        for task, task_result in zip(request.tasks, results, strict=True):
            out = response.results.add()
            self._model_spec(out.model_spec, task.model_spec.name, task.model_spec.signature_name, loaded.version)
            if task.method_name == CLASSIFY_METHOD:
                self._fill_classifications(out.classification_result, task_result)  # type: ignore[arg-type]
            else:
                regression: RegressionResult = task_result  # type: ignore[assignment]
                for value in regression:
                    out.regression_result.regressions.add().value = value
        return response

    def model_status(self, request: Any, context: Any) -> Any:
        self._require_spec(request)
        spec = request.model_spec
        version = int(spec.version.value) if spec.HasField("version") else None
        rows = self.core.store.status(spec.name, version)
        response = self.apis.status.GetModelStatusResponse()
        for row in rows:
            entry = response.model_version_status.add()
            entry.version = row.version
            entry.state = STATE_NUMBERS.get(row.state, 0)
            entry.status.error_code = CODE_NUMBERS.get(row.error_code, 2)
            entry.status.error_message = row.error_message
        return response

    def reload_config(self, request: Any, context: Any) -> tuple[Any, ServingError | None]:
        """``HandleReloadConfigRequest``: a model_config_list applied as a config-file re-read
        applies it; the response's status mirrors the call's."""
        error: ServingError | None = None
        if request.config.WhichOneof("config") != "model_config_list":
            error = invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        else:
            try:
                text = self.apis.text_format.MessageToString(request.config)
                self.core.store.reload_config(parse_model_server_config_text(text, "HandleReloadConfigRequest"))
            except ConfigError as exc:
                code, sep, rest = str(exc).partition(": ")
                error = ServingError(code, rest) if sep and code in CODE_NUMBERS else invalid_argument(str(exc))
            if error is not None:
                log.error("ReloadConfig failed: %s", error.message)
        response = self.apis.management.ReloadConfigResponse()
        if error is not None:
            response.status.error_code = CODE_NUMBERS.get(error.code, 2)
            response.status.error_message = error.message
        for name in request.metric_names:
            # No TensorFlow monitoring counters here: every named metric increased by 0.
            metric = response.metric.add()
            metric.name = name
            metric.int64_value_increase = 0
        return response, error


Handler = Callable[[Any, Any], Any]


class _Servicer:
    """One gRPC service: each method runs its handler, records the metrics upstream records for
    it, and turns ``ServingError`` into the status code and details."""

    def __init__(self, core: PredictCore, methods: dict[str, tuple[Handler, str | None]]) -> None:
        self._core = core
        for method, (handler, api) in methods.items():
            setattr(self, method, self._wrap(handler, api))

    def _wrap(self, handler: Handler, api: str | None) -> Handler:
        core = self._core

        def call(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            try:
                response = handler(request, context)
                error = None
            except ServingError as exc:
                response, error = None, exc
            except Exception as exc:  # a bug is answered and logged, never a dropped call
                log.exception("internal error in gRPC %s", api or "call")
                response, error = None, ServingError("INTERNAL", f"Internal error: {exc}")
            if isinstance(response, tuple):  # HandleReloadConfigRequest: (response, its status)
                response, error = response
            if api is not None:
                name = request.model_spec.name if hasattr(request, "model_spec") else ""
                latency_us = (time.perf_counter() - started) * 1e6
                core.record_request(name, api, ENTRYPOINT, "OK" if error is None else error.code, latency_us)
            if error is not None:
                context.abort(
                    getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN), grpc_details(error.message)
                )
            return response

        return call


class GrpcFrontEnd:
    """The gRPC server: ``--port`` on ``host`` (0: a free port), ``--grpc_max_threads`` workers,
    messages up to 2 GiB - 1 each way; outputs as typed fields, or ``tensor_content`` when
    ``as_content`` (``--enable_serialization_as_tensor_content``)."""

    def __init__(
        self,
        core: PredictCore,
        host: str,
        port: int,
        *,
        max_threads: int,
        as_content: bool = False,
        socket_path: str = "",
        channel_arguments: tuple[tuple[str, int | str], ...] = (),
    ) -> None:
        self.core = core
        self.host = host
        self.requested_port = port
        self.max_threads = max(max_threads, 1)
        self.as_content = as_content
        self.socket_path = socket_path
        self.channel_arguments = channel_arguments
        self._server: Any = None
        self._port = 0
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._port

    @property
    def target(self) -> str:
        """``host:port`` as a gRPC client dials it."""
        return f"{'[' + self.host + ']' if ':' in self.host else self.host}:{self._port}"

    def start(self) -> None:
        """Bind and serve; ``ConfigError`` when the address cannot be bound."""
        apis = _apis()
        handlers = _Handlers(self.core, apis, as_content=self.as_content)
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.max_threads, thread_name_prefix="tfsbench-grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # grpcio sets SO_REUSEPORT by default: a second server would share a busy port
                # silently instead of failing as tensorflow_model_server does.
                ("grpc.so_reuseport", 0),
                # Applied after the size limits, as upstream adds them after SetMaxMessageSize.
                *self.channel_arguments,
            ],
        )
        prediction = _Servicer(
            self.core,
            {
                "Predict": (handlers.predict, "Predict"),
                "GetModelMetadata": (handlers.metadata, None),
                "Classify": (handlers.classify, "Classify"),
                "Regress": (handlers.regress, "Regress"),
                "MultiInference": (handlers.multi_inference, None),
            },
        )
        models = _Servicer(
            self.core,
            {
                "GetModelStatus": (handlers.model_status, None),
                "HandleReloadConfigRequest": (handlers.reload_config, None),
            },
        )
        apis.prediction_service.add_PredictionServiceServicer_to_server(prediction, server)
        apis.model_service.add_ModelServiceServicer_to_server(models, server)
        address = f"{'[' + self.host + ']' if ':' in self.host else self.host}:{self.requested_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {address} (gRPC, --port): {exc}") from None
        if port == 0:  # older grpcio reports a failed bind as port 0
            raise ConfigError(f"cannot listen on {address} (gRPC, --port)")
        if self.socket_path:
            try:
                bound = server.add_insecure_port(f"unix:{self.socket_path}")
            except RuntimeError as exc:
                raise ConfigError(f"cannot listen on unix:{self.socket_path} (--grpc_socket_path): {exc}") from None
            if bound == 0:
                raise ConfigError(f"cannot listen on unix:{self.socket_path} (--grpc_socket_path)")
        server.start()
        with self._lock:
            self._server, self._port = server, port

    def stop(self, drain_timeout_s: float = 30.0) -> threading.Event:
        """Refuse new calls and let calls in flight finish within ``drain_timeout_s``; the event
        is set once the server has stopped (wait on it after draining the other front ends)."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            done = threading.Event()
            done.set()
            return done
        event: threading.Event = server.stop(grace=drain_timeout_s)
        return event
