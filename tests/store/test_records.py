"""bench.store.records: records written row by row, read back, merged without loss, summarized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import ResultsError
from bench.store.lateness import LATE_TOLERANCE_MS, late_tolerance_ms, lateness
from bench.store.load_stats import LoadStats, combine_load_stats, read_load_stats, time_bins, write_load_stats
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
        "lag_cause": "",
    }
    values.update(overrides)
    return RequestRecord(**values)  # type: ignore[arg-type]


def test_row_round_trip_keeps_every_field() -> None:
    record = _record(
        3,
        error='HTTP 400: bad, "quoted"\nline',
        send_lag_ms=12.5,
        lag_cause="busy",
        worker="h:7",
        target="10.0.0.6:8501",
    )
    assert RequestRecord.from_row(record.to_row()) == record
    assert ALL_COLUMNS[len(COLUMNS) :] == ("send_lag_ms", "lag_cause", "protocol", "worker", "target")
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


def test_reads_files_without_the_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    row = _record(0).to_row()[: len(COLUMNS)]
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(row) + "\n")
    frame = read_records(path)
    assert frame["send_lag_ms"].tolist() == [0.0]
    assert frame["lag_cause"].tolist() == [""]
    assert frame["target"].tolist() == [""]
    # A file from before lag_cause (send_lag_ms was its only extra column).
    older = tmp_path / "older.csv"
    row = _record(0, send_lag_ms=12.5).to_row()[: len(COLUMNS) + 1]
    older.write_text(",".join((*COLUMNS, "send_lag_ms")) + "\n" + ",".join(row) + "\n")
    frame = read_records(older)
    assert frame["send_lag_ms"].tolist() == [12.5]
    assert frame["lag_cause"].tolist() == [""]
    assert list(frame.columns) == list(ALL_COLUMNS)


def test_records_from_before_the_protocol_column_are_rest(tmp_path: Path) -> None:
    path = tmp_path / "before-grpc.csv"
    # The columns up to lag_cause: protocol and everything added after it came later.
    before = ALL_COLUMNS[: ALL_COLUMNS.index("protocol")]
    rows = [_record(i, lag_cause="idle").to_row()[: len(before)] for i in range(3)]
    path.write_text("\n".join(",".join(r) for r in [list(before), *rows]) + "\n")
    frame = read_records(path)
    assert frame["protocol"].tolist() == ["rest"] * 3
    assert frame["target"].tolist() == [""] * 3
    assert RequestRecord.from_row(dict(zip(before, rows[0], strict=True))).protocol == "rest"
    assert set(summarize(frame)["protocol"]) == {"rest"}
    # Merged with a file that has the column, each row keeps what it was.
    grpc = tmp_path / "grpc.csv"
    with RecordWriter(grpc) as writer:
        writer.write(_record(9, protocol="grpc", encoding="grpc-tensor-content"))
    merged = tmp_path / "merged.csv"
    assert merge_records([path, grpc], merged) == 4
    assert read_records(merged)["protocol"].tolist() == ["rest", "rest", "rest", "grpc"]


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
                i,
                latency_ms=float(latencies[i]),
                t_start=1000.0 + i * 0.01,
                send_lag_ms=20.0 if i < 7 else 0.0,
                lag_cause="busy" if i < 4 else "idle",
            ).__dict__
            for i in range(1000)
        ]
    )
    frame.loc[0, "status"] = 500
    frame.loc[0, "error"] = "HTTP 500: oops"
    frame.loc[0, "latency_ms"] = 0.4  # a fast failure must not pull the percentiles down
    frame.loc[1, "encoding"] = "b64-png"
    summary = summarize(frame, LoadStats(warmup_by_cell={"c1": 4}, client_cpu_pct_max=55.0))
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    row = summary[summary.encoding == "row-orjson"].iloc[0]
    ok = latencies[2:]  # row 0 failed, row 1 is the other encoding
    assert row["requests"] == 999
    assert row["errors"] == 1
    assert row["samples"] == 998
    assert row["error_p50_ms"] == pytest.approx(0.4)
    for q in (50, 90, 95, 99):
        assert row[f"p{q}_ms"] == pytest.approx(np.percentile(ok, q))
        # The 95 % interval: order statistics around the estimate, from the same successful rows.
        assert row[f"p{q}_ci_low_ms"] <= row[f"p{q}_ms"] <= row[f"p{q}_ci_high_ms"]
        assert row[f"p{q}_ci_low_ms"] in ok
        assert row[f"p{q}_ci_high_ms"] in ok
    assert row["rough"] == ""  # 998 uniform samples: every interval well under half its value
    assert row["max_ms"] == pytest.approx(ok.max())
    assert row["late_sends"] == 6  # rows 0 and 2..6 (row 1 is the other encoding)
    assert (row["late_busy"], row["late_idle"]) == (3, 3)
    assert row["warmup_excluded"] == 4
    seconds = (frame["t_start"] + frame["latency_ms"] / 1000).max() - frame["t_start"].min()
    assert row["rps"] == pytest.approx(999 / seconds)
    assert row["images_per_s"] == pytest.approx(row["rps"] * 16 * 998 / 999)
    # One row of the other encoding: no interval for anything, every percentile rough.
    single = summary[summary.encoding == "b64-png"].iloc[0]
    assert single["rough"] == "p50,p90,p95,p99"
    assert np.isnan(single["p99_ci_high_ms"])


def test_load_stats_round_trip_and_combine(tmp_path: Path) -> None:
    records = tmp_path / "requests.csv"
    assert read_load_stats(records) is None
    a = LoadStats(
        warmup_by_cell={"c": 2},
        client_cpu_pct_max=40.0,
        client_cpu_pct_mean=30.0,
        loop_lag_ms_p99=1.5,
        stopping_unix_s=1000.2,
        unanswered_by_cell={"c": time_bins([999.95, 1000.01, 1000.02])},
        finished=True,
    )
    b = LoadStats(
        warmup_by_cell={"c": 3},
        client_cpu_pct_max=97.0,
        client_cpu_pct_mean=95.0,
        saturated=True,
        loop_lag_ms_p99=40.0,
        stopping_unix_s=1000.1,
        unanswered_by_cell={"c": time_bins([1000.05])},
        warnings=("hot",),
    )
    write_load_stats(records, a)
    assert read_load_stats(records) == a
    both = combine_load_stats([a, b])
    assert both.processes == 2
    assert both.warmup_excluded == 5
    # The worst process, never a mean over processes: one saturated process spoils its rows.
    assert both.client_cpu_pct_max == 97.0
    assert both.client_cpu_pct_mean == 95.0
    assert both.loop_lag_ms_p99 == 40.0
    assert both.saturated
    assert not both.finished
    assert both.stopping_unix_s == 1000.1
    assert both.unanswered("c") == 4
    assert both.unanswered_by_cell["c"] == [[999.9, 1.0], [1000.0, 3.0]]
    # Partial bins count pro rata: half of the 1000.0 bin lies before 1000.05.
    assert both.unanswered_between("c", 999.0, 1000.05) == pytest.approx(1.0 + 1.5)


def test_lateness_counts_late_sends_by_cause() -> None:
    frame = pd.DataFrame(
        {
            "send_lag_ms": [0.0, 5.0, 11.0, 30.0, 200.0, 12.0, 40.0],
            "lag_cause": ["idle", "busy", "busy", "idle", "idle", "", "busy"],
        }
    )
    late = lateness(frame, LATE_TOLERANCE_MS)
    assert (late.late, late.late_busy, late.late_idle, late.late_unknown) == (5, 2, 2, 1)
    assert late.allowed == 0  # 5 % of 7 rows
    assert late.generator_behind
    assert late.server_behind
    # A capacity run's SLO widens the tolerance: a quarter of the limit.
    assert late_tolerance_ms(100.0) == 25.0
    assert late_tolerance_ms(20.0) == LATE_TOLERANCE_MS
    assert late_tolerance_ms(None) == LATE_TOLERANCE_MS
    assert lateness(frame, late_tolerance_ms(100.0)).late == 3
    assert lateness(frame.drop(columns="lag_cause"), 10.0).late_unknown == 5
