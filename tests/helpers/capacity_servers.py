"""Loopback predict servers with a known capacity, for the end-to-end capacity tests.

:class:`ServiceModelServer` serves one request at a time, first come first served; each costs
``fixed_s + per_image_s x batch`` (a deterministic single-server queue), so its capacity is
analytic: ``1 / (fixed_s + per_image_s x batch)`` requests/s. The queue is kept as arithmetic
(each arrival's completion time is ``max(arrival, previous completion) + cost``) and each reply
waits until its completion time, so thread wake-up delays on a busy machine do not add up into
a slower server than the model says. With ``error_above_rps`` it instead answers
HTTP 503 whenever more than that many requests arrived in the last second (an overload guard
that starts erroring at a known rate).

Unlike tests/loopback_servers.py it also answers the GET status and metadata calls that
``tfsbench capacity`` makes before and during its probes (target check, health polls).

Usage::

    with ServiceModelServer(fixed_s=0.010, per_image_s=0.002) as server:
        ...server.url..., server.capacity_rps(batch=4)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson

from tests.helpers.loopback_servers import BackgroundServer, count_rows

_PREDICTION = {"classes": 3, "probabilities": [0.1] * 10}
_STATUS = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}
_METADATA = {
    "model_spec": {"name": "classifier", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": {"serving_default": {}}}},
}


class ServiceModelServer(BackgroundServer):
    """A threaded stdlib HTTP server with a known service model; a context manager yielding itself."""

    def __init__(
        self, fixed_s: float = 0.010, per_image_s: float = 0.002, error_above_rps: float | None = None
    ) -> None:
        self.fixed_s = fixed_s
        self.per_image_s = per_image_s
        self.error_above_rps = error_above_rps
        self.requests = 0
        self.errors = 0
        self._arrivals: deque[float] = deque()
        self._lock = threading.Lock()
        self._free_at = 0.0  # monotonic time at which the single server finishes its queue
        self._bind()

    def service_s(self, batch: int) -> float:
        return self.fixed_s + self.per_image_s * batch

    def capacity_rps(self, batch: int) -> float:
        """The analytic capacity: one request at a time, each taking :meth:`service_s`."""
        return 1.0 / self.service_s(batch)

    def _overloaded(self) -> bool:
        """Count this arrival; True when more than ``error_above_rps`` arrived in the last second."""
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            self._arrivals.append(now)
            while self._arrivals and self._arrivals[0] < now - 1.0:
                self._arrivals.popleft()
            over = self.error_above_rps is not None and len(self._arrivals) > self.error_above_rps
            self.errors += over
            return over

    def predict(self, path: str, body: bytes) -> tuple[int, bytes]:
        if not path.endswith(":predict"):
            return 400, json.dumps({"error": f"Malformed request: POST {path}"}).encode()
        batch = count_rows(body)
        if self._overloaded():
            return 503, json.dumps({"error": "Server overloaded: too many requests in the last second"}).encode()
        if self.error_above_rps is None:
            with self._lock:
                done = max(time.monotonic(), self._free_at) + self.service_s(batch)
                self._free_at = done
            time.sleep(max(0.0, done - time.monotonic()))
        else:
            time.sleep(self.service_s(batch))  # the overload guard's server runs requests side by side
        return 200, orjson.dumps({"predictions": [_PREDICTION] * batch})

    def get(self, path: str) -> tuple[int, bytes]:
        if path.rstrip("/").endswith("/metadata"):
            return 200, orjson.dumps(_METADATA)
        if path.startswith("/v1/models/"):
            return 200, orjson.dumps(_STATUS)
        return 404, b'{"error": "Not found"}'

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Locust's clients expect

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes; Nagle plus delayed ACK would add ~40 ms.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _reply(self, status: int, reply: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._reply(*server.predict(self.path, body))

            def do_GET(self) -> None:
                self._reply(*server.get(self.path))

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        return Handler
