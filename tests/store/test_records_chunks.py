"""Records read in bounded chunks: the same rows, the same summary, exact percentiles, bounded figure sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.perf.records_scale import write_synthetic_run
from bench.store import runs
from bench.store.lateness import LATE_TOLERANCE_MS
from bench.store.records import ALL_COLUMNS, COLUMNS, iter_records, read_records
from bench.store.summary import SUMMARY_INPUT_COLUMNS, SummaryAccumulator, summarize
from reports.data import _Timeline, load_run_data

ROWS = 2_000
TINY_CHUNK = 97  # many chunks, none aligned with a cell's rows


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("scale"), ROWS, cells=4, seed=3)


def _means_close(a: pd.DataFrame, b: pd.DataFrame) -> None:
    for col in ("encode_us_mean", "payload_bytes_mean", "latency_mean_ms"):
        if col in a:
            np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-12)


def test_chunks_hold_the_rows_of_the_whole_file(big_run: Path) -> None:
    path = big_run / runs.REQUESTS_FILE
    whole = read_records(path)
    chunks = list(iter_records(path, chunk_rows=TINY_CHUNK))
    assert len(chunks) == -(-ROWS // TINY_CHUNK)
    assert max(len(c) for c in chunks) == TINY_CHUNK
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)


def test_chunked_summary_equals_whole_file_summary_exactly(big_run: Path) -> None:
    chunked = load_run_data(big_run, chunk_rows=TINY_CHUNK)
    whole = load_run_data(big_run, chunk_rows=None)
    assert chunked.recorded == whole.recorded == ROWS
    # Percentiles, intervals, max, counts and rates: bit for bit; means: exact sums, so to the ulp.
    means = ["encode_us_mean", "payload_bytes_mean", "latency_mean_ms"]
    pd.testing.assert_frame_equal(
        chunked.summary.drop(columns=means), whole.summary.drop(columns=means), check_exact=True
    )
    _means_close(chunked.summary, whole.summary)
    assert len(chunked.summary) == 4


def test_percentiles_and_rates_are_numpy_on_every_row(big_run: Path) -> None:
    summary = load_run_data(big_run, chunk_rows=TINY_CHUNK).summary.set_index("cell")
    raw = pd.read_csv(big_run / runs.REQUESTS_FILE, keep_default_na=False)
    for cell, rows in raw.groupby("cell"):
        ok = rows[(rows["status"] == 200) & (rows["error"] == "")]["latency_ms"].to_numpy()
        for q in (50, 90, 95, 99):
            assert summary.loc[cell, f"p{q}_ms"] == np.percentile(ok, q)
        assert summary.loc[cell, "max_ms"] == ok.max()
        seconds = (rows["t_start"] + rows["latency_ms"] / 1000.0).max() - rows["t_start"].min()
        assert summary.loc[cell, "rps"] == len(rows) / seconds
        assert summary.loc[cell, "errors"] == len(rows) - len(ok)
        late = rows[rows["send_lag_ms"] > LATE_TOLERANCE_MS]
        assert summary.loc[cell, "late_busy"] == (late["lag_cause"] == "busy").sum()


def test_accumulator_equals_summarize_on_a_frame(big_run: Path) -> None:
    frame = read_records(big_run / runs.REQUESTS_FILE)
    acc = SummaryAccumulator()
    for start in range(0, len(frame), TINY_CHUNK):
        acc.add(frame.iloc[start : start + TINY_CHUNK])
    chunked, whole = acc.summary(), summarize(frame)
    pd.testing.assert_frame_equal(
        chunked.drop(columns=["encode_us_mean", "payload_bytes_mean"]),
        whole.drop(columns=["encode_us_mean", "payload_bytes_mean"]),
        check_exact=True,
    )
    _means_close(chunked, whole)


def test_extra_and_missing_optional_columns_and_a_torn_tail(tmp_path: Path, big_run: Path) -> None:
    frame = read_records(big_run / runs.REQUESTS_FILE).iloc[:500]
    # A newer writer's columns the reader does not know, and no optional columns at all.
    other = frame[list(COLUMNS)].assign(protocol="grpc", worker="host:1")
    path = tmp_path / "requests.csv"
    text = other.to_csv(index=False, lineterminator="\n")
    path.write_text(text + "1700000000.5,3.25,200,1,row-orjson,15", encoding="utf-8")  # killed mid-row
    whole = read_records(path)
    assert list(whole.columns) == list(ALL_COLUMNS)
    assert len(whole) == 500
    assert (whole["send_lag_ms"] == 0.0).all()
    assert (whole["lag_cause"] == "").all()
    chunks = list(iter_records(path, SUMMARY_INPUT_COLUMNS, chunk_rows=TINY_CHUNK))
    assert list(chunks[0].columns) == list(SUMMARY_INPUT_COLUMNS)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole[list(SUMMARY_INPUT_COLUMNS)])


def test_unmerged_cell_file_counts_once(tmp_path: Path, big_run: Path) -> None:
    run_dir = Path(shutil.copytree(big_run, tmp_path / "run", symlinks=True))
    frame = read_records(run_dir / runs.REQUESTS_FILE)
    cell = str(frame["cell"].iloc[-1])
    cell_dir = run_dir / runs.CELLS_DIR / cell
    cell_dir.mkdir(parents=True)
    # Killed between appending the cell's rows and noting the merge: its rows are in both files,
    # and its file has 7 rows the append had not reached.
    tail = frame[frame["cell"] == cell]
    extra = tail.iloc[-7:].assign(t_start=tail["t_start"].iloc[-7:] + 100.0)
    pd.concat([tail, extra]).to_csv(cell_dir / "records.csv", index=False)
    meta = json.loads((run_dir / runs.META_FILE).read_text())
    for entry in meta["cells"]:
        entry["merged"] = entry["cell"] != cell
    (run_dir / runs.META_FILE).write_text(json.dumps(meta))
    chunked = load_run_data(run_dir, chunk_rows=TINY_CHUNK)
    assert chunked.recorded == ROWS + 7
    row = chunked.summary.set_index("cell").loc[cell]
    assert row["requests"] == len(tail) + 7


def test_timeline_keeps_every_row_when_small_and_thins_evenly_when_big(big_run: Path) -> None:
    chunks = list(iter_records(big_run / runs.REQUESTS_FILE, SUMMARY_INPUT_COLUMNS, chunk_rows=TINY_CHUNK))
    whole = pd.concat(chunks, ignore_index=True)
    full = _Timeline(per_group=ROWS)
    small = _Timeline(per_group=100)
    for chunk in chunks:
        full.add(chunk)
        small.add(chunk)
    assert len(full.frame()) == ROWS
    thinned = small.frame()
    groups = thinned.groupby(["encoding", "batch"]).size()
    assert (groups <= 200).all()  # ok and failed rows, each at most 100
    assert (groups >= 50).all()
    # Evenly over the cell: its first row is kept and the kept rows span the cell's time.
    for cell, rows in whole.groupby("cell"):
        kept = thinned[thinned["cell"] == cell]
        assert kept["t_start"].min() == rows["t_start"].min()
        assert kept["t_start"].max() > rows["t_start"].quantile(0.9)
