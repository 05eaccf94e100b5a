"""tfsbench compare: same cells side by side with B/A ratios, overlay figures, comparability warnings."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import ResultsError
from bench.store import runs
from reports.compare import comparison_table, warnings_for
from reports.data import load_run_data
from tests.helpers.fake_runs import BATCHES, ENCODINGS, PROBES, write_capacity_run, write_run


def test_ratios_are_b_over_a_for_every_common_cell(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", seed=1)
    b = write_run(tmp_path / "b", seed=1, scale=2.0)  # same random draws, every latency doubled
    table = comparison_table(load_run_data(a), load_run_data(b))
    assert len(table) == len(BATCHES) * len(ENCODINGS)
    assert table["p50_ms_ratio"].round(3).eq(2.0).all()
    assert table["p99_ms_ratio"].round(3).eq(2.0).all()
    assert table["payload_bytes_mean_ratio"].eq(1.0).all()


def test_a_rest_run_against_a_grpc_run_pairs_cells_by_batch_size(tmp_path: Path) -> None:
    a = load_run_data(write_run(tmp_path / "a", seed=1, encodings=("row-orjson",)))
    b = load_run_data(write_run(tmp_path / "b", seed=1, scale=0.5, encodings=("grpc-tensor-content",)))
    assert set(b.summary["protocol"]) == {"grpc"}
    table = comparison_table(a, b)
    assert table["batch"].tolist() == list(BATCHES)
    assert table["cell"].tolist() == [f"b{batch} row-orjson -> grpc-tensor-content" for batch in BATCHES]
    assert table["p50_ms_ratio"].round(3).eq(0.5).all()
    assert any("paired by batch size (A rest, B grpc)" in note for note in warnings_for(a, b))
    # Two encodings per batch size on one side: nothing to pair them by.
    mixed = load_run_data(write_run(tmp_path / "c", encodings=("row-orjson", "b64-png")))
    with pytest.raises(ResultsError, match="no \\(batch, encoding\\) cell in common"):
        comparison_table(mixed, b)


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


# (batch, max req/s, latency at max ms) per capacity run; max 0 = no probed rate met the SLO.
CAPACITY_A = [(1, 160.0, 10.0), (4, 0.0, float("nan")), (16, 41.25, 80.0)]
CAPACITY_B = [(1, 320.0, 20.0), (4, 50.0, 60.0), (16, 0.0, float("nan")), (64, 5.0, 90.0)]
TARGET, HEADROOM = 2000.0, 0.3


def write_capacity_answer(out: Path, answers: list[tuple[int, float, float]], limit_ms: float = 100.0) -> Path:
    """A capacity run dir: probe rows (tests.helpers.fake_runs), then capacity.csv, probes.csv and
    meta.json from bench.commands.capacity_run's own writer (CapacityRun.save), as `tfsbench capacity` leaves them."""
    from dataclasses import asdict

    from bench.commands.capacity_run import CapacityConfig, CapacityRun
    from bench.commands.capacity_search import CapacityResult

    run_dir = write_capacity_run(out, requests_per_probe=40)
    cells = json.loads((run_dir / runs.META_FILE).read_text())["cells"]
    config = CapacityConfig(host="http://127.0.0.1:1", limit_ms=limit_ms, target_images_per_s=TARGET, headroom=HEADROOM)
    run = CapacityRun(config, run_dir)
    for cell, (offered, achieved, late_share, _cpu) in PROBES.items():
        batch = next(c["batch"] for c in cells if c["cell"] == cell)
        passed = late_share == 0 and achieved == offered
        run.probe_rows.append(
            {"batch": batch, "encoding": "row-orjson", "cell": cell, "rate_rps": offered, "achieved_rps": achieved,
             "latency_pct_ms": 20.0 if passed else 400.0, "passed": passed}
        )  # fmt: skip
    run.results = [CapacityResult(b, "row-orjson", rps, lat, 300 if rps else 0) for b, rps, lat in answers]
    run.save(
        command="capacity",
        config=asdict(config),
        slo={"text": config.slo_text, "percentile": config.percentile, "limit_ms": config.limit_ms},
    )
    runs.update_meta(run_dir, cells=cells)  # save() lists the probes it ran itself; here they were written above
    return run_dir


def test_two_capacity_runs_compare_capacity_csv_not_probe_cells(tmp_path: Path) -> None:
    a = write_capacity_answer(tmp_path / "a", CAPACITY_A)
    b = write_capacity_answer(tmp_path / "b", CAPACITY_B)
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(a), str(b), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    csv = pd.read_csv(out / "compare.csv")
    # One row per (batch, encoding) searched in both, not every probe of A against every probe of B.
    assert csv[["batch", "encoding"]].values.tolist() == [[1, "row-orjson"], [4, "row-orjson"], [16, "row-orjson"]]
    by_batch = csv.set_index("batch")
    assert by_batch.loc[1, "max_rps_ratio"] == pytest.approx(2.0)
    assert by_batch.loc[1, "max_images_per_s_ratio"] == pytest.approx(2.0)
    assert by_batch.loc[1, "latency_ms_at_max_ratio"] == pytest.approx(2.0)
    replicas_a = math.ceil(TARGET / (160.0 * (1 - HEADROOM)))
    replicas_b = math.ceil(TARGET / (320.0 * (1 - HEADROOM)))
    assert (by_batch.loc[1, "replicas_a"], by_batch.loc[1, "replicas_b"]) == (replicas_a, replicas_b)
    assert by_batch.loc[1, "replicas_ratio"] == pytest.approx(replicas_b / replicas_a)
    assert math.isnan(by_batch.loc[4, "max_rps_ratio"])  # A met the SLO at no rate: no ratio
    assert by_batch.loc[16, "max_rps_ratio"] == 0.0
    assert math.isnan(by_batch.loc[16, "replicas_b"])
    assert by_batch.loc[16, "max_images_per_s_b"] == 0.0
    assert "capacity.csv compared" in proc.stdout
    assert "@" not in proc.stdout  # no probe cell names
    assert [ln.split()[0] for ln in proc.stdout.splitlines()[2:5]] == ["1", "4", "16"]
    assert "warning: searched in B only: b64 row-orjson" in proc.stderr
    assert "client-saturated" not in proc.stderr  # probes past the knee are the search's business
    page = (out / "compare.html").read_text()
    assert 'id="compare-capacity"' in page
    assert page.count("data:image/png;base64,") == 1
    assert (out / "overlay_capacity.png").read_bytes().startswith(b"\x89PNG")


def test_capacity_compare_warns_about_different_slos(tmp_path: Path) -> None:
    from reports.compare_capacity import capacity_notes, read_capacity

    a = load_run_data(write_capacity_answer(tmp_path / "a", CAPACITY_A))
    b = load_run_data(write_capacity_answer(tmp_path / "b", CAPACITY_A, limit_ms=50.0))
    notes = capacity_notes(a, b, read_capacity(a.run), read_capacity(b.run))
    assert notes == ["different SLOs: A p99<100ms, B p99<50ms (capacity is the highest rate meeting each run's own)"]


def test_one_capacity_run_against_a_sweep_says_so_and_compares_cells(tmp_path: Path) -> None:
    a = write_capacity_answer(tmp_path / "a", CAPACITY_A)
    b = write_run(tmp_path / "b")
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(a), str(b), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "capacity" in ln]
    assert said == [
        "warning: only run A is a capacity run (has capacity.csv): comparing the (batch, encoding) cells of both "
        "runs, each probe of the capacity run against the other run's cell"
    ]
    csv = pd.read_csv(out / "compare.csv")
    assert "p99_ms_ratio" in csv
    assert set(csv["encoding"]) == {"row-orjson"}  # the cells both runs have
    assert "only run A is a capacity run" in (out / "compare.html").read_text()
