"""The Docker engine through its CLI: errors that say what to do, inspect data, logs.

Everything talks to the engine through the ``docker`` CLI: its messages are what users already
search for, and it needs no extra dependency. Failures become one-line ``DockerError`` messages.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

from bench.errors import DockerError

LOG_TAIL_LINES = 8


def docker_binary() -> str:
    """The docker CLI on PATH, or a DockerError saying how to get one."""
    found = shutil.which("docker")
    if found is None:
        raise DockerError(
            "docker is not installed (no 'docker' on PATH): install Docker (Debian: apt-get install docker.io) "
            "or use the embedded server: tfsbench serve --model_base_path models/classifier"
        )
    return found


def first_line(text: str) -> str:
    """The last non-empty line of a command's output: where docker puts its error."""
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
            f"the Docker daemon is not reachable ({first_line(proc.stderr)}): start it (dockerd, or "
            "'systemctl start docker') and make sure this user may use its socket"
        )
    if check and proc.returncode != 0:
        raise DockerError(f"docker {' '.join(args[:2])} failed: {first_line(proc.stderr)}")
    return proc


def engine_version() -> str:
    """The daemon's version; DockerError if docker is missing or the daemon is unreachable."""
    proc = docker(["version", "--format", "{{.Server.Version}}"], check=False, timeout_s=30)
    if proc.returncode != 0:
        raise DockerError(
            f"the Docker daemon is not reachable ({first_line(proc.stderr)}): start it (dockerd, or "
            "'systemctl start docker') and make sure this user may use its socket"
        )
    return proc.stdout.strip()


def image_inspect(image: str) -> dict[str, Any] | None:
    """``docker image inspect`` of a local image, or None if it is not present locally."""
    proc = docker(["image", "inspect", image], check=False, timeout_s=30)
    if proc.returncode != 0:
        return None
    info: dict[str, Any] = json.loads(proc.stdout)[0]
    return info


def container_inspect(name: str) -> dict[str, Any] | None:
    """``docker container inspect`` data, or None when no such container exists."""
    proc = docker(["container", "inspect", name], check=False, timeout_s=30)
    if proc.returncode != 0:
        return None
    info: dict[str, Any] = json.loads(proc.stdout)[0]
    return info


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


def tail_text(name: str) -> str:
    """The last lines of the container's output as one line, for error messages."""
    tail = log_tail(name)
    return " | ".join(tail) if tail else "(the container printed nothing)"
