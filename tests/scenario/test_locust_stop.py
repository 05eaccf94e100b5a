"""Runs stopped early (SIGTERM, Ctrl-C, --run-time) still record every request Locust counts.

At a stop some requests are in flight. With ``--stop-timeout`` they complete and Locust counts
them; the records must have them too (one row per counted request), also with worker
processes, whose files are merged only after their last rows. The server's delay keeps
several requests in flight at the moment of the stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.ports import free_port
from bench.store.load_stats import read_load_stats
from bench.store.records import read_records
from tests.helpers.loopback_servers import LoopbackServer
from tests.helpers.paths import REPO

USERS = 4
STOP_AFTER_ROWS = 12
TIMEOUT_S = 90


def locust_command(host: str, tmp_path: Path, run_time: str, processes: int) -> list[str]:
    command = [
        sys.executable, "-m", "locust", "-f", "locustfiles/predict.py", "--headless", "--host", host,
        "-u", str(USERS), "-r", "100", "-t", run_time, "--stop-timeout", "10",
        "--records", str(tmp_path / "requests.csv"), "--json-file", str(tmp_path / "stats"),
        "--encodings", "row-fast", "--loglevel", "WARNING",
    ]  # fmt: skip
    if processes > 1:
        port = str(free_port())  # Locust's default master port would collide with parallel runs
        command += ["--processes", str(processes), "--master-port", port, "--master-bind-port", port]
    return command


def rows_so_far(tmp_path: Path) -> int:
    """Rows written so far, over requests.csv and the worker files (requests.<pid>.csv)."""
    total = 0
    for path in tmp_path.glob("requests*.csv"):
        with path.open("rb") as f:
            total += max(0, f.read().count(b"\n") - 1)
    return total


def locust_count(tmp_path: Path) -> int:
    return sum(entry["num_requests"] for entry in json.loads((tmp_path / "stats.json").read_text()))


def run_and_stop(host: str, tmp_path: Path, processes: int, sig: signal.Signals, group: bool) -> tuple[int, str]:
    """Start Locust, send ``sig`` once STOP_AFTER_ROWS rows are recorded; returns (exit code, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    proc = subprocess.Popen(
        locust_command(host, tmp_path, "60s", processes),
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=group,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while rows_so_far(tmp_path) < STOP_AFTER_ROWS and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "Locust ended before the stop"
        if group:  # Ctrl-C in a terminal reaches every process of the group, workers included
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode, stderr


@pytest.mark.parametrize(
    ("processes", "sig", "group", "delay_s"),
    [
        pytest.param(1, signal.SIGTERM, False, 0.3, id="sigterm"),
        pytest.param(1, signal.SIGINT, True, 0.3, id="ctrl-c"),
        # 1 s in flight: longer than the 0.5 s Locust's own quit waits for workers' last stats.
        pytest.param(2, signal.SIGTERM, False, 1.0, id="sigterm-processes"),
        pytest.param(2, signal.SIGINT, True, 0.3, id="ctrl-c-processes"),
    ],
)
def test_a_stopped_run_records_every_request_locust_counts(
    tmp_path: Path, processes: int, sig: signal.Signals, group: bool, delay_s: float
) -> None:
    with LoopbackServer(delay_s=delay_s) as server:
        rc, stderr = run_and_stop(server.url, tmp_path, processes, sig, group)
        served = server.requests
    assert rc == 0, stderr[-3000:]
    frame = read_records(tmp_path / "requests.csv")
    # Requests in flight at the stop completed after it: counted by Locust and recorded alike.
    assert len(frame) == locust_count(tmp_path) > STOP_AFTER_ROWS, stderr[-3000:]
    assert len(frame) == served  # nothing sent went unrecorded (no warm-up here), nothing twice
    assert (frame["status"] == 200).all()
    assert not list(tmp_path.glob("requests.*.csv"))  # worker files merged and removed
    load = read_load_stats(tmp_path / "requests.csv")
    assert load is not None
    assert load.processes == processes
    assert load.finished


def test_run_time_end_with_requests_in_flight_records_every_request(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    with LoopbackServer(delay_s=0.3) as server:
        done = subprocess.run(
            locust_command(server.url, tmp_path, "3s", 1),
            cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
        served = server.requests
    assert done.returncode == 0, done.stderr[-3000:]
    frame = read_records(tmp_path / "requests.csv")
    assert len(frame) == locust_count(tmp_path) == served > 0
