"""A Locust master and workers in separate directories, as on machines with no shared disk.

Every process runs in its own temporary cwd and the records path is relative, so a worker that
wrote a file would leave it in its own directory; the rows must reach the master's file over
Locust's messages instead (bench.scenario.relay, bench.scenario.collector). The same through
``tfsbench sweep --expect-workers 2`` and ``tfsbench capacity --expect-workers 2``, with the
workers started as the command prints, and a worker killed mid-cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ports import free_port
from bench.store.load_stats import read_load_stats
from bench.store.records import read_records
from bench.store.runs import load_run
from tests.helpers.capacity_servers import ServiceModelServer
from tests.helpers.paths import LOCUSTFILE, REPO

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server() -> Iterator[ServiceModelServer]:
    with ServiceModelServer(fixed_s=0.002, per_image_s=0.0) as srv:
        yield srv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSBENCH_", "LOCUST_"))}
    env["PYTHONPATH"] = str(REPO)  # the workers' cwd is elsewhere: import this checkout's bench
    return env


def _worker(cwd: Path, port: int) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1"]
    command += ["--master-port", str(port), "--loglevel", "WARNING"]
    log = (cwd.parent / f"{cwd.name}.log").open("wb")
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _started_as_printed(line: str, cwd: Path) -> subprocess.Popen[bytes]:
    """A worker started with the command the sweep printed (locust -> this venv's, the locustfile absolute)."""
    argv = shlex.split(line)
    assert argv[:2] == ["locust", "-f"], line
    assert "--worker" in argv, line
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *argv[3:], "--loglevel", "WARNING"]
    cwd.mkdir(parents=True, exist_ok=True)
    log = (cwd.parent / f"{cwd.name}.log").open("wb")
    return subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _no_files_left(*dirs: Path) -> None:
    for d in dirs:
        assert not [p.name for p in d.rglob("*") if p.is_file()], f"files left in {d}"


def _locust_count(stats_file: Path) -> int:
    return sum(e["num_requests"] for e in json.loads(stats_file.read_text()) if e["name"].startswith("predict"))


def test_master_and_two_workers_in_three_directories(server: ServiceModelServer, tmp_path: Path) -> None:
    port = free_port()
    master_dir, w1, w2 = tmp_path / "master", tmp_path / "w1", tmp_path / "w2"
    master_dir.mkdir()
    master = subprocess.Popen(
        [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", server.url,
            "--master", "--expect-workers", "2", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "-u", "4", "-r", "100", "-t", "3s", "--records", "requests.csv", "--json-file", "stats",
            "--encodings", "row-fast", "--loglevel", "WARNING",
        ],
        cwd=master_dir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    workers = [_worker(w1, port), _worker(w2, port)]
    try:
        out, _ = master.communicate(timeout=TIMEOUT_S)
    finally:
        _stop([master, *workers])
    assert master.returncode == 0, out.decode()[-3000:]
    frame = read_records(master_dir / "requests.csv")
    assert len(frame) == _locust_count(master_dir / "stats.json") > 20
    seen = set(frame["worker"])  # host:pid of each worker process
    assert {n.rsplit(":", 1)[1] for n in seen} == {str(p.pid) for p in workers}
    load = read_load_stats(master_dir / "requests.csv")
    assert load is not None
    assert load.processes == 2
    assert not load.lost_workers
    assert set(load.by_worker) == seen
    assert all(w["rows"] > 0 for w in load.by_worker.values())
    _no_files_left(w1, w2)


def test_max_requests_over_workers_ends_the_test_at_n_not_at_its_run_time(
    server: ServiceModelServer, tmp_path: Path
) -> None:
    # Each of the 2 workers sends its share (40) and tells the master, which then quits: the
    # run ends at N, as a local one does, instead of running on to -t.
    proc = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", server.url,
            "--processes", "2", "-u", "4", "-r", "100", "-t", "90s", "--max-requests", "80",
            "--records", "requests.csv", "--json-file", "stats", "--encodings", "row-fast",
        ],
        cwd=tmp_path, env=_env(), capture_output=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    log = proc.stderr.decode()
    assert proc.returncode == 0, log[-3000:]
    assert "--max-requests reached" in log
    assert "--run-time limit reached" not in log
    frame = read_records(tmp_path / "requests.csv")
    assert len(frame) == _locust_count(tmp_path / "stats.json")
    assert 80 <= len(frame) <= 81
    assert frame["worker"].value_counts().to_list() == [40, 40]


def _start_sweep(args: list[str], cwd: Path) -> tuple[subprocess.Popen[bytes], Path]:
    err = cwd / "stderr.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=err.open("wb"),
    )  # fmt: skip
    return proc, err


def _printed_worker_command(proc: subprocess.Popen[bytes], err: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for line in err.read_text(errors="replace").splitlines():
            if line.strip().startswith("locust -f"):
                return line.strip()
        time.sleep(0.1)
    raise AssertionError(f"no worker command printed: {err.read_text(errors='replace')[-2000:]}")


def _only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


def test_sweep_runs_every_cell_on_remote_workers(server: ServiceModelServer, tmp_path: Path) -> None:
    sweep_dir, w1, w2 = tmp_path / "sweep", tmp_path / "w1", tmp_path / "w2"
    sweep_dir.mkdir()
    port = free_port()
    proc, err = _start_sweep(
        [
            "sweep", "--host", server.url, "--batch-sizes", "1,2", "--encodings", "row-fast", "--users", "4",
            "--duration", "2s", "--expect-workers", "2", "--master-bind-port", str(port), "--workers-wait", "60s",
            "--no-report", "--out", "runs",
        ],
        sweep_dir,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    try:
        line = _printed_worker_command(proc, err)
        assert f"--master-host 127.0.0.1 --master-port {port}" in line
        workers = [_started_as_printed(line, w1), _started_as_printed(line, w2)]
        proc.communicate(timeout=TIMEOUT_S)
    finally:
        _stop([proc, *workers])
    assert proc.returncode == 0, err.read_text(errors="replace")[-3000:]
    run = load_run(_only_run(sweep_dir / "runs"))
    frame = read_records(run.requests_path)
    assert [c["status"] for c in run.cells] == ["done", "done"]
    assert len(frame) == sum(c["locust_requests"] for c in run.cells) == sum(c["records"] for c in run.cells)
    for cell, rows in frame.groupby("cell"):
        assert rows["worker"].nunique() == 2, cell  # both workers ran every cell
    assert all(c["processes"] == 2 for c in run.cells)
    _no_files_left(w1, w2)


def test_capacity_probes_run_on_remote_workers(server: ServiceModelServer, tmp_path: Path) -> None:
    cap_dir, w1, w2 = tmp_path / "cap", tmp_path / "w1", tmp_path / "w2"
    cap_dir.mkdir()
    port = free_port()
    proc, err = _start_sweep(
        [
            "capacity", "--host", server.url, "--batch-sizes", "1", "--encodings", "row-fast", "--slo", "p99<200ms",
            "--start-rate", "20", "--max-probes", "2", "--min-samples", "40", "--min-measure-time", "1s",
            "--warmup-time", "0.2s", "--max-probe-time", "4s", "--calibration-time", "0", "--tolerance", "0.5",
            "--expect-workers", "2", "--master-bind-port", str(port), "--workers-wait", "60s", "--no-report",
            "--out", "runs",
        ],
        cap_dir,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers = [_started_as_printed(_printed_worker_command(proc, err), d) for d in (w1, w2)]
        proc.communicate(timeout=TIMEOUT_S)
    finally:
        _stop([proc, *workers])
    assert proc.returncode == 0, err.read_text(errors="replace")[-3000:]
    run = load_run(_only_run(cap_dir / "runs"))
    frame = read_records(run.requests_path)
    assert len(run.cells) == 2
    assert len(frame) == sum(c["locust_requests"] for c in run.cells) > 0
    for cell, rows in frame.groupby("cell"):
        assert rows["worker"].nunique() == 2, cell
    _no_files_left(w1, w2)


def test_a_killed_worker_makes_the_run_incomplete_naming_it(server: ServiceModelServer, tmp_path: Path) -> None:
    sweep_dir, w1, w2 = tmp_path / "sweep", tmp_path / "w1", tmp_path / "w2"
    sweep_dir.mkdir()
    port = free_port()
    proc, err = _start_sweep(
        [
            "sweep", "--host", server.url, "--batch-sizes", "1", "--encodings", "row-fast", "--users", "4",
            "--duration", "6s", "--expect-workers", "2", "--master-bind-port", str(port), "--workers-wait", "60s",
            "--no-report", "--out", "runs",
        ],
        sweep_dir,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    seen_before_kill = 0
    try:
        line = _printed_worker_command(proc, err)
        workers = [_started_as_printed(line, w1), _started_as_printed(line, w2)]
        records = None
        deadline = time.monotonic() + 60
        # Kill the first worker once both have rows in the master's file (received, so kept).
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((sweep_dir / "runs").glob("*/cells/*/records.csv"))
            if found:
                records = found[0]
                with contextlib.suppress(Exception):
                    frame = read_records(records)
                    if frame["worker"].nunique() == 2:
                        seen_before_kill = len(frame)
                        break
            time.sleep(0.1)
        assert seen_before_kill, err.read_text(errors="replace")[-3000:]
        workers[0].kill()
        proc.communicate(timeout=TIMEOUT_S)
    finally:
        _stop([proc, *workers])
    stderr = err.read_text(errors="replace")
    assert proc.returncode != 0  # the run is incomplete, and the exit status says so
    run = load_run(_only_run(sweep_dir / "runs"))
    killed = f":{workers[0].pid}"
    assert run.incomplete, stderr[-3000:]
    assert killed in str(run.incomplete_reason), stderr[-3000:]
    assert killed in stderr.splitlines()[-1]
    frame = read_records(run.requests_path)
    assert len(frame) >= seen_before_kill  # every row received is kept
    assert any(w.endswith(killed) for w in set(frame["worker"]))
    load = read_load_stats(run.path / "cells" / run.cells[0]["cell"] / "records.csv")
    assert load is None or any(w.endswith(killed) for w in load.lost_workers)
    _no_files_left(w1, w2)


def test_a_worker_of_another_version_is_refused_in_one_line(server: ServiceModelServer, tmp_path: Path) -> None:
    # A copy of the code outside any git checkout: its version has no revision, unlike this one.
    other = tmp_path / "other"
    for part in ("bench", "locustfiles"):
        shutil.copytree(REPO / part, other / part, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    master_dir = tmp_path / "master"
    master_dir.mkdir()
    master = subprocess.Popen(
        [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", server.url,
            "--master", "--expect-workers", "1", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "-u", "1", "-t", "20s", "--records", "requests.csv", "--encodings", "row-fast", "--loglevel", "WARNING",
        ],
        cwd=master_dir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    env = {**_env(), "PYTHONPATH": f"{other}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "locust", "-f", str(other / "locustfiles" / "predict.py"), "--worker"]
    worker = subprocess.Popen(
        [*command, "--master-host", "127.0.0.1", "--master-port", str(port), "--loglevel", "WARNING"],
        cwd=other, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _, err = master.communicate(timeout=TIMEOUT_S)
    finally:
        _stop([master, worker])
    refusals = [line for line in err.decode().splitlines() if line.startswith("tfsbench: worker ")]
    assert master.returncode == 3, err.decode()[-2000:]
    assert len(refusals) == 1
    assert "+no-git" in refusals[0]
    assert "start every worker from the same checkout" in refusals[0]
