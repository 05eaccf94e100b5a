"""One server per batching configuration, for ``tfsbench tune``: the embedded server or a container.

Each start gets the configuration's own ``batching_parameters.txt`` (none for batching off) and
is ready when its model is AVAILABLE (through TFServingClient); it is stopped when the
configuration's searches end, whatever happened. The embedded server runs as a child process,
so its CPU time and peak memory are read from the OS (:class:`ServerUsage`); a container's are
not known here.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.commands.demo import embedded_server
from bench.commands.tune_space import BatchingConfig
from bench.docker.launcher import ContainerSpec, serving_container


@dataclass(frozen=True)
class ServerTarget:
    """Where the tuned servers run: the embedded server, or ``image`` in Docker with CPU/memory limits."""

    model_base_path: Path
    model_name: str
    image: str | None = None  # None: the embedded server
    cpus: float | None = None
    memory: str | None = None
    timeout_s: float = 180.0

    @property
    def kind(self) -> str:
        return "embedded" if self.image is None else "docker"


@dataclass
class ServerUsage:
    """The embedded server's CPU share (% of one core) and peak RSS over a configuration's searches."""

    pid: int | None
    cpu_s_start: float = 0.0
    wall_start: float = 0.0
    cpu_pct: float | None = None
    peak_rss_mb: float | None = None

    def start(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.pid)
            times = proc.cpu_times()
            self.cpu_s_start = times.user + times.system
            self.wall_start = time.monotonic()

    def finish(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            proc = psutil.Process(self.pid)
            times = proc.cpu_times()
            elapsed = time.monotonic() - self.wall_start
            if elapsed > 0:
                self.cpu_pct = round(100.0 * (times.user + times.system - self.cpu_s_start) / elapsed, 1)
            self.peak_rss_mb = round(_peak_rss_bytes(self.pid) / 2**20, 1)


def _peak_rss_bytes(pid: int) -> int:
    """VmHWM: the process's peak resident set (Linux), else its RSS now."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(psutil.Process(pid).memory_info().rss)


@contextlib.contextmanager
def started_server(target: ServerTarget, config: BatchingConfig, workdir: Path) -> Iterator[tuple[str, ServerUsage]]:
    """Start the target with ``config`` (its parameters file in ``workdir``); yield (URL, usage); stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    params: Path | None = None
    if config.enabled:
        params = workdir / "batching_parameters.txt"
        params.write_text(config.parameters_text(), encoding="utf-8")
    if target.image is None:
        extra = ["--enable_batching=true", f"--batching_parameters_file={params.resolve()}"] if params else []
        with embedded_server(target.model_base_path, workdir, model_name=target.model_name, extra_args=extra) as server:
            yield server.url, ServerUsage(server.process.pid)
        return
    spec = ContainerSpec.create(
        target.model_base_path,
        model_name=target.model_name,
        image=target.image,
        name=f"tfsbench-tune-{secrets.token_hex(3)}",
        host_port=0,
        cpus=target.cpus,
        memory=target.memory,
        batching_parameters_file=params.resolve() if params else None,
    )
    with serving_container(spec, timeout_s=target.timeout_s) as (running, _meta):
        yield running.url, ServerUsage(None)
