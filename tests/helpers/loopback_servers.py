"""Small predict servers on 127.0.0.1:0 with known timing, to check what the load generator measures.

They speak just enough of the TF Serving REST predict API for the Locust scenario: a POST to
``/v1/models/<name>[/versions/<v>]:predict`` answers ``{"predictions": [...]}`` with one row per
instance in the request (or per column entry), after a known delay. Timing behaviours:

- ``delay_s``: every request waits this long (requests run concurrently, one thread each).
- ``stall_at`` / ``stall_s``: once the ``stall_at``-th request arrives the whole server stops for
  ``stall_s``; every request that is in progress or arrives meanwhile waits for the end.
- ``service_s``: one request at a time, each taking ``service_s`` (a fixed service rate of
  ``1 / service_s`` requests/s; more load queues).
- ``status`` / ``error``: answer with this status and a TF Serving error body.
- ``extra_rows``: return this many more predictions than asked for (a wrong count).

Usage::

    with LoopbackServer(delay_s=0.04) as server:
        ...server.url..., server.requests
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, cast

import orjson

_PREDICTION = {"classes": 3, "probabilities": [0.1] * 10}


def count_rows(body: bytes) -> int:
    """Batch size of a predict body: rows of ``instances``, or dim 0 of ``inputs``.

    Compact row JSON (orjson) separates images with ``]]],[[[`` and nothing else has three
    closing brackets in a row, so counting that is exact for row-orjson bodies and spares
    parsing ~150 kB of JSON per image; anything else is parsed.
    """
    if body.startswith(b'{"instances":[[[['):
        return body.count(b"]]],[[[") + 1
    parsed = orjson.loads(body)
    inputs = parsed.get("instances", parsed.get("inputs"))
    if isinstance(inputs, dict):
        inputs = next(iter(inputs.values()))
    return len(inputs)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Locust drops its connections when a run stops; replies then meet a closed socket.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class BackgroundServer:
    """A QuietServer on 127.0.0.1:0 served from a daemon thread; a context manager yielding itself.

    Subclasses set their state, then call ``_bind()``, and provide ``_handler_class()``.
    """

    def _bind(self) -> None:
        self._httpd = QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{cast(str, host)}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class LoopbackServer(BackgroundServer):
    """A threaded stdlib HTTP server with injected timing; a context manager yielding itself."""

    def __init__(
        self,
        delay_s: float = 0.0,
        stall_at: int | None = None,
        stall_s: float = 0.0,
        service_s: float | None = None,
        status: int = 200,
        error: str = "",
        extra_rows: int = 0,
    ) -> None:
        self.delay_s = delay_s
        self.stall_at = stall_at
        self.stall_s = stall_s
        self.service_s = service_s
        self.status = status
        self.error = error
        self.extra_rows = extra_rows
        self.requests = 0
        self._lock = threading.Lock()
        self._service_lock = threading.Lock()
        self._stall_until = 0.0
        self._bind()

    def _arrive(self) -> None:
        with self._lock:
            self.requests += 1
            if self.stall_at is not None and self.requests == self.stall_at:
                self._stall_until = time.monotonic() + self.stall_s

    def _wait_out_stall(self) -> None:
        while (remaining := self._stall_until - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.01))

    def respond(self, path: str, body: bytes) -> tuple[int, bytes]:
        self._arrive()
        self._wait_out_stall()
        if self.service_s is not None:
            with self._service_lock:
                time.sleep(self.service_s)
        elif self.delay_s:
            time.sleep(self.delay_s)
        self._wait_out_stall()
        if not path.endswith(":predict"):
            return 400, json.dumps({"error": f"Malformed request: POST {path}"}).encode()
        if self.status != 200:
            return self.status, json.dumps({"error": self.error}, indent=4).encode()
        rows = count_rows(body) + self.extra_rows
        return 200, orjson.dumps({"predictions": [_PREDICTION] * rows})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Locust's clients expect

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes; without NODELAY, Nagle plus the
                # client's delayed ACK would add ~40 ms to every reply.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, reply = server.respond(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        return Handler
