"""``tfsbench docker up|down|logs|build-standin`` and ``tfsbench sweep --docker IMAGE``.

The container itself is ``bench.docker.launcher`` (pure command builders, up/down, readiness);
this module turns the command line into specs and prints what happened and what to do next.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.api_names import PROMETHEUS_PATH
from bench.docker.launcher import (
    ContainerSpec,
    check_model_dir,
    docker_run_command,
    down,
    format_command,
    logs,
    serving_container,
    up,
)
from bench.docker.loadgen import LOADGEN_TAG, build_loadgen
from bench.docker.standin import SOURCE_LABEL, STANDIN_TAG, build_standin
from bench.errors import ConfigError
from bench.serving.metrics import monitoring_config_text


def is_standin(meta: dict[str, Any]) -> bool:
    """Whether a container's image is our stand-in (its results come from the embedded server)."""
    return SOURCE_LABEL in (meta.get("image_labels") or {})


def sweep_in_container(args: argparse.Namespace, run: Callable[..., int]) -> int:
    """``tfsbench sweep --docker IMAGE``: start IMAGE, sweep it through its published port, stop it.

    ``run`` is the sweep handler; it gets ``args`` with ``host`` set to the container's URL (and
    ``grpc_target`` to its published gRPC port, unless given) and the container's description
    for meta.json (image, digest, limits) as ``extra_meta``.
    """
    if args.host:
        raise ConfigError("--host and --docker exclude each other: --docker serves the model itself")
    base = args.model_base_path or Path("models") / args.model_name
    spec = ContainerSpec.create(
        base,
        model_name=args.model_name,
        image=args.docker,
        name=f"tfsbench-sweep-{secrets.token_hex(3)}",
        host_port=0,
        cpus=args.cpus,
        memory=args.memory,
    )
    print(f"sweep: starting {spec.image} ({format_command(docker_run_command(spec))})", file=sys.stderr)
    with serving_container(spec, timeout_s=args.docker_timeout) as (running, meta):
        print(f"sweep: {running.url} serves '{running.model_name}' after {running.startup_s:.1f} s", file=sys.stderr)
        args.host = running.url
        if getattr(args, "grpc_target", None) is None and running.grpc_target:
            args.grpc_target = running.grpc_target  # its published gRPC port (8500 inside)
        if not args.server_kind and not is_standin(meta):
            # tensorflow/serving sends no Server header to tell it apart; the image says it.
            args.server_kind = "tensorflow-serving"
        try:
            return run(args, extra_meta={"docker": meta})
        finally:
            print(f"sweep: stopping container {running.name}", file=sys.stderr)


def spec_from_args(args: argparse.Namespace, state_dir: Path | None = None) -> ContainerSpec:
    """The ContainerSpec for ``tfsbench docker up`` arguments.

    ``--monitoring`` needs a config file on the host; it is written to ``state_dir``
    (or only named there, for ``--dry-run``).
    """
    spec = ContainerSpec.create(
        args.model_base_path,
        model_name=args.model_name,
        image=args.image,
        name=args.name,
        host_port=args.port,
        grpc_host_port=getattr(args, "grpc_port", None),
        bind_address=args.bind,
        cpus=args.cpus,
        memory=args.memory,
        batching_parameters_file=args.batching_parameters.resolve() if args.batching_parameters else None,
    )
    if args.monitoring:
        directory = (state_dir or _state_dir()) / spec.name
        spec = replace(spec, monitoring_config_file=directory / "monitoring_config.txt")
    return spec


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tfsbench" / "docker"


def run_docker(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Handler of ``tfsbench docker ACTION``."""
    if args.action == "build-standin":
        result = build_standin(args.tag or STANDIN_TAG, rebuild=args.rebuild, log=out)
        out(result.summary())
        return 0
    if args.action == "build-loadgen":
        result = build_loadgen(args.tag or LOADGEN_TAG, standin_tag=args.standin_tag, rebuild=args.rebuild, log=out)
        how = "reused existing image" if result.reused else "built"
        out(
            f"{result.tag}: {how} in {result.build_s:.1f} s, {result.size_bytes / 1e6:.0f} MB; "
            "run it with: docker-compose -f deploy/compose.yaml up (README: Run it at scale)"
        )
        return 0
    if args.action == "down":
        if args.dry_run:
            out(format_command(["docker", "stop", args.name]) + " && " + format_command(["docker", "rm", args.name]))
            return 0
        existed = down(args.name)
        out(f"stopped and removed container {args.name}" if existed else f"no container named {args.name}")
        return 0
    if args.action == "logs":
        out(logs(args.name, tail=args.tail).rstrip("\n"))
        return 0
    spec = spec_from_args(args)
    if args.dry_run:
        # The command may be meant for another machine, so a model directory that cannot be
        # served here is a warning, not an error.
        try:
            check_model_dir(spec.model_base_path)
        except ConfigError as exc:
            print(f"tfsbench docker: warning: {exc}", file=sys.stderr)
        out(format_command(docker_run_command(spec)))
        return 0
    if spec.monitoring_config_file is not None:
        spec.monitoring_config_file.parent.mkdir(parents=True, exist_ok=True)
        spec.monitoring_config_file.write_text(monitoring_config_text())
    started = (
        f"started {spec.image} as container {spec.name} (model {spec.model_name} from {spec.model_base_path}); "
        f"waiting up to {args.timeout:g} s for it to be AVAILABLE"
    )
    running = up(spec, timeout_s=args.timeout, on_started=lambda _id: out(started))
    out(f"model '{running.model_name}' version {running.model_version} is AVAILABLE after {running.startup_s:.1f} s")
    out(f"REST API: {running.url}/v1/models/{running.model_name}")
    out(f"gRPC API: {running.grpc_target} (PredictionService, ModelService)")
    if spec.monitoring_config_file is not None:
        out(f"Prometheus: {running.url}{PROMETHEUS_PATH}")
    out(f"load-test it: tfsbench sweep --host {running.url}")
    out(f"stop it:      tfsbench docker down --name {running.name}")
    return 0
