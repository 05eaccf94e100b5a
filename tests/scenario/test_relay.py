"""Records over messages without Locust: a worker's batches, the master's file, clocks, per-worker verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.scenario.collector import RecordCollector
from bench.scenario.relay import RecordRelay, clock_offset, stats_from_message, stats_message
from bench.store.lateness import behind_workers
from bench.store.load_stats import LoadStats, read_load_stats
from bench.store.records import ALL_COLUMNS, RequestRecord, read_records
from bench.store.summary import summarize
from reports.data import _verdict


def _row(i: int, worker: str, t: float = 1000.0) -> list[str]:
    return RequestRecord(t + i, 5.0, 200, 1, "row-fast", 10, 1.0, 5, "", "c", worker=worker).to_row()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_relay_sends_bounded_batches_by_rows_and_by_time() -> None:
    sent: list[dict[str, Any]] = []
    clock = FakeClock()
    relay = RecordRelay(sent.append, "h:1", batch_rows=3, batch_s=0.25, clock=clock)
    for i in range(7):
        relay.add(_row(i, "h:1"))
    assert [len(m["rows"]) for m in sent] == [3, 3]  # the seventh waits
    relay.flush_if_due()
    assert len(sent) == 2  # not yet due
    clock.now = 0.3
    relay.flush_if_due()
    assert [len(m["rows"]) for m in sent] == [3, 3, 1]
    assert relay.finish(LoadStats(warmup_by_cell={"c": 2}, saturated=True))
    final = sent[-1]
    assert final["final"] is True
    assert final["sent"] == 7
    assert [m["seq"] for m in sent] == [0, 1, 2, 3]
    stats = stats_from_message(final["stats"])
    assert stats is not None
    assert stats.saturated
    assert stats.warmup_by_cell == {"c": 2}
    relay.add(_row(9, "h:1"))  # a request that completed after the final batch ...
    relay.flush()
    assert len(sent) == 4
    relay.send_late()  # ... goes out when the process closes its scenario
    assert sent[-1]["late"] is True
    assert len(sent[-1]["rows"]) == 1


def test_a_failed_send_keeps_the_rows_for_the_next_one() -> None:
    sent: list[dict[str, Any]] = []
    broken = True

    def send(data: dict[str, Any]) -> None:
        if broken:
            raise ConnectionError("master gone")
        sent.append(data)

    relay = RecordRelay(send, "h:1", batch_rows=2)
    relay.add(_row(0, "h:1"))
    relay.add(_row(1, "h:1"))
    assert relay.send_error == "master gone"
    broken = False
    relay.add(_row(2, "h:1"))
    assert [len(m["rows"]) for m in sent] == [3]


def test_a_row_recorded_while_a_batch_is_sent_goes_in_the_next_one() -> None:
    # Locust's send_message can yield to another greenlet, whose request then records its row
    # in the middle of the send: that row once vanished with the batch's buffer (119 of 120).
    sent: list[dict[str, Any]] = []
    during_send = iter(range(100, 103))

    def send(data: dict[str, Any]) -> None:
        sent.append({**data, "rows": list(data["rows"])})
        relay.add(_row(next(during_send), "h:1"))

    relay = RecordRelay(send, "h:1", batch_rows=2)
    relay.add(_row(0, "h:1"))
    relay.add(_row(1, "h:1"))  # a batch of 2; row 100 arrives while it is sent
    relay.finish(None)  # the final batch carries 100; row 101 arrives while it is sent ...
    relay.send_late()  # ... and goes out as late (row 102 arrives during that send: after the close)
    rows = [r for m in sent for r in m["rows"]]
    assert [float(r[0]) - 1000 for r in rows] == [0.0, 1.0, 100.0, 101.0]
    assert sent[1]["final"] is True
    assert sent[1]["sent"] == 3
    assert sent[2]["late"] is True


def test_clock_offset_is_the_middle_of_the_round_trip_and_zero_within_its_error() -> None:
    offset, rtt = clock_offset(100.0, 105.0011, 100.002)
    assert rtt == pytest.approx(0.002)
    assert offset == pytest.approx(5.0001)
    assert clock_offset(100.0, 100.0015, 100.002)[0] == 0.0  # one machine: indistinguishable from none


def test_collector_appends_batches_shifts_clocks_and_names_the_lost_worker(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    collector = RecordCollector(path)
    collector.begin(["a", "b"])
    collector.on_pong("a", "ha:1", offset_s=2.0, rtt_s=0.001)  # a's clock runs 2 s ahead
    collector.on_batch("a", {"worker": "ha:1", "rows": [_row(0, "ha:1", 1002.0)], "final": False})
    collector.on_batch("b", {"worker": "hb:2", "rows": [_row(0, "hb:2"), _row(1, "hb:2")], "final": False})
    assert len(read_records(path)) == 3  # appended as they arrive
    stats = stats_message(LoadStats(saturated=True, client_cpu_pct_max=99.0))
    collector.on_batch("a", {"worker": "ha:1", "rows": [], "final": True, "sent": 1, "stats": stats})
    assert collector.waiting_for({"a", "b"}) == ["b"]
    assert collector.waiting_for({"a"}) == []  # b is gone: nothing to wait for
    load = collector.close()
    assert load.lost_workers == ("hb:2",)
    assert not load.finished
    assert load.saturated_workers == ("ha:1",)
    assert load.by_worker["ha:1"]["clock_offset_ms"] == 2000.0
    assert load.by_worker["hb:2"]["rows"] == 2
    frame = read_records(path)
    assert sorted(frame["t_start"]) == [1000.0, 1000.0, 1001.0]  # a's row on the master's clock
    assert set(frame["worker"]) == {"ha:1", "hb:2"}
    side_car = read_load_stats(path)
    assert side_car is not None
    assert side_car.lost_workers == ("hb:2",)


def test_a_worker_short_of_its_own_count_is_lost(tmp_path: Path) -> None:
    collector = RecordCollector(tmp_path / "requests.csv")
    collector.begin(["a"])
    collector.on_batch("a", {"worker": "ha:1", "rows": [_row(0, "ha:1")], "final": True, "sent": 3})
    assert collector.lost() == ["ha:1"]


def test_one_worker_behind_is_named_not_diluted() -> None:
    # Worker x is idle-late on 20 of its 100 sends; y on none of its 400: 4 % of the cell, under
    # the 5 % limit, but x alone is far over it.
    frame = pd.DataFrame(
        {
            "worker": ["x"] * 100 + ["y"] * 400,
            "send_lag_ms": [50.0] * 20 + [0.0] * 80 + [0.0] * 400,
            "lag_cause": ["idle"] * 20 + [""] * 80 + [""] * 400,
        }
    )
    assert behind_workers(frame) == ("x",)
    # The same rows as records, through the summary a report reads, name x in the verdict.
    records = pd.DataFrame(
        [
            RequestRecord(
                1000.0 + i * 0.01, 5.0, 200, 1, "row-fast", 10, 1.0, 5, "", "c",
                send_lag_ms=lag, lag_cause=cause, worker=worker,
            ).to_row()
            for i, (worker, lag, cause) in enumerate(
                zip(frame["worker"], frame["send_lag_ms"], frame["lag_cause"], strict=True)
            )
        ],
        columns=list(ALL_COLUMNS),
    )  # fmt: skip
    for column in ("t_start", "latency_ms", "send_lag_ms", "encode_us"):
        records[column] = records[column].astype(float)
    for column in ("status", "batch", "payload_bytes", "response_bytes"):
        records[column] = records[column].astype(int)
    (row,) = (r for _, r in summarize(records).iterrows())
    assert row["late_idle"] == 20
    assert row["behind_workers"] == "x"
    client, _server, note = _verdict(row)
    assert not client
    assert "worker x behind" in note
    one_worker = records[records["worker"] == "x"]  # one process: the cell-wide verdict says it all
    assert summarize(one_worker)["behind_workers"].tolist() == [""]
