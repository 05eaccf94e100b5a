"""bench.store.records: records written row by row, read back, merged without loss, summarized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import ResultsError
from bench.store.load_stats import LoadStats, combine_load_stats, read_load_stats, write_load_stats
from bench.store.records import ALL_COLUMNS, COLUMNS, RecordWriter, RequestRecord, merge_records, read_records
from bench.store.summary import SUMMARY_COLUMNS, summarize


def _record(i: int, **overrides: object) -> RequestRecord:
    values: dict[str, object] = {
        "t_start": 1_700_000_000.0 + i * 0.01,
        "latency_ms": 10.0 + i,
        "status": 200,
        "batch": 16,
        "encoding": "row-orjson",
        "payload_bytes": 1000 + i,
        "encode_us": 50.0,
        "response_bytes": 300,
        "error": "",
        "cell": "c1",
        "send_lag_ms": 0.0,
    }
    values.update(overrides)
    return RequestRecord(**values)  # type: ignore[arg-type]


def test_row_round_trip_keeps_every_field() -> None:
    record = _record(3, error='HTTP 400: bad, "quoted"\nline', send_lag_ms=12.5)
    assert RequestRecord.from_row(record.to_row()) == record
    assert list(ALL_COLUMNS[: len(COLUMNS)]) == [
        "t_start",
        "latency_ms",
        "status",
        "batch",
        "encoding",
        "payload_bytes",
        "encode_us",
        "response_bytes",
        "error",
        "cell",
    ]


def test_writer_flushes_each_row_and_appends_header_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "requests.csv"
    writer = RecordWriter(path)
    writer.write(_record(0))
    # Flushed: visible to a reader while the writer is still open.
    assert len(read_records(path)) == 1
    writer.close()
    with RecordWriter(path) as again:
        again.write_many([_record(1, error="boom", status=500), _record(2)])
    text = path.read_text()
    assert text.count("t_start,") == 1
    frame = read_records(path)
    assert list(frame.columns) == list(ALL_COLUMNS)
    assert frame["error"].tolist() == ["", "boom", ""]
    assert frame["status"].tolist() == [200, 500, 200]


def test_partial_last_row_is_dropped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    with RecordWriter(path) as writer:
        writer.write_many(_record(i) for i in range(3))
    with path.open("a") as handle:
        handle.write("1700000001.0,12.")  # a writer killed mid-row
    assert len(read_records(path)) == 3


def test_read_records_errors_are_results_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no records file"):
        read_records(tmp_path / "missing.csv")
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ResultsError, match="missing columns"):
        read_records(bad)


def test_reads_files_without_the_extra_column(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    row = _record(0).to_row()[: len(COLUMNS)]
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(row) + "\n")
    frame = read_records(path)
    assert frame["send_lag_ms"].tolist() == [0.0]


def test_merge_keeps_every_row_sorted(tmp_path: Path) -> None:
    parts = []
    for p in range(3):
        part = tmp_path / f"requests.{100 + p}.csv"
        with RecordWriter(part) as writer:
            writer.write_many(_record(i * 3 + p, cell=f"p{p}") for i in range(50))
        parts.append(part)
    out = tmp_path / "requests.csv"
    with RecordWriter(out) as writer:  # rows already in the target survive the merge
        writer.write(_record(-1))
    assert merge_records(parts, out) == 151
    frame = read_records(out)
    assert len(frame) == 151
    assert frame["t_start"].is_monotonic_increasing
    assert sorted(frame["cell"].unique()) == ["c1", "p0", "p1", "p2"]
    assert all(part.exists() for part in parts)


def test_summarize_percentiles_from_raw_rows() -> None:
    rng = np.random.default_rng(0)
    latencies = rng.uniform(5, 200, size=1000)
    frame = pd.DataFrame(
        [
            _record(
                i, latency_ms=float(latencies[i]), t_start=1000.0 + i * 0.01, send_lag_ms=20.0 if i < 7 else 0.0
            ).__dict__
            for i in range(1000)
        ]
    )
    frame.loc[0, "status"] = 500
    frame.loc[0, "error"] = "HTTP 500: oops"
    frame.loc[1, "encoding"] = "b64-png"
    summary = summarize(frame, LoadStats(warmup_by_cell={"c1": 4}, client_cpu_pct_max=55.0))
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    row = summary[summary.encoding == "row-orjson"].iloc[0]
    rest = np.delete(latencies, 1)
    assert row["requests"] == 999
    assert row["errors"] == 1
    assert row["p50_ms"] == pytest.approx(np.percentile(rest, 50))
    assert row["p99_ms"] == pytest.approx(np.percentile(rest, 99))
    assert row["max_ms"] == pytest.approx(rest.max())
    assert row["late_sends"] == 6  # rows 0 and 2..6 (row 1 is the other encoding)
    assert row["warmup_excluded"] == 4
    seconds = (frame["t_start"] + frame["latency_ms"] / 1000).max() - frame["t_start"].min()
    assert row["rps"] == pytest.approx(999 / seconds)
    assert row["images_per_s"] == pytest.approx(row["rps"] * 16 * 998 / 999)


def test_load_stats_round_trip_and_combine(tmp_path: Path) -> None:
    records = tmp_path / "requests.csv"
    assert read_load_stats(records) is None
    a = LoadStats(warmup_by_cell={"c": 2}, client_cpu_pct_max=40.0, client_cpu_pct_mean=30.0, finished=True)
    b = LoadStats(warmup_by_cell={"c": 3}, client_cpu_pct_max=97.0, saturated=True, warnings=("hot",))
    write_load_stats(records, a)
    assert read_load_stats(records) == a
    both = combine_load_stats([a, b])
    assert both.processes == 2
    assert both.warmup_excluded == 5
    assert both.client_cpu_pct_max == 97.0
    assert both.saturated
    assert not both.finished
