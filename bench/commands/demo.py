"""``tfsbench demo``: the whole loop on the embedded server, in one command (``make demo``).

export (if missing) -> serve on a free loopback port, Prometheus on -> short sweep -> report -> stop.

The default grid (batch 1, 4, 16, 64 x row-orjson, row-fast, b64-png, 4 users) takes about two
minutes on a 2-core machine. Each cell stops at ``--requests`` recorded requests (default 300) or
after ``--duration`` (default 20 s), whichever comes first: fast small-batch cells end in a couple
of seconds, so the time goes to the large batches, which need it for a p99 worth reading (a flat
6 s per cell left batch 64 with 12-25 requests).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.api_names import PROMETHEUS_PATH
from bench.commands.cells import SweepConfig
from bench.commands.sweep import run_sweep_config
from bench.errors import BenchError, ServerError
from bench.ports import free_port
from bench.serving.metrics import monitoring_config_text
from bench.target.client import TFServingClient
from export import export_model
from reports.report import build_report

MODEL_NAME = "classifier"
SERVER_START_TIMEOUT_S = 180.0


def ensure_model(models: Path) -> Path:
    """Export the tiny reference model into ``models/classifier/1`` unless a version exists."""
    base = models / MODEL_NAME
    versions = [p for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    if versions:
        print(f"[demo] using the existing model in {base} (versions: {', '.join(sorted(p.name for p in versions))})")
        return base
    print(f"[demo] exporting the reference model to {base}/1 ...")
    print(export_model(models, model_name=MODEL_NAME, version=1, size="tiny").summary())
    return base


@dataclass(frozen=True)
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def wait_until_available(
    url: str, process: subprocess.Popen[bytes], timeout_s: float, log_path: Path, model_name: str = MODEL_NAME
) -> None:
    """Poll the model status until a version is AVAILABLE; ServerError if the server exits or never is."""

    def still_running() -> None:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise ServerError(f"the embedded server exited with code {process.returncode}: {' | '.join(tail)}")

    with TFServingClient(url, model_name, timeout_s=2.0) as client:
        try:
            client.wait_until_available(timeout_s, check=still_running)
        except ServerError as exc:
            if process.poll() is not None:
                raise
            raise ServerError(f"the embedded server at {url} had no AVAILABLE model ({exc}; log: {log_path})") from None


@contextlib.contextmanager
def embedded_server(
    model_base_path: Path, workdir: Path, model_name: str = MODEL_NAME, extra_args: Sequence[str] = ()
) -> Iterator[RunningServer]:
    """``tfsbench serve`` as a child process on a free loopback port, Prometheus on; stopped on exit.

    ``extra_args``: more serve flags (``tfsbench tune`` passes each configuration's batching).
    """
    port = free_port()
    monitoring = workdir / "monitoring.config"
    monitoring.write_text(monitoring_config_text())
    log_path = workdir / "server.log"
    cmd = [
        sys.executable, "-m", "bench", "serve", "--port", "0", "--rest_api_port", str(port),
        "--rest_api_host", "127.0.0.1",
        "--model_name", model_name, "--model_base_path", str(model_base_path.resolve()),
        "--monitoring_config_file", str(monitoring), *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_available(url, process, SERVER_START_TIMEOUT_S, log_path, model_name)
        yield RunningServer(url, process, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def run_demo(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    base = ensure_model(args.models)
    config = SweepConfig(
        host="",
        batch_sizes=tuple(args.batch_sizes),
        encodings=tuple(args.encodings),
        users=args.users,
        duration_s=args.duration,
        requests=args.requests,
        warmup=2,
        model_name=MODEL_NAME,
        server_kind="embedded",
    )
    with tempfile.TemporaryDirectory(prefix="tfsbench-demo-") as tmp:
        print("[demo] starting the embedded server (tfsbench serve) on a free loopback port ...")
        with embedded_server(base, Path(tmp)) as server:
            print(f"[demo] serving {MODEL_NAME} at {server.url}; Prometheus at {server.url}{PROMETHEUS_PATH}")
            n = len(config.batch_sizes) * len(config.encodings)
            print(
                f"[demo] sweep: {n} cells, each {config.requests} requests or {config.duration_s:g} s, "
                f"{config.users} users (closed model) ..."
            )
            run_dir = run_sweep_config(SweepConfig(**{**config.__dict__, "host": server.url}), args.out)
        print("[demo] server stopped")
    result = build_report(run_dir)
    print(f"[demo] done in {time.monotonic() - t0:.0f} s")
    print(f"[demo] report: {result.html_path}")
    print(f"[demo] summary: {result.summary_path}")
    print("\n".join(("What this run says:", *result.answer)))
    if result.incomplete:
        raise BenchError(f"the demo's run is incomplete (see {result.html_path}); the report shows what was recorded")
    return 0
