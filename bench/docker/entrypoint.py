"""``tensorflow_model_server`` inside the stand-in image: TF flags in, ``tfsbench serve`` out.

The stand-in image must accept whatever a user would pass to tensorflow/serving's image
(``docker run IMAGE --enable_batching=true --tensorflow_intra_op_parallelism=2 ...``). This
module translates tensorflow_model_server's flag syntax (``--name=value``, booleans as
``--flag``/``--flag=true``/``--flag=false``) into ``tfsbench serve`` arguments:

- flags ``tfsbench serve`` has (same names) are passed on;
- other genuine tensorflow_model_server flags are accepted and reported as ignored;
- anything else is refused, as tensorflow_model_server refuses unknown flags.

It is also the container's tiny init: as PID 1 it starts the server as a child, forwards
SIGTERM/SIGINT to it and reaps it, so ``docker stop`` ends the container at once (a PID 1
without handlers would ignore SIGTERM and wait for SIGKILL).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bench.errors import ConfigError

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
_TRUE = {"true", "1", "t", "yes"}
_FALSE = {"false", "0", "f", "no"}


@dataclass(frozen=True)
class Translation:
    """The ``tfsbench serve`` argv and the TF flags the stand-in accepted but does not implement."""

    serve_args: tuple[str, ...]
    ignored: tuple[str, ...]
    show_version: bool = False


def serve_options() -> dict[str, bool]:
    """``tfsbench serve``'s long options (without dashes) -> True for on/off switches."""
    from bench.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = subparsers.choices["serve"]
    options: dict[str, bool] = {}
    for action in serve._actions:
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
        if value is None or value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
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


def container_serve_args(translation: Translation, options: dict[str, bool]) -> list[str]:
    """Serve arguments for a container: listen on every interface so the published port reaches it."""
    args = list(translation.serve_args)
    if "rest_api_host" in options and not any(a.startswith("--rest_api_host") for a in args):
        args.append("--rest_api_host=0.0.0.0")
    return args


def run_child(argv: Sequence[str]) -> int:
    """Run ``argv`` as a child, forwarding termination signals; return its exit status.

    A child ended by a signal we forwarded counts as a clean stop (0), so ``docker stop``
    reports exit code 0 as it does for a server that shuts down on SIGTERM.
    """
    child = subprocess.Popen(list(argv))
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        # As PID 1 we also adopt orphans; their statuses are reaped here and dropped.
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                return 0 if -code in forwarded else 128 - code
            return 0 if code in (130, 143) and forwarded else code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tensorflow_model_server`` in the stand-in image."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = serve_options()
        translation = translate(argv, options)
    except ConfigError as exc:
        print(f"tensorflow_model_server (tfsbench stand-in): {exc}", file=sys.stderr)
        return 1
    if translation.show_version:
        from bench import __version__

        print(f"TensorFlow ModelServer: tfsbench-standin {__version__} (server: tfsbench serve)")
        return 0
    for flag in translation.ignored:
        print(f"tensorflow_model_server (tfsbench stand-in): accepted but not implemented: {flag}", file=sys.stderr)
    command = [sys.executable, "-m", "bench", "serve", *container_serve_args(translation, options)]
    print("tensorflow_model_server (tfsbench stand-in): " + " ".join(command[1:]), file=sys.stderr, flush=True)
    return run_child(command)


if __name__ == "__main__":
    sys.exit(main())
