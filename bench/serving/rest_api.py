"""tensorflow/serving's REST API as a transport-free function: (method, path, headers, body) -> reply.

Routing, status codes and bodies follow ``shared/docs/tf-serving-rest-api.md`` §2-§8 (ported
from ``http_server.cc``, ``http_rest_api_handler.cc`` and ``http_rest_api_util.cc``). The HTTP
layer (``bench.serving.http``) only reads requests and writes replies; what a predict does once
its tensors are decoded is the predict core's (``bench.serving.predict_core``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping
from email.message import Message

from bench.api_names import DEFAULT_SIGNATURE
from bench.payloads.specs import InputSpec
from bench.serving.http import Reply
from bench.serving.json_examples import parse_classify_regress_body
from bench.serving.json_response import (
    encode_classification_result,
    encode_error,
    encode_predict_response,
    encode_regression_result,
)
from bench.serving.json_tensor import decode_predict_body
from bench.serving.predict_core import PredictCore
from bench.serving.saved_model import LoadedVersion
from bench.serving.status import ServingError

__all__ = ["RestApi"]

ENTRYPOINT = "REST"  # the request_latency label tensorflow/serving's HTTP handler sets

_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL
_V1 = re.compile(r"/v1/.*", _FLAGS)
_VERSION_OR_LABEL = r"(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
_PREDICT = re.compile(r"/v1/models/([^/:]+)" + _VERSION_OR_LABEL + r":(classify|regress|predict)", _FLAGS)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?" + _VERSION_OR_LABEL + r"(?:/(metadata))?", _FLAGS)
_ORIGIN = re.compile(r"https?://")

JSON_HEADERS = (("Content-Type", "application/json"),)
CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
# libevent's evhttp_send_error page, what tensorflow/serving answers outside /v1/.
NOT_FOUND_HTML = b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"


class _EmptyBodyError(Exception):
    """Errors tensorflow/serving returns before its JSON error wrapper runs (empty body)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = ServingError(code, message)


def _decode_arg(text: str) -> str:
    """curl_easy_unescape: percent-decoding that never fails (bad escapes stay as they are)."""
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")


class RestApi:
    """The REST handler over the predict core: URLs, JSON bodies, CORS and the Prometheus page.

    Model runs, deadlines (DEADLINE_EXCEEDED -> 504), batching and request metrics are the
    core's (``bench.serving.predict_core``); this class only turns HTTP requests into core calls.
    """

    def __init__(
        self,
        core: PredictCore,
        *,
        cors: bool = False,
        prometheus_path: str | None = None,
        decode_slots: int = os.cpu_count() or 1,
    ) -> None:
        self.core = core
        self.store = core.store
        self.cors = cors
        self.prometheus_path = prometheus_path
        # Body decoding is numpy passes over multi-MB buffers (the GIL is mostly released): more
        # concurrent decodes than cores only thrash caches and hold more temporaries at once.
        self._decode_slots = threading.BoundedSemaphore(max(decode_slots, 1))

    # -- entry point ----------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: Mapping[str, str] | Message[str, str], body: bytes | bytearray
    ) -> Reply:
        """Answer one request. Never raises for anything a client can send."""
        if self.prometheus_path is not None and path.split("?", 1)[0] == self.prometheus_path:
            return self._prometheus(path)
        if not _V1.fullmatch(path):
            return Reply(404, (("Content-Type", "text/html"),), NOT_FOUND_HTML)
        started = time.perf_counter()
        extra = CORS_HEADERS if self.cors else ()
        if method == "OPTIONS":
            ok = _ORIGIN.search(headers.get("Origin", "") or "") is not None
            code = "OK" if ok else "FAILED_PRECONDITION"
            self.core.record_request("", "", ENTRYPOINT, code)
            return Reply(200 if ok else 400, extra, b"")
        model_name, api = "", ""
        try:
            model_name, api, output = self._process(method, path, body)
            status, code = 200, "OK"
        except _EmptyBodyError as exc:
            status, code, output = exc.error.http_status, exc.error.code, b""
        except ServingError as exc:
            status, code, output = exc.http_status, exc.code, encode_error(exc.message)
            model_name = getattr(exc, "model_name", model_name)
        self.core.record_request(model_name, api, ENTRYPOINT, code, (time.perf_counter() - started) * 1e6)
        return Reply(status, JSON_HEADERS + extra, output)

    def _prometheus(self, path: str) -> Reply:
        headers = (("Content-Type", "text/plain"),)
        if path != self.prometheus_path:
            return Reply(400, headers, f"Unexpected path: {path}. Should be {self.prometheus_path}".encode())
        return Reply(200, headers, self.core.metrics.render().encode())

    # -- ProcessRequest -------------------------------------------------------------------------

    def _process(self, method: str, path: str, body: bytes | bytearray) -> tuple[str, str, bytes]:
        """Returns (model name, API, response body); raises ServingError / _EmptyBodyError."""
        match = None
        if method == "POST":
            match = _PREDICT.fullmatch(path)
        elif method == "GET":
            match = _STATUS.fullmatch(path)
        malformed = ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
        if match is None:
            raise malformed
        raw_name, raw_version, raw_label, verb = match.groups()
        name = _decode_arg(raw_name) if raw_name else ""
        version = None
        if raw_version:
            version = int(raw_version)
            if version >= 2**63:
                raise _EmptyBodyError("INVALID_ARGUMENT", f"Failed to convert version: {raw_version} to numeric.")
        label = _decode_arg(raw_label) if raw_label else None
        try:
            if method == "POST":
                if verb == "predict":
                    return name, verb, self._predict(name, version, label, body)
                if verb in ("classify", "regress"):
                    return name, verb, self._classify_regress(verb, name, version, label, body)
                raise malformed  # verbs compare case-sensitively: ":PREDICT" dispatches nothing
            if not name:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            if verb == "metadata":
                return name, "", self._metadata(name, version, label)
            return name, "", self._status(name, version)
        except ServingError as exc:
            exc.model_name = name  # type: ignore[attr-defined]
            raise

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes | bytearray) -> bytes:
        found: list[LoadedVersion] = []

        def resolve(signature_name: str) -> Mapping[str, InputSpec]:
            loaded = self.core.lookup(name, version, label)
            found[:] = [loaded]
            return loaded.signature_inputs(signature_name)

        with self._decode_slots:
            decoded = decode_predict_body(body, resolve)
        loaded = found[0]
        signature = decoded.signature_name or DEFAULT_SIGNATURE
        outputs = self.core.run(loaded, signature, decoded.tensors)
        return encode_predict_response(outputs, decoded.row_format)

    def _classify_regress(
        self, verb: str, name: str, version: int | None, label: str | None, body: bytes | bytearray
    ) -> bytes:
        """``ProcessClassifyRequest`` / ``ProcessRegressRequest``: the body is checked before the lookup."""
        request = parse_classify_regress_body(body)
        loaded = self.core.lookup(name, version, label)
        if verb == "classify":
            return encode_classification_result(self.core.classify(loaded, request.signature_name, request.input))
        return encode_regression_result(self.core.regress(loaded, request.signature_name, request.input))

    def _status(self, name: str, version: int | None) -> bytes:
        rows = self.store.status(name, version)
        doc = {
            "model_version_status": [
                {
                    "version": str(r.version),
                    "state": r.state,
                    "status": {"error_code": r.error_code, "error_message": r.error_message},
                }
                for r in rows
            ]
        }
        return json.dumps(doc, indent=1).encode()

    def _metadata(self, name: str, version: int | None, label: str | None) -> bytes:
        loaded = self.core.lookup(name, version, label)
        spec = {"name": name, "signature_name": "", "version": str(loaded.version)}
        text = (
            "{\n"
            f'"model_spec":{json.dumps(spec, indent=1)},\n'
            f'"metadata": {{"signature_def": {json.dumps(loaded.signature_map_json, indent=1)}}}\n'
            "}\n"
        )
        return text.encode()
