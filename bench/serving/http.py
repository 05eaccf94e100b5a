"""The HTTP/1.1 front end of the embedded server: connections, request bodies, replies on the wire.

``tensorflow_model_server --rest_api_port=...`` answers HTTP/1.1 on a thread pool; so does this:
a ``ThreadingHTTPServer`` (one thread per keep-alive connection) in front of a handler
``(method, path, headers, body) -> Reply`` (``bench.serving.rest_api.RestApi``). It reads bodies
(Content-Length or chunked, gzip inflated, 413 over the limit), writes each reply in one send with
TCP_NODELAY, and drains in-flight requests on stop. HTTP only: no JSON, no models.
"""

from __future__ import annotations

import gzip
import logging
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.errors import ConfigError
from bench.serving.json_response import encode_error

__all__ = ["HttpFrontEnd", "Reply"]

log = logging.getLogger("tfsbench.serve")

_IDLE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, headers, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


# Request headers are the handler's HTTPMessage (email.message.Message); large bodies stay a bytearray.
Handle = Callable[[str, str, "Mapping[str, str] | Message[str, str]", bytes | bytearray], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: HttpFrontEnd) -> None:
        self.owner = owner
        self.draining = False
        self.connections: dict[int, list[Any]] = {}  # id -> [socket, busy]
        self.conn_lock = threading.Lock()
        self.idle = threading.Condition(self.conn_lock)
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A broken client connection is not a server error; never print a traceback for it.
        log.debug("connection error from %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tfsbench-serve"
    sys_version = ""
    timeout = _IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        # Small responses must leave at once: with Nagle on, a reply written after the client's
        # last segment waits for its delayed ACK (~40 ms on Linux) on a keep-alive connection.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (or already closed): nothing to tune
        self._entry: list[Any] = [self.connection, False]
        with self.server.conn_lock:
            self.server.connections[id(self)] = self._entry

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.connections.pop(id(self), None)
                self.server.idle.notify_all()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            with self.server.conn_lock:
                self._entry[1] = True
            try:
                if len(self.raw_requestline) > 65536:
                    self.requestline = self.request_version = self.command = ""
                    self.send_error(414)
                    return
                if not self.parse_request():
                    return
                self._serve()
                self.wfile.flush()
            finally:
                with self.server.conn_lock:
                    self._entry[1] = False
                    self.server.idle.notify_all()
                if self.server.draining:
                    self.close_connection = True
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def _read_body(self) -> bytes | bytearray | None:
        """The request body (inflated if gzip), or None after answering 4xx/413 ourselves."""
        limit = self.server.owner.max_body_bytes
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        body: bytes | bytearray
        if chunked:
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._plain_error(400, "bad chunked encoding")
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > limit:
                    self._too_large(total, unread=size)
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            body = b"".join(parts)
        else:
            raw = self.headers.get("Content-Length")
            try:
                length = int(raw) if raw is not None else 0
                if length < 0:
                    raise ValueError(raw)
            except ValueError:
                self._plain_error(400, "bad Content-Length")
                return None
            if length > limit:
                self._too_large(length, unread=length)
                return None
            # readinto one preallocated buffer: no chunk list and join for multi-MB bodies.
            body = bytearray(length)
            view, got = memoryview(body), 0
            while got < length:
                n = self.rfile.readinto(view[got:])
                if not n:
                    self.close_connection = True
                    return None
                got += n
            body = bytes(body) if length < 65536 else body
        if "gzip" in self.headers.get("Content-Encoding", ""):
            body = _gunzip(body, limit)
        return body

    def _plain_error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._write(Reply(status, (("Content-Type", "application/json"),), encode_error(message)))

    def _too_large(self, length: int, unread: int = 0) -> None:
        # Read and drop the rest of the body first: a client still sending when we close would
        # see a broken pipe instead of our 413.
        while unread > 0:
            chunk = self.rfile.read(min(unread, 1 << 20))
            if not chunk:
                break
            unread -= len(chunk)
        limit = self.server.owner.max_body_bytes
        self._plain_error(413, f"Request body of {length} bytes exceeds the server limit of {limit} bytes")

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        reply = self.server.owner.handle(self.command, self.path, self.headers, body)
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for key, value in reply.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection or self.server.draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        # Status line, headers and body in one send: two small writes would be two segments, the
        # second held back by Nagle until the client ACKs the first.
        # _headers_buffer is BaseHTTPRequestHandler's private list of pending bytes: not in typeshed.
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if self.command != "HEAD" and reply.body:
            self._headers_buffer.append(reply.body)  # type: ignore[attr-defined]
        self.flush_headers()


class HttpFrontEnd:
    """The HTTP listener in a background thread: reads requests, hands them to ``handle``, writes replies.

    ``handle(method, path, headers, body) -> Reply`` is the REST API (``RestApi.handle`` bounded by
    the server's processing slots). Bodies over ``max_body_bytes`` get 413 without reaching it.
    """

    def __init__(self, host: str, port: int, handle: Handle, max_body_bytes: int) -> None:
        self.host = host
        self.requested_port = port
        self.handle = handle
        self.max_body_bytes = max_body_bytes
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() first"
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Bind and serve; ``ConfigError`` when the address cannot be bound."""
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._httpd = server_class((self.host, self.requested_port), self)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.host}:{self.requested_port}: {exc.strerror}") from exc
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="tfsbench-http", daemon=True
        )
        self._thread.start()

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout_s``), close the rest."""
        httpd = self._httpd
        if httpd is None:
            return
        httpd.shutdown()  # stop accepting new connections
        deadline = time.monotonic() + drain_timeout_s
        with httpd.conn_lock:
            httpd.draining = True
            while time.monotonic() < deadline:
                pending = False
                for entry in list(httpd.connections.values()):
                    sock, busy = entry
                    if busy or _readable(sock):
                        pending = True  # a request is being served or has just arrived
                    elif len(entry) == 2:
                        entry.append("closed")
                        try:  # idle keep-alive connection: wake its reader so the thread ends
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                if not pending:
                    break
                httpd.idle.wait(0.05)
        httpd.server_close()
        self._httpd = None


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _gunzip(body: bytes | bytearray, limit: int) -> bytes:
    """Inflate a gzip body; like tensorflow/serving, a body that fails to inflate becomes empty."""
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or not inflater.eof:
            return b""
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError):
        return b""
