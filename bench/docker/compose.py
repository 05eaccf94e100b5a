"""Serving replicas from deploy/compose.yaml, driven from here: ``docker-compose up --scale serving=N``.

``tfsbench capacity --replicas 1,2`` (bench.commands.scaling) starts N replicas of the
``serving`` service only, each with the same CPU share (``SERVING_CPUS``), finds each replica's
published REST port (loopback, ephemeral: ``docker-compose port --index=I serving 8501``) and
addresses them one by one; the load generator runs on this machine. Scaling up keeps the
replicas already running; the project is taken down (containers and network) on the way out.

Usage::

    with ComposeServing(image="tfsbench/serving-standin:local", model_dir=Path("models/classifier"),
                        cpus=1.0) as compose:
        urls = compose.scale(2)       # ['http://127.0.0.1:49153', 'http://127.0.0.1:49154']
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from bench import SOURCE_ROOT
from bench.errors import DockerError

COMPOSE_FILE = SOURCE_ROOT / "deploy" / "compose.yaml"
SERVICE = "serving"
REST_PORT = 8501


def compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        raise DockerError(
            "--replicas drives deploy/compose.yaml and needs docker-compose (apt-get install docker-compose)"
        )
    return found


class ComposeServing:
    """The ``serving`` service of a compose project of its own, scaled on demand, removed at exit."""

    def __init__(
        self,
        *,
        image: str,
        model_dir: Path,
        model_name: str = "classifier",
        cpus: float = 1.0,
        compose_file: Path = COMPOSE_FILE,
        project: str | None = None,
    ) -> None:
        if not compose_file.is_file():
            raise DockerError(f"no compose file at {compose_file}")
        if not model_dir.is_dir():
            raise DockerError(f"--model-base-path {model_dir} is not a directory (tfsbench export --out models)")
        self.project = project or f"tfsbench-scaling-{secrets.token_hex(3)}"
        self.command = [compose_binary(), "-f", str(compose_file), "-p", self.project]
        self.env = {
            **os.environ,
            "SERVING_IMAGE": image,
            "MODEL_DIR": str(model_dir.resolve()),
            "MODEL_NAME": model_name,
            "SERVING_CPUS": f"{cpus:g}",
        }
        self.image, self.cpus = image, cpus

    def _run(self, *args: str, timeout_s: float = 300) -> str:
        try:
            proc = subprocess.run(
                [*self.command, *args], env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DockerError(f"docker-compose {args[0]} did not finish within {timeout_s:g} s") from exc
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise DockerError(f"docker-compose {' '.join(args[:2])} failed: {last}")
        return proc.stdout

    def scale(self, replicas: int) -> list[str]:
        """Run exactly ``replicas`` serving containers; their REST URLs on this machine, in index order."""
        self._run("up", "-d", "--no-deps", "--scale", f"{SERVICE}={replicas}", SERVICE)
        urls = []
        for index in range(1, replicas + 1):
            address = self._run("port", f"--index={index}", SERVICE, str(REST_PORT), timeout_s=60).strip()
            host, _, port = address.rpartition(":")
            if not port.isdigit():
                raise DockerError(f"replica {index} publishes no REST port ({address!r})")
            urls.append(f"http://{host.replace('0.0.0.0', '127.0.0.1')}:{port}")
        return urls

    def down(self) -> None:
        self._run("down", "--volumes", "--remove-orphans", "-t", "10")

    def __enter__(self) -> ComposeServing:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()
