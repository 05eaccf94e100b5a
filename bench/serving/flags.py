"""tensorflow_model_server's command line as ``tfsbench serve`` takes it, and the translation between them.

``add_serve_arguments`` registers serve's flags (tensorflow_model_server's names and defaults,
booleans as ``--flag``, ``--flag=true``, ``--flag=false``) on any parser: the CLI's ``serve``
sub-command and the stand-in image's entry point use the same list. ``translate`` turns a
tensorflow_model_server argv into serve's: flags serve has pass on; other genuine
tensorflow_model_server flags are accepted and reported as ignored; anything else is refused, as
tensorflow_model_server refuses unknown flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import argtypes
from bench.api_names import GRPC_PORT, REST_PORT
from bench.errors import ConfigError

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT_S",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "Translation",
    "add_serve_arguments",
    "serve_options",
    "translate",
]

DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024
# Not tensorflow_model_server flags (libevent has its own limits): the embedded server's guards
# against clients that hold connections or send slowly.
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_HEADER_TIMEOUT_S = 30.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_DRAIN_TIMEOUT_S = 30.0
TRUE_WORDS = frozenset(("true", "1", "t", "yes"))
FALSE_WORDS = frozenset(("false", "0", "f", "no"))


def flag_bool(text: str) -> bool:
    """tensorflow_model_server's boolean values: true/false (also 1/0, t/f, yes/no)."""
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r} (true or false)")


def _add_bool(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(name, type=flag_bool, nargs="?", const=True, default=False, metavar="true|false", help=help)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """``tfsbench serve``'s flags, on ``parser``."""
    parser.add_argument(
        "--port",
        type=argtypes.port,
        default=GRPC_PORT,
        metavar="PORT",
        help="gRPC port (default 8500; 0 picks a free one)",
    )
    parser.add_argument(
        "--grpc_max_threads",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help="gRPC worker threads (default 4 x CPUs)",
    )
    parser.add_argument(
        "--grpc_socket_path", default="", metavar="PATH", help="also serve gRPC on this UNIX socket (default: none)"
    )
    parser.add_argument(
        "--grpc_channel_arguments",
        default="",
        metavar="K=V,...",
        help="gRPC server channel arguments, e.g. grpc.max_connection_age_ms=2000 (int32 values as ints)",
    )
    _add_bool(
        parser,
        "--enable_serialization_as_tensor_content",
        "gRPC Predict outputs as tensor_content instead of typed fields (default false)",
    )
    parser.add_argument(
        "--rest_api_port",
        type=argtypes.port,
        default=REST_PORT,
        metavar="PORT",
        help="HTTP port (default 8501; 0 picks a free one)",
    )
    parser.add_argument(
        "--rest_api_host", default="127.0.0.1", metavar="ADDR", help="address to bind (default 127.0.0.1)"
    )
    parser.add_argument("--model_name", default="default", metavar="NAME", help="model name (default: default)")
    parser.add_argument(
        "--model_base_path", type=Path, default=None, metavar="DIR", help="directory of numeric version dirs"
    )
    parser.add_argument(
        "--model_config_file", type=Path, default=None, metavar="FILE", help="text-format ModelServerConfig"
    )
    parser.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=int,
        default=0,
        metavar="S",
        help="re-read --model_config_file every S seconds and apply changes (default 0: read once)",
    )
    parser.add_argument(
        "--rest_api_num_threads",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help="HTTP worker threads (default 4 x CPUs)",
    )
    parser.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        metavar="MS",
        help="per-request deadline; <= 0 means none (default 30000)",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=int,
        default=1,
        metavar="S",
        help="rescan interval for new versions (default 1)",
    )
    _add_bool(parser, "--enable_batching", "merge concurrent predict calls into one model call (default false)")
    parser.add_argument(
        "--batching_parameters_file", type=Path, default=None, metavar="FILE", help="text-format BatchingParameters"
    )
    parser.add_argument(
        "--monitoring_config_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="text-format MonitoringConfig (Prometheus)",
    )
    _add_bool(parser, "--rest_api_enable_cors_support", "add CORS headers (default false)")
    _add_bool(
        parser,
        "--allow_version_labels_for_unavailable_models",
        "let version_labels name versions not loaded yet; without it every label fails at start-up, "
        "as in tensorflow_model_server (default false)",
    )
    _add_bool(
        parser,
        "--enable_signature_method_name_check",
        "require predict/classify/regress signatures to carry the matching method_name (default false)",
    )
    parser.add_argument(
        "--saved_model_tags",
        default="serve",
        metavar="TAGS",
        help="comma-separated tags of the MetaGraph to load from each SavedModel (default serve)",
    )
    parser.add_argument(
        "--rest_api_max_body_bytes",
        type=argtypes.positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="BYTES",
        help="refuse larger request bodies with 413 (default 536870912; not a tensorflow_model_server flag)",
    )
    parser.add_argument(
        "--rest_api_max_connections",
        type=argtypes.positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"open connections at most; more get 503 and close (default {DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--rest_api_header_timeout_seconds",
        type=argtypes.positive_float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        metavar="S",
        help=f"close a connection whose request head takes longer (default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--rest_api_idle_timeout_seconds",
        type=argtypes.positive_float,
        default=DEFAULT_IDLE_TIMEOUT_S,
        metavar="S",
        help=f"close a keep-alive connection idle this long (default {DEFAULT_IDLE_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--drain_timeout_seconds",
        type=argtypes.positive_float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        metavar="S",
        help=f"on SIGTERM/SIGINT, wait this long for in-flight requests (default {DEFAULT_DRAIN_TIMEOUT_S:g})",
    )


# tensorflow_model_server's flags (tensorflow_serving/model_servers/main.cc) and their kinds.
TFS_FLAGS: dict[str, str] = {
    "port": "int",
    "grpc_socket_path": "str",
    "rest_api_port": "int",
    "rest_api_num_threads": "int",
    "rest_api_timeout_in_ms": "int",
    "rest_api_enable_cors_support": "bool",
    "enable_batching": "bool",
    "allow_version_labels_for_unavailable_models": "bool",
    "batching_parameters_file": "str",
    "enable_per_model_batching_parameters": "bool",
    "model_config_file": "str",
    "model_config_file_poll_wait_seconds": "int",
    "model_name": "str",
    "model_base_path": "str",
    "num_load_threads": "int",
    "num_unload_threads": "int",
    "max_num_load_retries": "int",
    "load_retry_interval_micros": "int",
    "file_system_poll_wait_seconds": "int",
    "flush_filesystem_caches": "bool",
    "tensorflow_session_parallelism": "int",
    "tensorflow_session_config_file": "str",
    "tensorflow_intra_op_parallelism": "int",
    "tensorflow_inter_op_parallelism": "int",
    "use_alts_credentials": "bool",
    "ssl_config_file": "str",
    "platform_config_file": "str",
    "per_process_gpu_memory_fraction": "float",
    "saved_model_tags": "str",
    "grpc_channel_arguments": "str",
    "grpc_max_threads": "int",
    "enable_model_warmup": "bool",
    "num_request_iterations_for_warmup": "int",
    "version": "bool",
    "monitoring_config_file": "str",
    "remove_unused_fields_from_bundle_metagraph": "bool",
    "prefer_tflite_model": "bool",
    "num_tflite_pools": "int",
    "num_tflite_interpreters_per_pool": "int",
    "enable_signature_method_name_check": "bool",
    "xla_cpu_compilation_enabled": "bool",
    "enable_profiler": "bool",
    "mixed_precision": "str",
    "skip_initialize_tpu": "bool",
    "thread_pool_factory_config_file": "str",
    "enable_grpc_healthcheck_service": "bool",
}


@dataclass(frozen=True)
class Translation:
    """The ``tfsbench serve`` argv and the TF flags the stand-in accepted but does not implement."""

    serve_args: tuple[str, ...]
    ignored: tuple[str, ...]
    show_version: bool = False


def serve_options() -> dict[str, bool]:
    """``tfsbench serve``'s long options (without dashes) -> True for on/off switches."""
    parser = argparse.ArgumentParser(add_help=False)
    add_serve_arguments(parser)
    options: dict[str, bool] = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                # Switches: store_true (nargs 0) or serve's TF-style booleans (--flag[=true|false]).
                options[option[2:]] = action.nargs == 0 or (action.nargs == "?" and action.const is True)
    return options


def _split(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--name=value`` / ``--name value`` / ``--name`` into (name, value) pairs."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise ConfigError(f"unexpected argument '{arg}' (tensorflow_model_server takes only --flag=value)")
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq and TFS_FLAGS.get(name) not in (None, "bool") and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
            eq = "="
        pairs.append((name, value if eq else None))
        i += 1
    return pairs


def _check_value(name: str, kind: str, value: str | None) -> bool | str:
    if kind == "bool":
        if value is None or value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise ConfigError(f"invalid value '{value}' for boolean flag --{name}")
    if value is None:
        raise ConfigError(f"flag --{name} needs a value (--{name}=...)")
    try:
        {"int": int, "float": float, "str": str}[kind](value)
    except ValueError:
        raise ConfigError(f"invalid value '{value}' for {kind} flag --{name}") from None
    return value


def translate(argv: Sequence[str], options: dict[str, bool] | None = None) -> Translation:
    """tensorflow_model_server argv -> ``tfsbench serve`` argv (later flags win, as in TF)."""
    options = serve_options() if options is None else options
    values: dict[str, bool | str] = {}
    ignored: list[str] = []
    for name, raw in _split(argv):
        kind = TFS_FLAGS.get(name)
        if kind is None:
            if name not in options:
                raise ConfigError(f"unknown command line flag '{name}'")
            kind = "bool" if options[name] else "str"
        value = _check_value(name, kind, raw)
        if name == "version":
            continue
        if name in options:
            values[name] = value
        else:
            ignored.append(f"--{name}" + ("" if raw is None else f"={raw}"))
    serve_args: list[str] = []
    for name, value in values.items():
        if options[name]:
            serve_args += [f"--{name}"] if value is True else []
        elif value is not True:
            serve_args.append(f"--{name}={value}")
    show_version = any(name == "version" for name, _ in _split(argv))
    return Translation(tuple(serve_args), tuple(ignored), show_version)
