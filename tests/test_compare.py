"""tfsbench compare: same cells side by side with B/A ratios, overlay figures, comparability warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench import runs
from reports.compare import comparison_table, warnings_for
from reports.data import load_run_data
from tests.test_report import BATCHES, ENCODINGS, write_run


def test_ratios_are_b_over_a_for_every_common_cell(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", seed=1)
    b = write_run(tmp_path / "b", seed=1, scale=2.0)  # same random draws, every latency doubled
    table = comparison_table(load_run_data(a), load_run_data(b))
    assert len(table) == len(BATCHES) * len(ENCODINGS)
    assert table["p50_ms_ratio"].round(3).eq(2.0).all()
    assert table["p99_ms_ratio"].round(3).eq(2.0).all()
    assert table["payload_bytes_mean_ratio"].eq(1.0).all()


def test_cli_warns_when_server_kind_and_machine_differ(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", server_kind="embedded")
    b = write_run(tmp_path / "b", server_kind="tensorflow-serving")
    meta = json.loads((b / runs.META_FILE).read_text())
    meta["machine"]["hostname"] = "elsewhere"
    (b / runs.META_FILE).write_text(json.dumps(meta))
    notes = warnings_for(load_run_data(a), load_run_data(b))
    assert any("different machines" in n for n in notes)
    assert any("different server kinds" in n for n in notes)
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(a), str(b), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: different machines" in proc.stderr
    assert "warning: different server kinds" in proc.stderr
    assert "b16-b64-png" in proc.stdout
    page = (out / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    csv = pd.read_csv(out / "compare.csv")
    assert set(csv["cell"]) == {runs.cell_name(bb, e) for bb in BATCHES for e in ENCODINGS}


def test_compare_with_a_dir_that_is_not_a_run(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(a), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "no such run directory" in proc.stderr
