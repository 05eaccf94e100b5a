"""``tfsbench docker``: run tensorflow/serving (or the stand-in image) the way its docs do.

The command is built by pure functions (``docker_run_command``, ``server_flags``) so that what
``--dry-run`` prints is exactly what ``up`` runs, and unit tests can check it without an engine.
Everything else talks to the engine through the ``docker`` CLI: its messages are what users
already search for, and it needs no extra dependency. Failures become one-line
``DockerError``/``ConfigError`` messages that say what to do next.

Usage from Python (the sweep and the tests use this)::

    spec = ContainerSpec.create(Path("models/classifier"), image=STANDIN_TAG, host_port=0)
    running = up(spec, timeout_s=120)          # waits until the model is AVAILABLE
    ... load-test running.url ...
    meta = container_meta(running.name)        # image, digest, limits: for meta.json
    down(running.name)
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api_names import GRPC_PORT, REST_PORT
from bench.docker.engine import (
    check_port_free,
    container_inspect,
    docker,
    engine_version,
    first_line,
    image_inspect,
    tail_text,
)
from bench.docker.standin import STANDIN_TAG
from bench.errors import ConfigError, DockerError, ServerError
from bench.target.client import TFServingClient

DEFAULT_IMAGE = "tensorflow/serving"
DEFAULT_NAME = "tfsbench-serving"
CONTAINER_REST_PORT = REST_PORT
CONTAINER_GRPC_PORT = GRPC_PORT
# Where config files land inside the container: outside /models so a model named "config"
# cannot collide with them.
CONTAINER_CONFIG_DIR = "/etc/tfsbench"
LABEL = "tfsbench.role=serving"
_MEMORY = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything ``docker run`` needs; paths are absolute host paths.

    ``host_port`` 0 lets Docker pick a free host port (read back with ``docker port``);
    ``grpc_host_port`` publishes the container's gRPC port 8500 the same way (None: 8500, or a
    free one when ``host_port`` is 0, so a caller that lets Docker choose never collides on 8500).
    ``bind_address`` "0.0.0.0" publishes on every interface, written ``-p 8501:8501`` as in
    TF Serving's docs; the default publishes on loopback only.
    """

    image: str
    model_base_path: Path
    model_name: str
    name: str = DEFAULT_NAME
    host_port: int = CONTAINER_REST_PORT
    grpc_host_port: int | None = None
    bind_address: str = "127.0.0.1"
    cpus: float | None = None
    memory: str | None = None
    batching_parameters_file: Path | None = None
    monitoring_config_file: Path | None = None
    extra_server_args: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        model_base_path: Path,
        *,
        model_name: str | None = None,
        image: str = DEFAULT_IMAGE,
        **kwargs: Any,
    ) -> ContainerSpec:
        """A spec with the model path made absolute (Docker rejects relative bind sources)."""
        path = Path(model_base_path).expanduser().resolve()
        return cls(image=image, model_base_path=path, model_name=model_name or path.name, **kwargs)

    @property
    def model_target(self) -> str:
        """The model's directory inside the container, as tensorflow/serving expects it."""
        return f"/models/{self.model_name}"


def grpc_host_port(spec: ContainerSpec) -> int:
    """The host port asked for the container's gRPC port (0: Docker chooses)."""
    if spec.grpc_host_port is not None:
        return spec.grpc_host_port
    return 0 if spec.host_port == 0 else CONTAINER_GRPC_PORT


def publish_arg(spec: ContainerSpec, container_port: int = CONTAINER_REST_PORT) -> str:
    """The ``-p`` value: loopback by default, ``8501:8501`` for all interfaces as the docs write it."""
    port = spec.host_port if container_port == CONTAINER_REST_PORT else grpc_host_port(spec)
    host_port = "" if port == 0 else str(port)
    if spec.bind_address in ("", "0.0.0.0"):
        return f"{host_port}:{container_port}" if host_port else str(container_port)
    return f"{spec.bind_address}:{host_port}:{container_port}"


def server_flags(spec: ContainerSpec) -> list[str]:
    """tensorflow_model_server flags appended after the image name (the entrypoint passes them on)."""
    flags: list[str] = []
    if spec.batching_parameters_file is not None:
        flags += [
            "--enable_batching=true",
            f"--batching_parameters_file={CONTAINER_CONFIG_DIR}/batching_parameters.txt",
        ]
    if spec.monitoring_config_file is not None:
        flags.append(f"--monitoring_config_file={CONTAINER_CONFIG_DIR}/monitoring_config.txt")
    return flags + list(spec.extra_server_args)


def docker_run_command(spec: ContainerSpec) -> list[str]:
    """The exact ``docker run`` argv for ``spec`` (detached; ``down`` removes the container)."""
    argv = ["docker", "run", "-d", "--name", spec.name, "--label", LABEL, "-p", publish_arg(spec)]
    argv += ["-p", publish_arg(spec, CONTAINER_GRPC_PORT)]
    argv += ["--mount", f"type=bind,source={spec.model_base_path},target={spec.model_target}"]
    if spec.batching_parameters_file is not None:
        source = spec.batching_parameters_file
        argv += ["--mount", f"type=bind,source={source},target={CONTAINER_CONFIG_DIR}/batching_parameters.txt,readonly"]
    if spec.monitoring_config_file is not None:
        source = spec.monitoring_config_file
        argv += ["--mount", f"type=bind,source={source},target={CONTAINER_CONFIG_DIR}/monitoring_config.txt,readonly"]
    argv += ["-e", f"MODEL_NAME={spec.model_name}"]
    if spec.cpus is not None:
        argv += ["--cpus", f"{spec.cpus:g}"]
    if spec.memory is not None:
        argv += ["--memory", spec.memory]
    return [*argv, spec.image, *server_flags(spec)]


def format_command(argv: Sequence[str]) -> str:
    """``argv`` as one shell line that can be pasted back into a terminal."""
    return shlex.join(argv)


# --- validation -------------------------------------------------------------------------------


def model_versions(model_base_path: Path) -> list[int]:
    """Numeric version directories under ``model_base_path``, as tensorflow/serving scans them."""
    return sorted(int(p.name) for p in model_base_path.iterdir() if p.is_dir() and p.name.isdigit())


def check_model_dir(model_base_path: Path) -> int:
    """The version that will be served; ConfigError when the directory cannot be served."""
    if not model_base_path.is_dir():
        raise ConfigError(
            f"model directory {model_base_path} does not exist; export one with: tfsbench export --out models"
        )
    versions = model_versions(model_base_path)
    if not versions:
        found = ", ".join(sorted(p.name for p in model_base_path.iterdir())[:5]) or "nothing"
        raise ConfigError(
            f"{model_base_path} has no numeric version directory (found: {found}); tensorflow/serving "
            f"needs {model_base_path}/<version>/saved_model.pb, e.g. tfsbench export --out {model_base_path.parent}"
        )
    latest = max((p for p in model_base_path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not any((latest / f).is_file() for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise ConfigError(f"{latest} has no saved_model.pb: it is not a SavedModel version directory")
    return versions[-1]


def validate_memory(text: str) -> str:
    """A Docker memory limit such as ``2g`` or ``512m``."""
    if not _MEMORY.match(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a memory size (examples: 512m, 2g)")
    return text


def validate_name(text: str) -> str:
    """A valid container name."""
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a container name (letters, digits, _ . -)")
    return text


def require_image(image: str) -> dict[str, Any]:
    """The local image's inspect data; DockerError saying how to get it when it is missing."""
    found = image_inspect(image)
    if found is not None:
        return found
    if image.split(":")[0] == STANDIN_TAG.split(":")[0]:
        hint = f"build it with: tfsbench docker build-standin --tag {image}"
    else:
        hint = (
            f"pull it with 'docker pull {image}' (needs registry access), or build the offline stand-in with "
            f"'tfsbench docker build-standin' and pass --image {STANDIN_TAG}"
        )
    raise DockerError(f"image {image} is not present locally: {hint}")


# --- up / down / logs -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningContainer:
    """A started container whose model answered AVAILABLE."""

    name: str
    container_id: str
    image: str
    url: str
    host_port: int
    model_name: str
    model_version: int
    startup_s: float
    grpc_target: str = ""  # host:port of the published gRPC port


def _published_port(name: str, container_port: int = CONTAINER_REST_PORT) -> int:
    proc = docker(["port", name, f"{container_port}/tcp"], timeout_s=30)
    # "127.0.0.1:49153" (and maybe an IPv6 line): the port is after the last colon.
    return int(proc.stdout.strip().splitlines()[0].rsplit(":", 1)[1])


def wait_available(name: str, url: str, model_name: str, timeout_s: float) -> int:
    """Poll until the model is AVAILABLE; return its version. DockerError (with log tail) otherwise."""

    def still_running() -> None:
        info = container_inspect(name)
        if info is None:
            raise DockerError(f"container {name} disappeared while starting (was it removed by someone else?)")
        if not info["State"]["Running"]:
            code = info["State"]["ExitCode"]
            oom = " (killed: out of memory, raise --memory)" if info["State"].get("OOMKilled") else ""
            raise DockerError(
                f"container {name} exited with code {code}{oom} before model '{model_name}' was AVAILABLE; "
                f"log tail: {tail_text(name)}"
            )

    with TFServingClient(url, model_name, timeout_s=2.0) as client:
        try:
            return client.wait_until_available(timeout_s, check=still_running)
        except ServerError as exc:
            raise DockerError(
                f"model '{model_name}' in container {name} was not AVAILABLE within {timeout_s:g} s "
                f"({exc}; raise --timeout); log tail: {tail_text(name)}"
            ) from None


def preflight(spec: ContainerSpec) -> int:
    """Every check that can fail before ``docker run``; returns the model version to be served."""
    version = check_model_dir(spec.model_base_path)
    for path in (spec.batching_parameters_file, spec.monitoring_config_file):
        if path is not None and not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
    engine_version()
    require_image(spec.image)
    existing = container_inspect(spec.name)
    if existing is not None:
        raise DockerError(
            f"a container named {spec.name} already exists ({existing['State']['Status']}): stop it with "
            f"'tfsbench docker down --name {spec.name}', or choose another --name"
        )
    check_port_free(spec.bind_address, spec.host_port)
    check_port_free(spec.bind_address, grpc_host_port(spec))
    return version


def up(
    spec: ContainerSpec, *, timeout_s: float = 120.0, on_started: Callable[[str], None] | None = None
) -> RunningContainer:
    """Start the container and wait until its model is AVAILABLE; on failure remove it again.

    ``on_started`` gets the container id once ``docker run`` succeeded (before the wait).
    """
    preflight(spec)
    started = time.monotonic()
    proc = docker(docker_run_command(spec)[1:], check=False, timeout_s=120)
    if proc.returncode != 0:
        message = first_line(proc.stderr)
        # docker leaves a "Created" container behind when starting fails.
        docker(["rm", "-f", spec.name], check=False, timeout_s=60)
        if "port is already allocated" in message or "address already in use" in message:
            raise DockerError(
                f"port {spec.host_port} or {grpc_host_port(spec)} is already in use ({message}): pick others with "
                "--port / --grpc-port (0 lets Docker choose)"
            )
        raise DockerError(f"docker run failed: {message}")
    container_id = proc.stdout.strip()
    if on_started is not None:
        on_started(container_id)
    try:
        host_port = _published_port(spec.name)
        host = "127.0.0.1" if spec.bind_address in ("", "0.0.0.0") else spec.bind_address
        url = f"http://{host}:{host_port}"
        grpc_target = f"{host}:{_published_port(spec.name, CONTAINER_GRPC_PORT)}"
        version = wait_available(spec.name, url, spec.model_name, timeout_s)
    except BaseException:
        # Keep nothing half-started around: the error already carries the log tail.
        docker(["rm", "-f", spec.name], check=False, timeout_s=60)
        raise
    return RunningContainer(
        name=spec.name,
        container_id=container_id,
        image=spec.image,
        url=url,
        host_port=host_port,
        model_name=spec.model_name,
        model_version=version,
        startup_s=time.monotonic() - started,
        grpc_target=grpc_target,
    )


def down(name: str, *, stop_timeout_s: int = 10) -> bool:
    """Stop (SIGTERM, then SIGKILL after ``stop_timeout_s``) and remove; False if there was none."""
    if container_inspect(name) is None:
        return False
    docker(["stop", "-t", str(stop_timeout_s), name], timeout_s=stop_timeout_s + 60)
    docker(["rm", name], timeout_s=60)
    return True


def logs(name: str, tail: int | None = None) -> str:
    """The container's output so far (stdout and stderr interleaved as Docker stored them)."""
    if container_inspect(name) is None:
        raise DockerError(f"no container named {name} (start one with: tfsbench docker up)")
    args = ["logs", *(["--tail", str(tail)] if tail is not None else []), name]
    proc = docker(args, timeout_s=60)
    return proc.stdout + proc.stderr


def container_meta(name: str) -> dict[str, Any]:
    """What a run's meta.json records about the container: image, digest, limits, engine."""
    info = container_inspect(name)
    if info is None:
        raise DockerError(f"no container named {name}")
    image = image_inspect(info["Image"]) or {}
    host = info.get("HostConfig", {})
    nano_cpus = host.get("NanoCpus") or 0
    return {
        "kind": "docker",
        "container": name,
        "container_id": info["Id"],
        "image": info["Config"]["Image"],
        "image_id": info["Image"],
        # RepoDigests exist only for pulled images; a locally built stand-in has just its id.
        "image_digests": image.get("RepoDigests") or [],
        "image_labels": image.get("Config", {}).get("Labels") or {},
        "cpus": nano_cpus / 1e9 if nano_cpus else None,
        "memory_bytes": host.get("Memory") or None,
        "args": info.get("Args") or [],
        "engine_version": engine_version(),
    }


@contextlib.contextmanager
def serving_container(
    spec: ContainerSpec, *, timeout_s: float = 180.0
) -> Iterator[tuple[RunningContainer, dict[str, Any]]]:
    """Start ``spec``, yield it with its ``container_meta`` (plus startup facts), always stop it."""
    running = up(spec, timeout_s=timeout_s)
    try:
        meta = container_meta(running.name)
        meta.update(
            url=running.url,
            model_version=running.model_version,
            startup_s=round(running.startup_s, 3),
            command=format_command(docker_run_command(spec)),
        )
        yield running, meta
    finally:
        down(running.name)
