"""The embedded TF-Serving-compatible server (``tfsbench serve``) and its test/embedding API.

One process, as ``tensorflow_model_server``: a model store (loading, polling, labels), the predict
core (lookup, run with deadline, batching, metrics) and front ends over it; REST is the HTTP front
end (``bench.serving.http``) calling the REST API (``bench.serving.rest_api``), gRPC the
PredictionService and ModelService (``bench.serving.grpc_api``) on ``--port``; both share the
store, the core's batching and its metrics. Request processing is bounded by
``--rest_api_num_threads`` (REST) and ``--grpc_max_threads`` (gRPC); model runs release the GIL inside TensorFlow, so
concurrent requests use every core.

Embedding (tests, demo, benchmarks)::

    with EmbeddedServer(model_base_path="models/classifier", model_name="classifier") as server:
        requests.post(server.url + "/v1/models/classifier:predict", data=body)

(``grpc_port=0`` adds the gRPC front end: ``.grpc_target``), or as a process:
``tfsbench serve --port 0 --rest_api_port 0 ...`` prints
``tfsbench serve: listening on gRPC 127.0.0.1:PORT and http://127.0.0.1:PORT`` once every model
is AVAILABLE (the REST URL last, so ``line.rsplit(":", 1)`` is still its port). SIGINT/SIGTERM
stop accepting on both, let in-flight requests finish, and exit 0.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.api_names import REST_PORT
from bench.errors import ConfigError, ModelError
from bench.serving.batching import BatchingParameters, parse_batching_parameters
from bench.serving.flags import (
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
)
from bench.serving.grpc_api import GrpcFrontEnd, parse_channel_arguments
from bench.serving.http import HttpFrontEnd, Reply
from bench.serving.json_response import encode_error
from bench.serving.metrics import Metrics, parse_monitoring_config
from bench.serving.model_config import ModelConfig, parse_model_server_config
from bench.serving.model_store import ModelStore
from bench.serving.predict_core import PredictCore
from bench.serving.rest_api import RestApi
from bench.serving.saved_model import LoadedVersion

__all__ = ["EmbeddedServer", "ServerOptions", "run_serve"]

log = logging.getLogger("tfsbench.serve")

LISTENING_PREFIX = "tfsbench serve: listening on "


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``tfsbench serve`` configures (flag names of tensorflow_model_server)."""

    models: tuple[ModelConfig, ...]
    host: str = "127.0.0.1"
    port: int = REST_PORT
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
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    method_name_check: bool = False  # --enable_signature_method_name_check
    saved_model_tags: tuple[str, ...] = ("serve",)
    grpc_port: int | None = None  # --port; None: no gRPC front end (embedding), 0: a free port
    grpc_max_threads: int = 4 * (os.cpu_count() or 1)
    tensor_content_outputs: bool = False  # --enable_serialization_as_tensor_content
    grpc_socket_path: str = ""  # --grpc_socket_path: also listen on unix:PATH
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()  # --grpc_channel_arguments, parsed


def tune_malloc() -> bool:
    """Keep freed multi-MB buffers in the heap instead of giving them back to the kernel.

    Every request allocates a body buffer and decode temporaries of several MB; glibc serves
    those with fresh ``mmap`` pages by default, and first-touch page faults (the kernel zeroing
    each page) then cost about a third of a decode. Raising the mmap threshold to its maximum
    (32 MiB on 64-bit) and the trim threshold lets later requests reuse the same pages.
    Process-wide; a no-op (False) where glibc's ``mallopt`` is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


class EmbeddedServer:
    """The server in background threads, for tests and embedding (a context manager).

    ``EmbeddedServer(model_base_path=..., model_name="classifier", port=0)`` serves one model;
    ``model_config_file=...`` or ``options=ServerOptions(...)`` serve several. ``start()``
    returns once every model is AVAILABLE (raises ``ModelError`` if one fails to load); ``.url``,
    ``.port``, ``.metrics``, ``.store``, ``.core``. ``stop()`` drains in-flight requests.
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
        **overrides: Any,
    ) -> None:
        if options is None:
            if model_config_file is not None:
                models = tuple(parse_model_server_config(Path(model_config_file)))
                overrides.setdefault("config_file", Path(model_config_file))
            elif model_base_path is not None:
                models = (ModelConfig(model_name, Path(model_base_path)),)
            else:
                raise ConfigError("EmbeddedServer needs model_base_path, model_config_file or options")
            options = ServerOptions(models=models, host=host, port=port, **overrides)
        self.options = options
        self.metrics = Metrics()
        self.store = ModelStore(
            list(options.models),
            poll_wait_s=options.poll_wait_s,
            config_file=options.config_file,
            config_poll_wait_s=options.config_poll_wait_s,
            allow_unavailable_labels=options.allow_unavailable_labels,
            loader=partial(LoadedVersion, tags=options.saved_model_tags),
        )
        slots = max(options.num_threads, 1)
        self.core = PredictCore(
            self.store,
            self.metrics,
            timeout_ms=options.timeout_ms,
            batching=options.batching,
            run_threads=slots,
            method_name_check=options.method_name_check,
        )
        self.api = RestApi(self.core, cors=options.cors, prometheus_path=options.prometheus_path)
        self._http = HttpFrontEnd(
            options.host,
            options.port,
            self._handle_http,
            options.max_body_bytes,
            num_threads=slots,  # --rest_api_num_threads bounds concurrent request processing
            max_connections=options.max_connections,
            header_timeout_s=options.header_timeout_s,
            idle_timeout_s=options.idle_timeout_s,
        )
        self._grpc = None
        if options.grpc_port is not None:
            self._grpc = GrpcFrontEnd(
                self.core,
                options.host,
                options.grpc_port,
                max_threads=options.grpc_max_threads,
                as_content=options.tensor_content_outputs,
                socket_path=options.grpc_socket_path,
                channel_arguments=options.grpc_channel_arguments,
            )
        self._started = False

    @property
    def grpc_port(self) -> int | None:
        """The bound gRPC port (None without the gRPC front end)."""
        return self._grpc.port if self._grpc is not None else None

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` for ``grpc.insecure_channel`` (None without the gRPC front end)."""
        return self._grpc.target if self._grpc is not None else None

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        host = self.options.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def start(self) -> EmbeddedServer:
        """Load every model (AVAILABLE after warm-up), then listen; returns self."""
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
        self._http.start()
        if self._grpc is not None:
            try:
                self._grpc.start()
            except BaseException:
                self._http.stop(0)
                raise
        self.store.start_polling()
        self._started = True
        return self

    @property
    def http(self) -> HttpFrontEnd:
        return self._http

    def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop accepting, finish in-flight requests (up to ``drain_timeout_s``, default the
        options'), release everything."""
        if not self._started:
            return
        self._started = False
        drain = self.options.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        # Both front ends stop accepting at once and drain side by side.
        grpc_stopped = self._grpc.stop(drain) if self._grpc is not None else None
        self._http.stop(drain)
        if grpc_stopped is not None:
            grpc_stopped.wait(drain + 1.0)
        self.store.stop()
        self.core.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle_http(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """On one of the front end's ``--rest_api_num_threads`` pool threads."""
        try:
            return self.api.handle(method, path, headers, body)
        except Exception as exc:  # a bug is answered, logged, and never takes the connection down
            log.exception("internal error for %s %s", method, path)
            return Reply(500, (("Content-Type", "application/json"),), encode_error(f"Internal error: {exc}"))


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
        max_connections=getattr(args, "rest_api_max_connections", DEFAULT_MAX_CONNECTIONS),
        header_timeout_s=float(getattr(args, "rest_api_header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_S)),
        idle_timeout_s=float(getattr(args, "rest_api_idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT_S)),
        drain_timeout_s=float(getattr(args, "drain_timeout_seconds", DEFAULT_DRAIN_TIMEOUT_S)),
        method_name_check=bool(getattr(args, "enable_signature_method_name_check", False)),
        saved_model_tags=_tags(getattr(args, "saved_model_tags", "serve")),
        grpc_port=args.port,
        grpc_max_threads=getattr(args, "grpc_max_threads", None) or 4 * (os.cpu_count() or 1),
        tensor_content_outputs=bool(getattr(args, "enable_serialization_as_tensor_content", False)),
        grpc_socket_path=getattr(args, "grpc_socket_path", "") or "",
        grpc_channel_arguments=parse_channel_arguments(getattr(args, "grpc_channel_arguments", "") or ""),
    )


def _tags(text: str) -> tuple[str, ...]:
    """``--saved_model_tags serve,gpu`` -> ("serve", "gpu")."""
    tags = tuple(t.strip() for t in text.split(",") if t.strip())
    if not tags:
        raise ConfigError("--saved_model_tags names no tag (e.g. --saved_model_tags serve)")
    return tags


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
        print(f"{LISTENING_PREFIX}gRPC {server.grpc_target} and {server.url}", flush=True)
        print(f"tfsbench serve: models {names} AVAILABLE; Ctrl-C or SIGTERM to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print("tfsbench serve: stopping, draining in-flight requests", file=sys.stderr, flush=True)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
