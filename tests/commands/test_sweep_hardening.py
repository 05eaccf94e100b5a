"""A sweep that loses its disk or its own process keeps what it recorded and leaves no load behind.

Real sweeps (``python -m bench sweep``) against a loopback server with a known service time: the
disk is filled for real with RLIMIT_FSIZE (SIGXFSZ ignored; the Locust child inherits both), and
the sweep is killed with SIGKILL, which it cannot catch.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.store import runs
from reports.data import read_run_records
from tests.helpers.capacity_servers import ServiceModelServer


def _sweep(url: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench", "sweep", "--host", url, "--batch-sizes", "1",
            "--encodings", "row-fast,row-orjson", "--users", "4", "--warmup", "0", "--no-report",
            "--out", str(out), *extra]  # fmt: skip


def _limit_file_size(limit_bytes: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def test_a_full_disk_stops_the_sweep_with_one_line_and_whole_rows(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with ServiceModelServer(fixed_s=0.002, per_image_s=0.0) as server:
        proc = subprocess.run(
            _sweep(server.url, out, "--duration", "60"),
            capture_output=True, text=True, timeout=240, preexec_fn=lambda: _limit_file_size(150_000),
        )  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr[-2000:]
    match = re.fullmatch(r"tfsbench sweep: error: no space left on (\S+): (\d+) rows kept", last)
    assert match, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    run = runs.load_run(out / runs.LATEST)
    assert run.incomplete
    assert "no space left" in str(run.incomplete_reason)
    statuses = [c["status"] for c in run.cells]
    assert statuses == ["failed", "skipped"]
    kept = read_run_records(run)
    assert len(kept) == int(match.group(2)) > 100
    for path in out.rglob("*.csv"):
        assert path.read_bytes().endswith(b"\n"), path
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def _wait_for_rows(run_dir_parent: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        files = list(run_dir_parent.glob("*/cells/*/records*.csv"))
        if any(f.stat().st_size > 2000 for f in files):
            return
        time.sleep(0.2)
    raise AssertionError("the sweep recorded no rows in time")


@pytest.mark.parametrize("processes", [1, 2])
def test_locust_dies_with_a_killed_sweep_and_listens_on_loopback_only(tmp_path: Path, processes: int) -> None:
    out = tmp_path / "runs"
    with ServiceModelServer(fixed_s=0.005, per_image_s=0.0) as server:
        sweep = subprocess.Popen(
            _sweep(server.url, out, "--duration", "120", "--processes", str(processes)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        children: list[psutil.Process] = []
        try:
            _wait_for_rows(out)
            children = psutil.Process(sweep.pid).children(recursive=True)
            assert len(children) == processes + (1 if processes > 1 else 0)
            listening = [
                c.laddr.ip for p in children for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
            ]
            assert listening == (["127.0.0.1"] if processes > 1 else [])  # the master's port, nothing else
            sweep.kill()
            sweep.wait(timeout=10)
            _gone, alive = psutil.wait_procs(children, timeout=40)
            assert not alive, f"still loading the server: {alive}"
            served = server.requests
            time.sleep(1.0)
            assert server.requests == served  # no request after the generators went
        finally:
            sweep.kill()
            for p in children:
                if p.is_running():
                    p.kill()
    # What the generator recorded before it went is whole (it stopped through its SIGTERM path).
    for path in out.glob("*/cells/*/records*.csv"):
        assert path.read_bytes().endswith(b"\n")
    meta = json.loads(next(out.glob("*/meta.json")).read_text(encoding="utf-8"))
    assert meta["incomplete"] is True


def test_a_sweep_started_with_sigint_ignored_stops_its_cell_on_sigterm(tmp_path: Path) -> None:
    # A shell starts background jobs with SIGINT ignored, and exec passes that on: a stop that
    # reached Locust as SIGINT was ignored, and the cell ran on to its --duration.
    out = tmp_path / "runs"
    with ServiceModelServer(fixed_s=0.002, per_image_s=0.0) as server:
        command = _sweep(server.url, out, "--duration", "120s")
        proc = subprocess.Popen(
            ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(out.glob("*/cells/*/records.csv"))
            if found and sum(1 for _ in found[0].open()) > 30:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    run = runs.load_run(out / runs.LATEST)
    first, second = run.cells
    assert first["status"] == "interrupted"
    assert second["status"] in ("pending", "skipped")
    log = (run.path / "locust.log").read_text()
    assert "Got SIGTERM signal" in log  # Locust's own clean stop, with its final stats ...
    assert "--run-time limit reached" not in log  # ... long before the cell's end
    assert first["locust_requests"] == first["records"] > 30
