"""tfsbench demo (make demo, the README's first command) on a one-cell grid: the whole loop for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.store import runs


def test_demo_serves_sweeps_reports_and_stops(models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "demo", "--models", str(models_dir), "--out", str(out),
         "--batch-sizes", "1", "--encodings", "row-orjson,grpc-tensor-content", "--users", "2",
         "--requests", "40", "--duration", "30s"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "[demo] server stopped" in proc.stdout
    run = runs.load_run(out / runs.LATEST)
    report_line = next(line for line in proc.stdout.splitlines() if line.startswith("[demo] report: "))
    assert Path(report_line.removeprefix("[demo] report: ")) == run.report_path
    assert run.server_kind == "embedded"
    assert not run.incomplete
    # A cell ends at --requests recorded requests (the time cap is for slow large-batch cells).
    assert (run.meta["config"]["requests"], run.meta["config"]["duration_s"]) == (40, 30.0)
    assert "each 40 requests or 30 s" in proc.stdout
    summary = pd.read_csv(run.summary_path)
    assert summary["requests"].sum() >= 80
    # The demo's server answers REST and gRPC: one cell each.
    assert dict(zip(summary["encoding"], summary["protocol"], strict=True)) == {
        "row-orjson": "rest",
        "grpc-tensor-content": "grpc",
    }
    assert summary["errors"].sum() == 0
    page = run.report_path.read_text()
    assert 'id="embedded"' in page
    # The demo ends with the lines the report opens with.
    lines = proc.stdout.splitlines()
    said = lines[lines.index("What this run says:") + 1 :]
    assert said[0].startswith("Most images/s per batch size")
    assert said[1].startswith("  b1: ")
    assert "row-orjson" in said[1]
    assert "grpc-tensor-content" in said[1]
    assert 'id="answer"' in page
    assert said[1].strip() in page
