"""The HTTP/1.1 front end of the embedded server: aiohttp's server on an event loop, model work on a pool.

``tensorflow_model_server --rest_api_port=...`` answers HTTP/1.1 from libevent; this is aiohttp's
low-level server (its C parser, llhttp, does request lines, headers, chunked bodies and
keep-alive) in one background thread, in front of a handler ``(method, path, headers, body) ->
Reply`` (``bench.serving.rest_api.RestApi``) that runs on a pool of ``num_threads`` threads.
What this module adds:

* body limit: a declared ``Content-Length`` over ``max_body_bytes`` gets 413 before a byte is
  read (with ``Expect: 100-continue`` instead of ``100 Continue``); a chunked body gets 413 as
  soon as its chunks pass the limit; a gzip body is inflated on the pool, inside the request's
  processing slot, and gets 413 once the inflated bytes pass the limit. Bodies are read as they
  arrive (aiohttp pauses the socket past 128 KiB buffered), so nothing is committed for bytes
  that have not come;
* transfer codings other than ``chunked`` (and any on HTTP/1.0) are refused, not guessed at;
* connections are capped (503 and close past ``max_connections``); a request head must arrive
  within ``header_timeout_s``, an idle keep-alive connection closes after ``idle_timeout_s``;
* ``stop()`` stops accepting, closes idle connections, lets in-flight requests finish (up to
  the drain timeout) and closes the rest, with any number of connections open.

aiohttp writes status line, headers and body in one send on a TCP_NODELAY socket, so keep-alive
clients never wait for a delayed ACK. HTTP only: no JSON, no models.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import select
import threading
import weakref
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bench.errors import ConfigError
from bench.serving.flags import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS
from bench.serving.json_response import encode_error

__all__ = ["HttpFrontEnd", "Reply"]

log = logging.getLogger("tfsbench.serve")

# After a 413 or 400 the rest of the body is read and dropped for this long (so a client that is
# still sending sees the reply, not a reset), then the connection closes.
_LINGER_S = 5.0
_READ_CHUNK = 1 << 16
SERVER_NAME = "tfsbench-serve"
_JSON = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, headers, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


# The REST API: called on a pool thread with the request target as sent (path and query).
Handle = Callable[[str, str, Mapping[str, str], bytes], Reply]


class _TooLarge(Exception):
    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs a client that breaks the protocol or goes away as an error with a traceback;
    for a server under load tests that is the client's problem: debug level."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


class _Connection(RequestHandler):
    """aiohttp's connection protocol with a deadline for each request head.

    aiohttp's keep-alive timer closes a connection that has not completed a request head
    within the idle timeout; this adds the shorter header timeout, armed by the first byte of a
    head and disarmed when the head is complete (the request handler starts).
    """

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.front: HttpFrontEnd = manager.front
        self.heads = 0  # request heads completed on this connection
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and not self._request_in_progress and not self._messages:
            self._head_timer = self._loop.call_later(self.front.header_timeout_s, self._head_overdue, self.heads)
        super().data_received(data)

    def head_complete(self) -> None:
        self.heads += 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self, heads_when_armed: int) -> None:
        self._head_timer = None
        if self.heads == heads_when_armed and not self._request_in_progress and self.transport is not None:
            log.debug("closing a connection whose request head took over %.0f s", self.front.header_timeout_s)
            self.force_close()

    def busy(self) -> bool:
        """A request is being served, parsed, or waits unread in the socket."""
        if self._request_in_progress or self._messages or self._head_timer is not None:
            return True
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        sock = transport.get_extra_info("socket")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.front._live.discard(self)
        super().connection_lost(exc)


class _Refuse(asyncio.Protocol):
    """A connection past the cap: one 503 and close, no parser, no task."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = encode_error("Too many connections; try again later")
        head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        assert isinstance(transport, asyncio.Transport)
        transport.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        transport.close()


class _Server(web.Server):
    def __init__(self, front: HttpFrontEnd, **kwargs: Any) -> None:
        super().__init__(front._serve, **kwargs)
        self.front = front

    def __call__(self) -> RequestHandler:  # the protocol factory, once per accepted socket
        front = self.front
        if len(front._live) >= front.max_connections or front._draining:
            return _Refuse()  # type: ignore[return-value]  # any asyncio protocol will do
        connection = _Connection(self, loop=self._loop, **self._kwargs)
        front._live.add(connection)
        return connection


class HttpFrontEnd:
    """The HTTP listener in a background thread: reads requests, hands them to ``handle``, writes replies.

    ``handle(method, path, headers, body) -> Reply`` is the REST API; it runs on a pool of
    ``num_threads`` threads (``--rest_api_num_threads``), so at most that many requests are
    processed (inflated, decoded, run) at once. Bodies over ``max_body_bytes`` get 413 without
    reaching it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handle: Handle,
        max_body_bytes: int,
        *,
        num_threads: int = 4,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.handle = handle
        self.max_body_bytes = max_body_bytes
        self.num_threads = max(num_threads, 1)
        self.max_connections = max(max_connections, 1)
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._live: weakref.WeakSet[_Connection] = weakref.WeakSet()  # connected, not yet lost
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._web: _Server | None = None
        self._listener: asyncio.Server | None = None
        self._port = 0

    @property
    def port(self) -> int:
        assert self._listener is not None, "start() first"
        return self._port

    def connection_count(self) -> int:
        """Connections open now (for tests and the soak benchmark)."""
        return len(self._live)

    def server_sockets(self) -> list[Any]:
        """The server side of each open connection (``socket``-like; for transport tests)."""
        return [c.transport.get_extra_info("socket") for c in list(self._live) if c.transport is not None]

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve; ``ConfigError`` when the address cannot be bound."""
        self._pool = concurrent.futures.ThreadPoolExecutor(self.num_threads, thread_name_prefix="tfsbench-rest")
        loop = asyncio.new_event_loop()
        self._loop = loop
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="tfsbench-http", daemon=True)
        self._thread.start()
        try:
            started.result()
        except OSError as exc:
            self._pool.shutdown(wait=False)
            raise ConfigError(f"cannot listen on {self.host}:{self.requested_port}: {exc.strerror}") from exc

    async def _listen(self) -> None:
        asyncio.get_running_loop().set_exception_handler(_log_loop_error)
        self._web = _Server(
            self,
            keepalive_timeout=self.idle_timeout_s,
            lingering_time=_LINGER_S,
            auto_decompress=False,  # gzip is inflated on the pool, counted against the limit
            access_log=None,
            logger=_QuietLog(log, {}),
            max_line_size=65536,  # request targets as long as the threaded server took
            # Bytes buffered per connection before aiohttp pauses the socket: a batch-1 body
            # (~200 KB) arrives without a pause/resume round; big bodies stream in 1 MiB steps.
            read_bufsize=1 << 20,
        )
        self._listener = await asyncio.get_running_loop().create_server(
            self._web, self.host, self.requested_port, reuse_address=True, backlog=128
        )
        self._port = int(self._listener.sockets[0].getsockname()[1])

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish (up to
        ``drain_timeout_s``), then close everything."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = None
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(drain_timeout_s), loop).result(drain_timeout_s + 10)
        except Exception:  # a drain that failed must still release the port and the threads
            log.warning("HTTP front end did not drain cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, drain_timeout_s: float) -> None:
        assert self._listener is not None
        assert self._web is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        self._draining = True  # replies from now on close their connection
        self._listener.close()  # no new connections
        # Idle keep-alive connections close now. A request already sent (unread in the socket,
        # or its head half parsed) counts as in flight: its client must get the reply.
        while loop.time() < deadline:
            pending = False
            for connection in list(self._live):
                if connection.busy():
                    pending = True
                else:
                    connection.force_close()
            if not pending:
                break
            await asyncio.sleep(0.02)
        # What is still running gets the rest of the drain time, then is cut off.
        await self._web.shutdown(max(deadline - loop.time(), 0.0))
        await self._listener.wait_closed()

    # -- one request ----------------------------------------------------------------------------

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        if isinstance(connection, _Connection):
            connection.head_complete()
        refused = self._check_framing(request)
        if refused is not None:
            return refused
        try:
            body = await self._read_body(request)
        except _TooLarge as exc:
            return self._too_large(exc.length)
        loop = asyncio.get_running_loop()
        assert self._pool is not None
        gzip = "gzip" in request.headers.get("Content-Encoding", "")
        reply = await loop.run_in_executor(
            self._pool, self._process, request.method, request.raw_path, request.headers, body, gzip
        )
        response = web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        response.headers["Server"] = SERVER_NAME
        if self._draining:
            response.force_close()
        return response

    def _process(self, method: str, path: str, headers: Mapping[str, str], body: bytes, gzip: bool) -> Reply:
        """On a pool thread: inflate (bounded), then the REST API."""
        if gzip:
            try:
                body = _gunzip(body, self.max_body_bytes)
            except _TooLarge as exc:
                return Reply(413, _JSON, self._too_large_text(exc.length, inflated=True))
        return self.handle(method, path, headers, body)

    def _check_framing(self, request: web.BaseRequest) -> web.Response | None:
        """Refuse what a proxy and this server could read differently (request smuggling)."""
        codings = request.headers.getall("Transfer-Encoding", [])
        if codings:
            if request.version < (1, 1):
                return _close(400, "Transfer-Encoding is not allowed on HTTP/1.0")
            if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
                return _close(501, f"Transfer-Encoding {', '.join(codings)} is not supported (only chunked)")
        lengths = request.headers.getall("Content-Length", [])
        if len(set(lengths)) > 1:
            return _close(400, "conflicting Content-Length headers")
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return self._too_large(length)  # declared too large: nothing is read (no 100 Continue)
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            transport = request.transport
            if transport is not None:
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The body as it arrives, 413 (``_TooLarge``) once it passes the limit."""
        limit = self.max_body_bytes
        stream = request.content
        first = await stream.readany()
        if not first:
            return b""
        if stream.is_eof() and len(first) <= limit:
            return first  # a body that came in one read: no copy
        parts, total = [first], len(first)
        while True:
            if total > limit:
                raise _TooLarge(total)
            chunk = await stream.readany()
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
        if total > limit:
            raise _TooLarge(total)
        return b"".join(parts)

    def _too_large_text(self, length: int, inflated: bool = False) -> bytes:
        what = "Inflated request body" if inflated else "Request body"
        more = "more than " if inflated else ""
        return encode_error(f"{what} of {more}{length} bytes exceeds the server limit of {self.max_body_bytes} bytes")

    def _too_large(self, length: int) -> web.Response:
        response = web.Response(status=413, body=self._too_large_text(length), headers=_JSON)
        response.headers["Server"] = SERVER_NAME
        response.force_close()
        return response


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One line for what the event loop cannot hand to a request (e.g. ``accept()`` failing with
    EMFILE, which asyncio retries after a second instead of spinning), not a traceback each time."""
    exc = context.get("exception")
    log.warning("HTTP event loop: %s%s", context.get("message", "error"), f": {exc}" if exc else "")


def _close(status: int, message: str) -> web.Response:
    response = web.Response(status=status, body=encode_error(message), headers=_JSON)
    response.headers["Server"] = SERVER_NAME
    response.force_close()
    return response


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body, ``_TooLarge`` past ``limit`` bytes; like tensorflow/serving, a body
    that fails to inflate (corrupt, truncated) becomes empty."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return b""
    if len(out) > limit:
        raise _TooLarge(limit)
    return out if inflater.eof else b""
