"""The embedded TF-Serving-compatible REST server (``tfsbench serve``) and its test/embedding API.

``tensorflow_model_server --rest_api_port=...`` answers HTTP/1.1 on a thread pool; so does this:
a ``ThreadingHTTPServer`` (one thread per keep-alive connection) whose request processing is
bounded by ``--rest_api_num_threads``, in front of ``bench.serving.rest_api.RestApi``. Model runs
release the GIL inside TensorFlow, so concurrent requests use both cores.

Embedding (tests, demo, benchmarks)::

    with EmbeddedServer(model_base_path="models/classifier", model_name="classifier") as server:
        requests.post(server.url + "/v1/models/classifier:predict", data=body)

or as a process: ``tfsbench serve --rest_api_port 0 ...`` prints
``tfsbench serve: listening on http://127.0.0.1:PORT`` once every model is AVAILABLE.
SIGINT/SIGTERM stop accepting connections, let in-flight requests finish, and exit 0.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.errors import ConfigError
from bench.serving.batching import Batcher, BatchingParameters, parse_batching_parameters
from bench.serving.json_tensor import encode_error
from bench.serving.metrics import Metrics, parse_monitoring_config
from bench.serving.model_store import ModelConfig, ModelStore, parse_model_server_config
from bench.serving.rest_api import Reply, RestApi

__all__ = ["EmbeddedServer", "ServerOptions", "run_serve"]

log = logging.getLogger("tfsbench.serve")

LISTENING_PREFIX = "tfsbench serve: listening on "
DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024
_IDLE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``tfsbench serve`` configures (flag names of tensorflow_model_server)."""

    models: tuple[ModelConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8501
    num_threads: int = 4 * (os.cpu_count() or 1)
    timeout_ms: int = 30000
    poll_wait_s: float = 1.0
    config_file: Path | None = None  # re-read every config_poll_wait_s seconds when that is > 0
    config_poll_wait_s: float = 0.0
    allow_unavailable_labels: bool = False  # --allow_version_labels_for_unavailable_models
    batching: BatchingParameters | None = None
    prometheus_path: str | None = None
    cors: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    extra: dict = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: EmbeddedServer) -> None:
        self.owner = owner
        self.draining = False
        self.connections: dict[int, list] = {}  # id -> [socket, busy]
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
        self._entry: list = [self.connection, False]
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
        limit = self.server.owner.options.max_body_bytes
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
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
        limit = self.server.owner.options.max_body_bytes
        self._plain_error(413, f"Request body of {length} bytes exceeds the server limit of {limit} bytes")

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        reply = self.server.owner.api_handle(self.command, self.path, self.headers, body)
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
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD" and reply.body:
            self._headers_buffer.append(reply.body)
        self.flush_headers()


def tune_malloc() -> bool:
    """Keep freed multi-MB buffers in the heap instead of giving them back to the kernel.

    Every request allocates a body buffer and decode temporaries of several MB; glibc serves
    those with fresh ``mmap`` pages by default, and first-touch page faults (the kernel zeroing
    each page) then cost about a third of a decode. Raising the mmap threshold to its maximum
    (32 MiB on 64-bit) and the trim threshold lets later requests reuse the same pages.
    Process-wide; a no-op (False) where glibc's ``mallopt`` is not available.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body; like tensorflow/serving, a body that fails to inflate becomes empty."""
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or not inflater.eof:
            return b""
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError):
        return b""


class EmbeddedServer:
    """The REST server in a background thread, for tests and embedding (a context manager).

    ``EmbeddedServer(model_base_path=..., model_name="classifier", port=0)`` serves one model;
    ``model_config_file=...`` or ``options=ServerOptions(...)`` serve several. ``start()``
    returns once every model is AVAILABLE (raises ``ModelError`` if one fails to load); ``.url``,
    ``.port``, ``.metrics``, ``.store``. ``stop()`` drains in-flight requests.
    """

    def __init__(
        self,
        model_base_path: str | Path | None = None,
        model_name: str = "classifier",
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        model_config_file: str | Path | None = None,
        options: ServerOptions | None = None,
        **overrides: object,
    ) -> None:
        if options is None:
            if model_config_file is not None:
                models = tuple(parse_model_server_config(Path(model_config_file)))
                overrides.setdefault("config_file", Path(model_config_file))
            elif model_base_path is not None:
                models = (ModelConfig(model_name, Path(model_base_path)),)
            else:
                raise ConfigError("EmbeddedServer needs model_base_path, model_config_file or options")
            options = ServerOptions(models=models, host=host, port=port, **overrides)  # type: ignore[arg-type]
        self.options = options
        self.metrics = Metrics()
        self.store = ModelStore(
            list(options.models),
            poll_wait_s=options.poll_wait_s,
            config_file=options.config_file,
            config_poll_wait_s=options.config_poll_wait_s,
            allow_unavailable_labels=options.allow_unavailable_labels,
        )
        self._batchers: dict[tuple[str, int], Batcher] = {}
        self._batchers_lock = threading.Lock()
        self.api = RestApi(
            self.store,
            self.metrics,
            timeout_ms=options.timeout_ms,
            cors=options.cors,
            prometheus_path=options.prometheus_path,
            runner=self._run_model if options.batching else None,
            run_threads=max(options.num_threads, 1),
        )
        self._slots = threading.BoundedSemaphore(max(options.num_threads, 1))
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- properties -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() first"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.options.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> EmbeddedServer:
        """Load every model (AVAILABLE after warm-up), then listen; returns self."""
        from bench.errors import ModelError

        tune_malloc()
        self.store.poll_once()
        if not self.store.all_available():
            problems = []
            for name in self.store.model_names:
                try:
                    rows = self.store.status(name)
                    problems += [f"{name} v{r.version}: {r.error_message}" for r in rows if r.error_code != "OK"]
                except Exception:
                    problems.append(f"{name}: no version found")
            raise ModelError("no servable version: " + "; ".join(problems))
        server_class = _Server6 if ":" in self.options.host else _Server
        try:
            self._httpd = server_class((self.options.host, self.options.port), self)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.options.host}:{self.options.port}: {exc.strerror}") from exc
        self.store.start_polling()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="tfsbench-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting, finish in-flight requests (up to ``drain_timeout_s``), release everything."""
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
        self.store.stop()
        for batcher in self._batchers.values():
            batcher.close()
        self.api.close()
        self._httpd = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request path -----------------------------------------------------------------------------

    def api_handle(self, method: str, path: str, headers: object, body: bytes) -> Reply:
        with self._slots:  # --rest_api_num_threads bounds concurrent request processing
            try:
                return self.api.handle(method, path, headers, body)  # type: ignore[arg-type]
            except Exception as exc:  # a bug must not kill the connection thread silently
                log.exception("internal error for %s %s", method, path)
                return Reply(500, (("Content-Type", "application/json"),), encode_error(f"Internal error: {exc}"))

    def _run_model(self, loaded, signature, tensors):  # type: ignore[no-untyped-def]
        key = (loaded.name, loaded.version)
        with self._batchers_lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = self._batchers[key] = Batcher(
                    loaded.run, self.options.batching or BatchingParameters(), self.metrics, loaded.name
                )
        return batcher.run(signature, tensors)


# -- tfsbench serve ---------------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """Validate ``tfsbench serve`` flags into ``ServerOptions`` (ConfigError, exit code 2)."""
    if args.model_config_file is not None:
        models = tuple(parse_model_server_config(args.model_config_file))
    elif args.model_base_path is not None:
        if not args.model_base_path.is_dir():
            raise ConfigError(f"--model_base_path {args.model_base_path} is not a directory")
        models = (ModelConfig(args.model_name, args.model_base_path),)
    else:
        raise ConfigError("give --model_base_path (with --model_name) or --model_config_file")
    if args.rest_api_port != 0 and args.rest_api_port == args.port:
        raise ConfigError(f"--rest_api_port and --port must differ (both {args.port})")
    batching = None
    if args.enable_batching:
        batching = parse_batching_parameters(args.batching_parameters_file)
    elif args.batching_parameters_file is not None:
        raise ConfigError("--batching_parameters_file needs --enable_batching")
    prometheus = parse_monitoring_config(args.monitoring_config_file) if args.monitoring_config_file else None
    return ServerOptions(
        models=models,
        host=args.rest_api_host,
        port=args.rest_api_port,
        num_threads=args.rest_api_num_threads or 4 * (os.cpu_count() or 1),
        timeout_ms=args.rest_api_timeout_in_ms,
        poll_wait_s=float(args.file_system_poll_wait_seconds),
        config_file=args.model_config_file,
        config_poll_wait_s=float(getattr(args, "model_config_file_poll_wait_seconds", 0) or 0),
        allow_unavailable_labels=bool(getattr(args, "allow_version_labels_for_unavailable_models", False)),
        batching=batching,
        prometheus_path=prometheus,
        cors=args.rest_api_enable_cors_support,
        max_body_bytes=getattr(args, "rest_api_max_body_bytes", None) or DEFAULT_MAX_BODY_BYTES,
    )


def run_serve(args: argparse.Namespace) -> int:
    """``tfsbench serve``: serve until SIGINT/SIGTERM, then drain and exit 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = options_from_args(args)
    server = EmbeddedServer(options=options)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        names = ", ".join(c.name for c in options.models)
        print(f"{LISTENING_PREFIX}{server.url}", flush=True)
        print(f"tfsbench serve: models {names} AVAILABLE; Ctrl-C or SIGTERM to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print("tfsbench serve: stopping, draining in-flight requests", file=sys.stderr, flush=True)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
