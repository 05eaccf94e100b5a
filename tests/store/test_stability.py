"""bench.store.stability: measurement windows from growing records files, perf_analyzer's agreement rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.store.records import RecordWriter, RequestRecord
from bench.store.stability import RecordTail, Window, is_stable, measure_windows


def _row(t: float, latency_ms: float, status: int = 200) -> RequestRecord:
    return RequestRecord(t, latency_ms, status, 1, "row-fast", 100, 1.0, 50, "" if status == 200 else "boom", "c")


def test_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    tail = RecordTail()
    assert tail.read([path]).empty  # not there yet
    with RecordWriter(path) as writer:
        writer.write_many(_row(1000.0 + i, 10.0) for i in range(3))
    assert len(tail.read([path])) == 3
    with path.open("a") as f:
        f.write("1003.0,10.0,200,1,row-fast,100,1.0,50,,c,0.000,\n1004.0,1")  # a last line still being written
    frame = tail.read([path])
    assert list(frame["t_start"]) == [1000.0, 1001.0, 1002.0, 1003.0]
    with path.open("a") as f:
        f.write("0.0,200,1,row-fast,100,1.0,50,,c,0.000,\n")
    assert list(tail.read([path])["latency_ms"]) == [10.0, 10.0, 10.0, 10.0, 10.0]


def test_windows_by_completion_and_the_agreement_rule() -> None:
    # 100 req/s for 10 s; latency 10 ms, then 30 ms after t = 6 s (the server slowed down).
    t = 1000.0 + np.arange(1000) / 100
    latency = np.where(t < 1006.0, 10.0, 30.0)
    frame = pd.DataFrame({"t_start": t, "latency_ms": latency, "status": 200, "error": ""})
    windows = measure_windows(frame, origin_s=1000.0, window_s=2.0, now_s=1010.5)
    assert len(windows) == 5  # the clock is past 1010.25: five whole windows
    assert [w.requests for w in windows[:3]] == [199, 200, 200]  # completions, not sends, define a window
    assert is_stable(windows[:3], 10.0)
    assert not is_stable(windows[:4], 10.0)  # p99 went from 10 to 30 ms
    assert not is_stable(windows[:2], 50.0)  # fewer than three windows: not yet
    assert measure_windows(frame, origin_s=1000.0, window_s=2.0, now_s=1001.0) == []


def test_throughput_must_agree_too_and_empty_windows_are_unstable() -> None:
    w = [Window(0.0, 100, 100.0, 10.0), Window(1.0, 100, 100.0, 10.0), Window(2.0, 120, 120.0, 10.0)]
    assert not is_stable(w, 10.0)
    assert is_stable(w, 20.0)
    assert not is_stable([*w[:2], Window(2.0, 0, 0.0, float("nan"))], 50.0)
