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
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, DockerError

DEFAULT_IMAGE = "tensorflow/serving"
STANDIN_TAG = "tfsbench/serving-standin:local"
DEFAULT_NAME = "tfsbench-serving"
CONTAINER_REST_PORT = 8501
CONTAINER_GRPC_PORT = 8500
# Where config files land inside the container: outside /models so a model named "config"
# cannot collide with them.
CONTAINER_CONFIG_DIR = "/etc/tfsbench"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
LABEL = "tfsbench.role=serving"
LOG_TAIL_LINES = 8
_MEMORY = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything ``docker run`` needs; paths are absolute host paths.

    ``host_port`` 0 lets Docker pick a free host port (read back with ``docker port``).
    ``bind_address`` "0.0.0.0" publishes on every interface, written ``-p 8501:8501`` as in
    TF Serving's docs; the default publishes on loopback only.
    """

    image: str
    model_base_path: Path
    model_name: str
    name: str = DEFAULT_NAME
    host_port: int = CONTAINER_REST_PORT
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


def publish_arg(spec: ContainerSpec) -> str:
    """The ``-p`` value: loopback by default, ``8501:8501`` for all interfaces as the docs write it."""
    host_port = "" if spec.host_port == 0 else str(spec.host_port)
    if spec.bind_address in ("", "0.0.0.0"):
        return f"{host_port}:{CONTAINER_REST_PORT}" if host_port else str(CONTAINER_REST_PORT)
    return f"{spec.bind_address}:{host_port}:{CONTAINER_REST_PORT}"


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


def monitoring_config_text(path: str = PROMETHEUS_PATH) -> str:
    """A text-format MonitoringConfig that turns on the Prometheus endpoint."""
    return f'prometheus_config {{\n  enable: true\n  path: "{path}"\n}}\n'


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


# --- talking to the engine --------------------------------------------------------------------


def docker_binary() -> str:
    """The docker CLI on PATH, or a DockerError saying how to get one."""
    found = shutil.which("docker")
    if found is None:
        raise DockerError(
            "docker is not installed (no 'docker' on PATH): install Docker (Debian: apt-get install docker.io) "
            "or use the embedded server: tfsbench serve --model_base_path models/classifier"
        )
    return found


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _daemon_unreachable(stderr: str) -> bool:
    text = stderr.lower()
    return "cannot connect to the docker daemon" in text or ("docker.sock" in text and "permission denied" in text)


def docker(args: Sequence[str], *, check: bool = True, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``docker ARGS``; DockerError (one line) when the engine is missing, unreachable or fails."""
    argv = [docker_binary(), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"'docker {' '.join(args[:2])}' did not finish within {timeout_s:g} s") from exc
    if proc.returncode != 0 and _daemon_unreachable(proc.stderr):
        raise DockerError(
            f"the Docker daemon is not reachable ({_first_line(proc.stderr)}): start it (dockerd, or "
            "'systemctl start docker') and make sure this user may use its socket"
        )
    if check and proc.returncode != 0:
        raise DockerError(f"docker {' '.join(args[:2])} failed: {_first_line(proc.stderr)}")
    return proc


def engine_version() -> str:
    """The daemon's version; DockerError if docker is missing or the daemon is unreachable."""
    proc = docker(["version", "--format", "{{.Server.Version}}"], check=False, timeout_s=30)
    if proc.returncode != 0:
        raise DockerError(
            f"the Docker daemon is not reachable ({_first_line(proc.stderr)}): start it (dockerd, or "
            "'systemctl start docker') and make sure this user may use its socket"
        )
    return proc.stdout.strip()


def image_inspect(image: str) -> dict[str, Any] | None:
    """``docker image inspect`` of a local image, or None if it is not present locally."""
    proc = docker(["image", "inspect", image], check=False, timeout_s=30)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


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


def container_inspect(name: str) -> dict[str, Any] | None:
    """``docker container inspect`` data, or None when no such container exists."""
    proc = docker(["container", "inspect", name], check=False, timeout_s=30)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def check_port_free(address: str, port: int) -> None:
    """DockerError when something on this host already listens on ``address:port``."""
    if port == 0:
        return
    host = "0.0.0.0" if address in ("", "0.0.0.0") else address
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DockerError(
                f"port {port} on {host} is already in use ({exc.strerror}): pick another with --port "
                "(0 lets Docker choose), or stop what uses it (tfsbench docker down --name ...)"
            ) from exc


def log_tail(name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of the container's output (stdout and stderr together)."""
    proc = docker(["logs", "--tail", str(lines), name], check=False, timeout_s=30)
    text = proc.stdout + proc.stderr
    return [line.rstrip()[:300] for line in text.splitlines() if line.strip()][-lines:]


def _tail_text(name: str) -> str:
    tail = log_tail(name)
    return " | ".join(tail) if tail else "(the container printed nothing)"


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


def _published_port(name: str) -> int:
    proc = docker(["port", name, f"{CONTAINER_REST_PORT}/tcp"], timeout_s=30)
    # "127.0.0.1:49153" (and maybe an IPv6 line): the port is after the last colon.
    return int(proc.stdout.strip().splitlines()[0].rsplit(":", 1)[1])


def _model_state(url: str, model_name: str, timeout_s: float) -> tuple[str | None, int | None]:
    """(state, version) of the newest version from the REST status endpoint; (None, None) if no answer."""
    import requests  # light, but only ``up`` needs it

    try:
        reply = requests.get(f"{url}/v1/models/{model_name}", timeout=timeout_s)
        body = reply.json()
    except (requests.RequestException, ValueError):
        return None, None
    statuses = (body.get("model_version_status") or []) if isinstance(body, dict) else []
    for status in statuses:
        if status.get("state") == "AVAILABLE":
            return "AVAILABLE", int(status.get("version", 0))
    return (statuses[0].get("state"), None) if statuses else (None, None)


def wait_available(name: str, url: str, model_name: str, timeout_s: float) -> int:
    """Poll until the model is AVAILABLE; return its version. DockerError (with log tail) otherwise."""
    deadline = time.monotonic() + timeout_s
    state: str | None = None
    while True:
        info = container_inspect(name)
        if info is None:
            raise DockerError(f"container {name} disappeared while starting (was it removed by someone else?)")
        if not info["State"]["Running"]:
            code = info["State"]["ExitCode"]
            oom = " (killed: out of memory, raise --memory)" if info["State"].get("OOMKilled") else ""
            raise DockerError(
                f"container {name} exited with code {code}{oom} before model '{model_name}' was AVAILABLE; "
                f"log tail: {_tail_text(name)}"
            )
        state, version = _model_state(url, model_name, timeout_s=2.0)
        if state == "AVAILABLE" and version is not None:
            return version
        if time.monotonic() >= deadline:
            raise DockerError(
                f"model '{model_name}' in container {name} was not AVAILABLE within {timeout_s:g} s "
                f"(last state: {state or 'no answer'}; raise --timeout); log tail: {_tail_text(name)}"
            )
        time.sleep(0.25)


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
        message = _first_line(proc.stderr)
        # docker leaves a "Created" container behind when starting fails.
        docker(["rm", "-f", spec.name], check=False, timeout_s=60)
        if "port is already allocated" in message or "address already in use" in message:
            raise DockerError(
                f"port {spec.host_port} is already in use ({message}): pick another with --port (0 lets Docker choose)"
            )
        raise DockerError(f"docker run failed: {message}")
    container_id = proc.stdout.strip()
    if on_started is not None:
        on_started(container_id)
    try:
        host_port = _published_port(spec.name)
        host = "127.0.0.1" if spec.bind_address in ("", "0.0.0.0") else spec.bind_address
        url = f"http://{host}:{host_port}"
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
def serving_container(spec: ContainerSpec, *, timeout_s: float = 180.0) -> Iterator[tuple[RunningContainer, dict]]:
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


def is_standin(meta: dict[str, Any]) -> bool:
    """Whether a container's image is our stand-in (its results come from the embedded server)."""
    from bench.docker.standin import SOURCE_LABEL

    return SOURCE_LABEL in (meta.get("image_labels") or {})


def sweep_in_container(args: argparse.Namespace, run: Callable[..., int]) -> int:
    """``tfsbench sweep --docker IMAGE``: start IMAGE, sweep it through its published port, stop it.

    ``run`` is the sweep handler; it gets ``args`` with ``host`` set to the container's URL and
    the container's description for meta.json (image, digest, limits) as ``extra_meta``.
    """
    import secrets

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
        if not args.server_kind and not is_standin(meta):
            # tensorflow/serving sends no Server header to tell it apart; the image says it.
            args.server_kind = "tensorflow-serving"
        try:
            return run(args, extra_meta={"docker": meta})
        finally:
            print(f"sweep: stopping container {running.name}", file=sys.stderr)


# --- CLI --------------------------------------------------------------------------------------


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
        bind_address=args.bind,
        cpus=args.cpus,
        memory=args.memory,
        batching_parameters_file=args.batching_parameters.resolve() if args.batching_parameters else None,
    )
    if args.monitoring:
        directory = (state_dir or _state_dir()) / spec.name
        spec = _replace(spec, monitoring_config_file=directory / "monitoring_config.txt")
    return spec


def _replace(spec: ContainerSpec, **changes: Any) -> ContainerSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _state_dir() -> Path:
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tfsbench" / "docker"


def run_docker(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Handler of ``tfsbench docker ACTION``."""
    if args.action == "build-standin":
        from bench.docker.standin import build_standin

        result = build_standin(args.tag, rebuild=args.rebuild, log=out)
        out(result.summary())
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
    if spec.monitoring_config_file is not None:
        out(f"Prometheus: {running.url}{PROMETHEUS_PATH}")
    out(f"load-test it: tfsbench sweep --host {running.url}")
    out(f"stop it:      tfsbench docker down --name {running.name}")
    return 0
