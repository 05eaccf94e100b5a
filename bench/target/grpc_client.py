"""``TFServingClient`` over gRPC: status, metadata, readiness and predict through the official stubs.

The same interface as the REST client (``bench.target.client``), so the sweep's preflight, the
readiness wait and the prediction checks work unchanged::

    client = TFServingGrpcClient("127.0.0.1:8500", "classifier")
    client.wait_until_available(timeout_s=60)
    client.input_specs()                           # from GetModelMetadata, as REST's metadata says it
    response = client.predict(get_encoding("grpc-tensor-content").encode(batch), batch=16)

``status()`` and ``metadata()`` answer the documents REST answers (protobuf's JSON mapping of
``GetModelStatusResponse`` and of the ``SignatureDefMap``), and ``predict`` a columnar
``{"outputs": {name: values}}``. A body is a serialized ``PredictRequest`` (the gRPC encodings
make one) and goes out as it is, so what was measured while encoding is what is sent.

Errors are translated at the boundary, as REST's are: a server that cannot be reached or does not
answer in time becomes ``ServerError``; a failed call becomes ``PredictError`` with the HTTP status
tensorflow/serving's REST layer maps its code to and ``"<CODE>: <details>"`` as its message
(:func:`rpc_failure`).

grpc is imported when a client is made: in a Locust process, gevent's support must be switched
on first (``bench.scenario.grpc_user``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench import argtypes
from bench.api_names import GRPC_PORT, HTTP_STATUS
from bench.errors import ConfigError, PredictError, ServerError
from bench.payloads import grpc_bodies
from bench.target.client import TFServingClient

__all__ = ["PREDICT_METHOD", "TFServingGrpcClient", "channel_options", "rpc_failure"]

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
# tensorflow_model_server sends and receives up to 2^31-1 bytes; gRPC's own receive default is
# 4 MiB, which a batch-64 response of a bigger model passes.
MAX_MESSAGE_BYTES = 2**31 - 1
START_HINT = (
    "tfsbench serve --port {port} --rest_api_port 8501 --model_name classifier --model_base_path models/classifier"
)
# What grpc says when the channel never connected (refused, unresolvable, reset before a reply).
_UNREACHED = ("failed to connect", "connection refused", "connect failed", "dns resolution failed", "socket closed")


def channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", -1)]


def rpc_failure(exc: Any) -> tuple[int, str]:
    """``(status, message)`` for a failed call (a ``grpc.RpcError``).

    status: the HTTP status REST would have answered with for the call's code (NOT_FOUND -> 404),
    or 0 when no answer came (the server was not reached: the REST client's status for a
    refused connection); message: ``"<CODE>: <details>"``.
    """
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    name = getattr(code, "name", "UNKNOWN")
    details = (exc.details() if callable(getattr(exc, "details", None)) else None) or str(exc)
    unreached = name == "UNAVAILABLE" and any(marker in details.lower() for marker in _UNREACHED)
    return (0 if unreached else HTTP_STATUS.get(name, 500)), f"{name}: {' '.join(details.split())}"


class TFServingGrpcClient(TFServingClient):
    """Status, metadata and predict calls for one model over gRPC (``target``: ``HOST:PORT``)."""

    protocol = "grpc"

    def __init__(
        self, target: str, model_name: str = "classifier", version: int | None = None, timeout_s: float = 30.0
    ) -> None:
        try:
            target = argtypes.grpc_target(target)
        except Exception as exc:
            raise ConfigError(f"--grpc-target: {exc}") from None
        if not model_name:
            raise ConfigError("model name must not be empty")
        if version is not None and version < 0:
            raise ConfigError(f"model version must be zero or positive, got {version}")
        if timeout_s <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout_s} s")
        # lazy: grpc must be imported after gevent's support is switched on in a Locust process
        import grpc

        self.target = target
        self.base_url = f"grpc://{target}"
        self.model_name = model_name
        self.version = version
        self.timeout_s = timeout_s
        self.model_url = f"{self.base_url} model '{model_name}'" + (f" version {version}" if version else "")
        self.predict_url = self.base_url + PREDICT_METHOD
        self.metadata_url = f"{self.base_url}/tensorflow.serving.PredictionService/GetModelMetadata"
        self._metadata: dict[str, Any] | None = None
        self.server_header = None
        self._grpc = grpc
        self._channel = grpc.insecure_channel(target, options=channel_options())
        # Bodies are serialized already (bench.payloads.grpc_bodies): no serializer on the way out.
        self._predict = self._channel.unary_unary(PREDICT_METHOD)
        stubs = _stubs()
        self._prediction = stubs.prediction.PredictionServiceStub(self._channel)
        self._models = stubs.model.ModelServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"TFServingGrpcClient({self.target!r}, {self.model_name!r}, version={self.version})"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TFServingGrpcClient:
        return self

    def _model_spec(self, message: Any) -> None:
        message.name = self.model_name
        if self.version is not None:
            message.version.value = self.version

    def _call(self, method: Any, request: Any, timeout_s: float, what: str) -> Any:
        try:
            return method(request, timeout=timeout_s)
        except self._grpc.RpcError as exc:
            status, message = rpc_failure(exc)
            if status == 0:
                port = self.target.rpartition(":")[2] or GRPC_PORT
                raise ServerError(
                    f"cannot reach TF Serving's gRPC at {self.target}: {message} "
                    f"(is a server running? {START_HINT.format(port=port)})"
                ) from None
            if message.startswith("DEADLINE_EXCEEDED"):
                raise ServerError(f"no answer to {what} from {self.target} within {timeout_s:g} s") from None
            raise PredictError(status, message) from None

    def status(self, timeout_s: float | None = None) -> dict[str, Any]:
        """``ModelService/GetModelStatus``, as REST's ``GET /v1/models/{name}`` answers it."""
        stubs = _stubs()
        request = stubs.status.GetModelStatusRequest()
        self._model_spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request, timeout_s or self.timeout_s, "GetModelStatus")
        return _as_dict(response)

    def metadata(self) -> dict[str, Any]:
        """``PredictionService/GetModelMetadata``, as REST's ``.../metadata`` answers it (cached)."""
        if self._metadata is None:
            stubs = _stubs()
            request = stubs.metadata.GetModelMetadataRequest()
            self._model_spec(request.model_spec)
            request.metadata_field.append("signature_def")
            response = self._call(self._prediction.GetModelMetadata, request, self.timeout_s, "GetModelMetadata")
            signatures = stubs.metadata.SignatureDefMap()
            if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signatures):
                raise ServerError(f"{self.metadata_url} returned metadata without signature_def")
            self._metadata = {
                "model_spec": _as_dict(response.model_spec),
                "metadata": {"signature_def": _as_dict(signatures)},
            }
        return self._metadata

    def predict(
        self,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        signature_name: str = "",
        batch: int | None = None,
    ) -> dict[str, Any]:
        """Send a serialized ``PredictRequest``; ``{"outputs": {name: values}}`` (checked with ``batch``)."""
        raw = self._call(self._predict, body, self.timeout_s, "Predict")
        outputs = grpc_bodies.response_outputs(raw)
        response: dict[str, Any] = {"outputs": {name: value.tolist() for name, value in outputs.items()}}
        if batch is not None:
            self.check_response(response, batch, signature_name)
        return response


class _Stubs:
    def __init__(self) -> None:
        # lazy: the official stubs import tensorflow's protos (and with them TensorFlow)
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_service_pb2_grpc,
            prediction_service_pb2_grpc,
        )

        self.prediction = prediction_service_pb2_grpc
        self.model = model_service_pb2_grpc
        self.metadata = get_model_metadata_pb2
        self.status = get_model_status_pb2


_STUBS: list[_Stubs] = []


def _stubs() -> _Stubs:
    if not _STUBS:
        _STUBS.append(_Stubs())
    return _STUBS[0]


def _as_dict(message: Any) -> dict[str, Any]:
    # lazy: protobuf's JSON mapping, with the protos it maps
    from google.protobuf import json_format

    doc: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return doc
