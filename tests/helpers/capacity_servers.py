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

Under Poisson arrivals the same server is an M/D/1 queue: :func:`md1_capacity_rps` gives the
highest rate whose latency percentile (waiting + service) meets a limit, from Erlang's
waiting-time distribution. :class:`InstantServer` answers at once, so whatever falls behind
against it is the load generator.

Usage::

    with ServiceModelServer(fixed_s=0.010, per_image_s=0.002) as server:
        ...server.url..., server.capacity_rps(batch=4)
    md1_capacity_rps(server.service_s(4), 99.0, 0.2)     # Poisson arrivals, p99 < 200 ms
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import socket
import threading
import time
from collections import deque
from decimal import Decimal, localcontext
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar, Self

import orjson

from bench.perf.load_generator import FixedReplyProtocol
from tests.helpers.loopback_servers import BackgroundServer, count_rows

_PREDICTION = {"classes": 3, "probabilities": [0.1] * 10}
_STATUS = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}


def _tensor(dtype: str, *dims: int) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
    }


_OUTPUTS = {"probabilities": _tensor("DT_FLOAT", -1, 10), "classes": _tensor("DT_INT64", -1)}
# What tensorflow/serving's metadata says of the reference classifier: a preflight reads its inputs.
REFERENCE_SIGNATURE_DEFS = {
    "serving_default": {
        "inputs": {"examples": _tensor("DT_UINT8", -1, 128, 128, 3)},
        "outputs": _OUTPUTS,
        "method_name": "tensorflow/serving/predict",
    },
    "serving_bytes": {
        "inputs": {"image_bytes": _tensor("DT_STRING", -1)},
        "outputs": _OUTPUTS,
        "method_name": "tensorflow/serving/predict",
    },
}
_METADATA = {
    "model_spec": {"name": "classifier", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": REFERENCE_SIGNATURE_DEFS}},
}


def md1_wait_cdf(rate_rps: float, service_s: float, wait_s: float) -> float:
    """P(waiting time <= ``wait_s``) in an M/D/1 queue (Erlang's formula, exact decimal arithmetic).

    ``(1 - rho) * sum_{k=0}^{floor(t/D)} (lambda (kD - t))^k / k! * exp(-lambda (kD - t))``: its
    terms alternate and grow like ``e^(lambda t)``, so floats would cancel to noise.
    """
    if wait_s < 0:
        return 0.0
    with localcontext() as ctx:
        ctx.prec = 80
        lam, d, t = Decimal(rate_rps), Decimal(service_s), Decimal(wait_s)
        total = Decimal(0)
        k = 0
        while k * d <= t:
            x = lam * (k * d - t)
            total += x**k / Decimal(math.factorial(k)) * (-x).exp()
            k += 1
        return float((1 - lam * d) * total)


def md1_capacity_rps(service_s: float, percentile: float, limit_s: float) -> float:
    """The highest Poisson rate at which the ``percentile`` of M/D/1 latency (wait + service) is ``limit_s``."""
    low, high = 0.0, 1.0 / service_s
    for _ in range(50):
        mid = (low + high) / 2
        if md1_wait_cdf(mid, service_s, limit_s - service_s) >= percentile / 100.0:
            low = mid
        else:
            high = mid
    return low


class _ServiceModel:
    """A single server's cost model: ``fixed_s + per_image_s x batch`` per request."""

    fixed_s = 0.0
    per_image_s = 0.0

    def service_s(self, batch: int = 1) -> float:
        return self.fixed_s + self.per_image_s * batch

    def capacity_rps(self, batch: int = 1) -> float:
        """The analytic capacity: one request at a time, each taking :meth:`service_s`."""
        return 1.0 / self.service_s(batch)


class ServiceModelServer(_ServiceModel, BackgroundServer):
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


class InstantServer:
    """A predict server that answers at once, for verdicts that must blame the load generator.

    It runs in a process of its own (an asyncio loop, no thread per connection, the body never
    parsed: one canned prediction per request, so use it with batch 1), so it answers tens of
    thousands of requests/s while a Locust process on the same machine drives a few thousand:
    whatever falls behind schedule against it is the generator. GET status and metadata are
    answered as :class:`ServiceModelServer` does.

    Usage::

        with InstantServer() as server:
            ...server.url...
    """

    fixed_s = 0.0
    per_image_s = 0.0

    def __init__(self) -> None:
        self._ports: multiprocessing.Queue[int] = multiprocessing.get_context("spawn").Queue()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve_instantly, args=(self._ports, self.fixed_s, self.per_image_s), daemon=True
        )
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._process.start()
        self.port = self._ports.get(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(timeout=10)


class QueueServer(_ServiceModel, InstantServer):
    """One request at a time, each taking ``fixed_s + per_image_s x batch``, first come first
    served, in a process of its own.

    The same deterministic single-server queue as :class:`ServiceModelServer` (arithmetic
    completion times, each reply sent at its completion time by the event loop), but with no
    thread per connection and no GIL shared with the test: on a busy machine the only extra
    latency is the loopback and the client's own. With ``per_image_s`` it reads each body for
    its batch size (row-orjson bodies cheaply, see ``count_rows``).
    """

    def __init__(self, fixed_s: float, per_image_s: float = 0.0) -> None:
        self.fixed_s = fixed_s
        self.per_image_s = per_image_s
        super().__init__()


def _reply(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class _InstantProtocol(FixedReplyProtocol):
    """Predictions for every POST (one, or with ``per_image_s`` one per row of the body); the
    status or metadata answer for a GET.

    With a service time, predictions queue: each completes ``fixed_s + per_image_s x batch``
    after the later of its arrival and the previous completion (shared by every connection),
    and is sent then.
    """

    STATUS = _reply("200 OK", orjson.dumps(_STATUS))
    METADATA = _reply("200 OK", orjson.dumps(_METADATA))
    fixed_s = 0.0
    per_image_s = 0.0
    free_at = 0.0  # loop time at which the single server finishes its queue (class-wide: one server)
    cost_s = 0.0  # the service time of the request answer() just read, for send()
    predictions: ClassVar[dict[int, bytes]] = {}  # the reply for each batch size, made once

    def answer(self, head: bytes, body: bytes) -> bytes:
        method, _, rest = head.partition(b" ")
        if method != b"post":
            self.cost_s = 0.0
            return self.METADATA if rest.partition(b" ")[0].rstrip(b"/").endswith(b"/metadata") else self.STATUS
        batch = count_rows(body) if self.per_image_s else 1
        self.cost_s = self.fixed_s + self.per_image_s * batch
        reply = self.predictions.get(batch)
        if reply is None:
            reply = self.predictions[batch] = _reply("200 OK", orjson.dumps({"predictions": [_PREDICTION] * batch}))
        return reply

    def send(self, reply: bytes) -> None:
        if not self.cost_s:
            super().send(reply)
            return
        loop = asyncio.get_running_loop()
        done = max(loop.time(), _InstantProtocol.free_at) + self.cost_s
        _InstantProtocol.free_at = done
        loop.call_at(done, super().send, reply)


def _serve_instantly(ports: multiprocessing.Queue[int], fixed_s: float, per_image_s: float) -> None:
    _InstantProtocol.fixed_s = fixed_s
    _InstantProtocol.per_image_s = per_image_s
    _InstantProtocol.keep_body = per_image_s > 0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_InstantProtocol, "127.0.0.1", 0, backlog=1024)
        ports.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())
