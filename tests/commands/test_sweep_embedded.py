"""tfsbench sweep end to end against the real embedded server (tfsbench serve in a child process).

The server runs as its own process (bench.commands.demo.embedded_server: the same start-up ``tfsbench
demo`` uses, Prometheus on), so a test can kill it mid-cell like a crash would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest

from bench.commands.demo import embedded_server
from bench.store import runs
from reports.data import load_run_data
from reports.figures import FIGURES


@pytest.fixture(scope="module")
def server_url(model_base_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_server(model_base_path, tmp_path_factory.mktemp("server")) as server:
        yield server.url


def sweep(*args: str, timeout_s: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "sweep", *args], capture_output=True, text=True, timeout=timeout_s
    )


def test_small_grid_writes_consistent_files(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = sweep(
        "--host", server_url, "--batch-sizes", "1,8", "--encodings", "row-orjson,b64-png", "--users", "2",
        "--duration", "4s", "--warmup", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(out / runs.LATEST)
    assert not run.incomplete
    assert run.target["server_kind"] in ("embedded", "unknown")
    rows = pd.read_csv(run.requests_path, keep_default_na=False)
    cells = {c["cell"]: c for c in run.cells}
    assert set(cells) == {"b1-row-orjson", "b8-row-orjson", "b1-b64-png", "b8-b64-png"}
    for name, cell in cells.items():
        assert cell["status"] == "done"
        cell_rows = rows[rows["cell"] == name]
        # Every request Locust counted is one row, and nothing else is.
        assert len(cell_rows) == cell["locust_requests"] >= 10
        assert cell["locust_failures"] == 0
        assert (cell_rows["status"] == 200).all()
        assert (cell_rows["batch"] == cell["batch"]).all()
        assert cell["warmup_excluded"] == 2  # 1 per user, sent but not recorded
    summary = pd.read_csv(run.summary_path)
    assert len(summary) == 4
    for _, s in summary.iterrows():
        lat = rows.loc[rows["cell"] == s["cell"], "latency_ms"].to_numpy(float)
        np.testing.assert_allclose(
            s[["p50_ms", "p90_ms", "p95_ms", "p99_ms"]].to_numpy(float), np.percentile(lat, [50, 90, 95, 99]), rtol=1e-6
        )
        assert s["max_ms"] == pytest.approx(lat.max())
        assert s["requests"] == len(lat)
    # Server-side view from the embedded server's Prometheus endpoint, next to the client's.
    if run.target.get("prometheus"):
        assert summary["server_latency_mean_ms"].notna().all()
        assert (summary["server_latency_mean_ms"] <= summary["latency_mean_ms"]).all()
        # Scraped once the first request was recorded: the warm-up (2 per cell) is not in the server's
        # count; only the requests done before that first scrape answered are missing from it.
        assert (summary["server_requests"] <= summary["requests"]).all()
        assert (summary["server_requests"] >= 0.9 * summary["requests"]).all()
    page = run.report_path.read_text()
    for name, *_ in FIGURES:
        assert f'id="fig-{name}"' in page


@pytest.mark.parametrize("processes", [1, 2])
def test_requests_stop_each_cell_at_n_long_before_its_time_cap(server_url: str, tmp_path: Path, processes: int) -> None:
    out = tmp_path / "runs"
    proc = sweep(
        "--host", server_url, "--batch-sizes", "1,4", "--encodings", "row-fast", "--users", "4",
        "--requests", "120", "--duration", "120s", "--processes", str(processes), "--no-report", "--out", str(out),
        "--slo", "p99<5s",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(out / runs.LATEST)
    rows = pd.read_csv(run.requests_path, keep_default_na=False)
    # The sweep ends with what the run says, judged against --slo (recorded in meta.json).
    assert run.meta["slo"] == {"text": "p99<5000ms", "percentile": 99.0, "limit_ms": 5000.0}
    lines = proc.stdout.splitlines()
    said = lines[lines.index("What this run says:") + 1 :]
    assert said[0] == "Most images/s per batch size within p99<5000ms (--slo), no errors:"
    summary = load_run_data(run.path).summary
    for batch in (1, 4):
        (cell,) = summary[summary["batch"] == batch].itertuples()
        verdict = f"  b{batch}: row-fast {cell.images_per_s:,.0f} images/s" if cell.images_per_s >= 100 else None
        line = next(x for x in said if x.startswith(f"  b{batch}: "))
        assert line.startswith(verdict or f"  b{batch}: row-fast {cell.images_per_s:.3g} images/s"), line
    for cell in run.cells:
        # Each process sends its share of N and stops: N (P-1 more at most), never a poll's worth more.
        assert 120 <= cell["records"] == cell["locust_requests"] <= 120 + processes - 1
        assert len(rows[rows["cell"] == cell["cell"]]) == cell["records"]
    log = (run.path / "locust.log").read_text()
    assert log.count("Starting Locust") >= len(run.cells)  # Locust's own log, one start per cell
    if processes == 1:
        assert log.count("--max-requests reached") == len(run.cells)  # the cell ended itself
    assert "Traceback" not in log


def test_server_killed_mid_cell_keeps_rows_and_marks_incomplete(model_base_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with embedded_server(model_base_path, tmp_path) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", "sweep", "--host", server.url, "--batch-sizes", "1,4",
             "--encodings", "row-orjson", "--users", "2", "--duration", "30s", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        records = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(out.glob("*/cells/b1-row-orjson/records.csv"))
            if found and sum(1 for _ in found[0].open()) > 30:
                records = found[0]
                break
            time.sleep(0.2)
        assert records is not None, "the first cell never recorded 30 requests"
        server.process.kill()
        server.process.wait(timeout=10)
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 1, stderr[-2000:]
    assert "incomplete run" in stderr.splitlines()[-1]
    run = runs.load_run(out / runs.LATEST)
    assert run.incomplete
    assert "server_down" in cast(str, run.incomplete_reason)
    first, second = run.cells
    assert first["status"] == "server_down"
    assert second["status"] == "skipped"
    rows = pd.read_csv(run.requests_path, keep_default_na=False)
    ok = rows[rows["status"] == 200]
    assert len(ok) > 30
    assert len(rows) == first["records"]
    # The report covers the interrupted run: every recorded request, under the banner.
    summary = pd.read_csv(run.summary_path)
    assert int(summary["requests"].sum()) == len(rows)
    page = run.report_path.read_text()
    assert 'id="incomplete"' in page
    assert json.loads((run.path / runs.META_FILE).read_text())["incomplete"] is True
