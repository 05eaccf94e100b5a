"""``tfsbench sweep --requests N`` stops each cell's Locust early; rows still equal Locust's count.

Each Locust process stops sending at its share of N while other requests are in flight (the
server takes 0.2 s per request, side by side); with several processes the sweep stops the run
(SIGTERM) once N rows are recorded. The requests in flight complete and Locust counts them;
they must be in requests.csv too, and no more than N + P - 1 are sent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.store import runs
from tests.helpers.capacity_servers import ServiceModelServer

REQUESTS = 20


@pytest.mark.parametrize("processes", [1, 2])
def test_requests_limit_rows_equal_locust_count(tmp_path: Path, processes: int) -> None:
    out = tmp_path / "runs"
    # error_above_rps far above the load: requests run side by side, each for fixed_s.
    with ServiceModelServer(fixed_s=0.2, per_image_s=0.0, error_above_rps=1e6) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "sweep", "--host", server.url, "--batch-sizes", "1,2",
             "--encodings", "row-fast", "--users", "4", "--requests", str(REQUESTS), "--warmup", "0",
             "--processes", str(processes), "--no-report", "--out", str(out)],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        served = server.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs.load_run(out / runs.LATEST)
    assert not run.incomplete
    rows = pd.read_csv(run.requests_path, keep_default_na=False)
    # every request sent is one row (no warm-up), none written twice; the preflight's one request
    # (one per encoding, before any cell) is not a measurement
    assert len(rows) == served - 1
    for cell in run.cells:
        assert cell["status"] == "done"
        cell_rows = rows[rows["cell"] == cell["cell"]]
        assert len(cell_rows) == cell["locust_requests"] == cell["records"]
        assert REQUESTS <= cell["records"] <= REQUESTS + processes - 1
        assert cell["locust_failures"] == 0
