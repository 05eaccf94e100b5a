"""A Locust user's gRPC side: one channel per user, one Predict call, its outcome in REST's terms.

The locustfile's ``PredictUser`` sends each request by its cell's encoding: REST encodings through
Locust's HTTP client, gRPC encodings (``grpc-*``) through a :class:`GrpcSession` to
``--grpc-target``. Both fire Locust's ``request`` event with the same context, so both become the
same records rows (``protocol`` says which; ``bench.scenario.predict_user``).

grpc under gevent needs its gevent support switched on before the first channel
(:func:`init_gevent`); grpc is imported here only inside functions, so a process that never
sends gRPC never loads it.
"""

from __future__ import annotations

from typing import Any

from bench.payloads import grpc_bodies
from bench.target.grpc_client import PREDICT_METHOD, channel_options, rpc_failure

# A call that takes longer than this is cut by the client (DEADLINE_EXCEEDED, recorded as 504),
# as Locust's HTTP client cuts a request at its network timeout.
CALL_TIMEOUT_S = 60.0
_GEVENT_READY: list[bool] = []


def init_gevent() -> None:
    """Switch on grpc's gevent support, once per process, before any channel exists."""
    if not _GEVENT_READY:
        # lazy: grpc only in a Locust process that sends gRPC, after gevent patched it
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _GEVENT_READY.append(True)


class GrpcSession:
    """One user's channel to ``target`` (``HOST:PORT``) and its raw Predict method."""

    def __init__(self, target: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        init_gevent()
        # lazy: after init_gevent (see the module docstring)
        import grpc

        self.target = target
        self.timeout_s = timeout_s
        self._rpc_error = grpc.RpcError
        self._channel = grpc.insecure_channel(target, options=channel_options())
        self._predict = self._channel.unary_unary(PREDICT_METHOD)  # bytes in, bytes out

    def call(self, body: bytes) -> tuple[int, bytes, str]:
        """``(status, response bytes, error)``: 200 and the reply, or REST's status for the code and
        ``"<CODE>: <details>"`` (status 0: the server was not reached)."""
        try:
            reply: bytes = self._predict(body, timeout=self.timeout_s)
        except self._rpc_error as exc:
            status, message = rpc_failure(exc)
            return status, b"", message
        return 200, reply, ""

    def close(self) -> None:
        self._channel.close()


def check_grpc_response(content: bytes, batch: int) -> str:
    """The failure message for a Predict reply, or "" when it holds one prediction per image."""
    try:
        outputs = grpc_bodies.response_outputs(content)
    except Exception as exc:  # a reply that is not a PredictResponse: say so, as for a non-JSON body
        return f"response is not a PredictResponse: {exc}"
    count = grpc_bodies.prediction_count(outputs)
    if count is None:
        return "response has no outputs of one batch size"
    if count != batch:
        return f"expected {batch} predictions, got {count}"
    return ""


def failure_text(status: int, error: str) -> str:
    """A failed call's records ``error``: ``gRPC NOT_FOUND: ...`` (``no response: gRPC ...`` unreached)."""
    return f"no response: gRPC {error}" if status == 0 else f"gRPC {error}"


class GrpcFailure(Exception):
    """What a failed gRPC request hands Locust's request event (its text becomes the records' error)."""


def failure(message: str) -> Any:
    return GrpcFailure(message) if message else None
