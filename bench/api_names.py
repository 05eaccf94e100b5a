"""Names that tensorflow/serving's APIs fix: default ports and signature key, the Prometheus path and metrics.

Defined once here because both sides of the wire use them: the embedded server exposes them and
the client, the sweep and the Docker launcher look for them.
"""

from __future__ import annotations

REST_PORT = 8501
"""``--rest_api_port`` of tensorflow/serving's image and docs."""
GRPC_PORT = 8500
"""``--port`` (gRPC) of tensorflow/serving's image and docs."""

DEFAULT_SIGNATURE = "serving_default"
"""The signature a request without ``signature_name`` calls."""

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
"""The usual ``prometheus_config { path: ... }`` of a ``--monitoring_config_file``."""

REQUEST_COUNT = ":tensorflow:serving:request_count"
"""Counter, labels ``model_name``, ``status``."""
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
"""Histogram in microseconds, labels ``model_name``, ``API``, ``entrypoint`` (REST or GRPC)."""
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
"""Histogram in microseconds of the model run alone, labels ``model_name``, ``API`` (Predict, Classify,
Regress), ``runtime``."""
REQUEST_EXAMPLE_COUNTS = ":tensorflow:serving:request_example_counts"
"""Histogram of tf.Examples per MultiInference request, label ``model``."""
REQUEST_EXAMPLE_COUNT_TOTAL = ":tensorflow:serving:request_example_count_total"
"""Counter of tf.Examples in MultiInference requests, label ``model``."""
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"

# Canonical status code -> the HTTP status tensorflow/serving's REST layer answers with
# (``http_server.cc`` ``ToHTTPStatusCode``): the embedded server's REST front end answers with it,
# and a gRPC client records a failed call's code as the status REST would have given.
HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
