"""tensorflow/serving's request errors: a canonical status code and its message, for every front end.

The predict core, the model store and the decoders raise :class:`ServingError`; the REST front
end maps the code to an HTTP status (``http_server.cc`` ``ToHTTPStatusCode``) and the message to
``{"error": ...}``; a gRPC front end sends the code and message as they are.
"""

from __future__ import annotations

from bench.api_names import HTTP_STATUS  # the REST front end maps codes with it

# TensorFlow's numeric error codes (``tf.errors.OpError.error_code``) -> canonical names.
CODE_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


class ServingError(Exception):
    """A request error: canonical ``code`` (``INVALID_ARGUMENT``...) and tensorflow/serving's
    ``message`` (what goes into ``{"error": ...}``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def status_string(self) -> str:
        """absl ``Status::ToString()``: what a wrapping error message embeds."""
        return f"{self.code}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    """The most common error: ``INVALID_ARGUMENT`` with ``message``."""
    return ServingError("INVALID_ARGUMENT", message)
