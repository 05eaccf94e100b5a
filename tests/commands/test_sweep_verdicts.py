"""Who a sweep blames, against servers whose answer is known: the generator, the server, or nobody.

- An instantaneous server (tests.helpers.capacity_servers.InstantServer) with the issue's cell
  (2 processes, 20,000 req/s, 400 users, batch 1): no server falls behind, so every late send is
  the load generator's, and the cell must say "client saturated", naming the generator and the fix.
- A single-queue server at twice its capacity: the users wait on replies, the generator idles,
  and the cell must say "server saturated".
- ``--stability``: a steady server settles within a few windows; an overloaded one never does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.store import runs
from tests.helpers.capacity_servers import InstantServer, ServiceModelServer


def sweep(url: str, out: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "sweep", "--host", url, "--batch-sizes", "1", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_a_generator_that_falls_behind_is_blamed_whatever_the_server_did(tmp_path: Path) -> None:
    with InstantServer() as server:
        proc = sweep(
            server.url, tmp_path, "--processes", "2", "--arrival", "constant", "--rate", "20000", "--users", "400",
            "--duration", "4s", "--encodings", "row-fast",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(tmp_path / runs.LATEST)
    row = pd.read_csv(run.summary_path).iloc[0]
    assert row["rps"] < 0.5 * 20_000  # two Locust processes on this machine send far fewer
    assert bool(row["saturated"])
    assert not bool(row["server_saturated"])
    assert row["late_idle"] > 0.5 * row["requests"]  # most sends: their user was free, the generator late
    assert row["trust"].startswith("client saturated: ")
    assert "the load generator fell behind" in row["trust"]
    assert "add --processes" in row["trust"]
    # The side-car's figures are the busiest process's, not a mean of means divided again by two.
    (cell,) = run.cells
    assert cell["processes"] == 2
    assert cell["client_cpu_pct_max"] >= cell["client_cpu_pct"] > 0
    assert row["client_cpu_pct"] == cell["client_cpu_pct"]
    # Sends due but never made (the generator's backlog at the stop) are counted, not lost.
    assert cell["unanswered"] > 0
    records = pd.read_csv(run.requests_path, keep_default_na=False)
    assert set(records["lag_cause"]) <= {"busy", "idle"}
    page = run.report_path.read_text()
    assert 'id="saturated"' in page
    assert "add --processes" in page


def test_a_server_past_its_capacity_is_blamed_and_the_generator_is_not(tmp_path: Path) -> None:
    # One request at a time, 20 ms each (50 req/s); offered 100 req/s with enough users.
    with ServiceModelServer(fixed_s=0.020, per_image_s=0.0) as server:
        proc = sweep(
            server.url, tmp_path, "--arrival", "constant", "--rate", "100", "--users", "20", "--duration", "5s",
            "--encodings", "row-fast", "--stability", "10", "--stability-window", "1s", "--no-report",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(tmp_path / runs.LATEST)
    row = pd.read_csv(run.summary_path).iloc[0]
    assert bool(row["server_saturated"])
    assert not bool(row["saturated"])
    assert row["late_busy"] > 0.5 * row["requests"]
    assert row["late_idle"] <= 0.05 * row["requests"]
    assert row["trust"].startswith("server saturated: ")
    assert "waited on the previous reply" in row["trust"]
    # Its queue grows all the time: the windows never agree, and the summary says so.
    assert not bool(row["stable"])
    assert row["windows"] >= 3
    assert "not stable after" in row["trust"]


def test_a_steady_cell_stops_once_its_windows_agree(tmp_path: Path) -> None:
    with ServiceModelServer(fixed_s=0.004, per_image_s=0.0) as server:
        proc = sweep(
            server.url, tmp_path, "--users", "2", "--duration", "30s", "--encodings", "row-fast",
            "--stability", "30", "--stability-window", "1s", "--no-report",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(tmp_path / runs.LATEST)
    (cell,) = run.cells
    assert cell["stable"] is True
    assert 3 <= cell["windows"] < 20  # stopped long before its 30 s cap
    assert cell["wall_s"] < 25
    row = pd.read_csv(run.summary_path).iloc[0]
    assert bool(row["stable"])
    assert row["windows"] == cell["windows"]
    assert "stable after" in proc.stderr
