"""Records over Locust's own messages: the master's side (append batches, wait for the last ones, name the lost).

The master of a distributed run (``--master``, or ``--processes N``) holds the only records
file: :class:`RecordCollector` appends each worker's batches (bench.scenario.relay) to
``--records`` as they arrive, in the master's cwd, each row's ``t_start`` moved onto the
master's clock by that worker's offset. At the stop the master asks every worker for its final
batch and waits (bounded) until each has sent it or is gone; a worker that never sent it is
*lost*: its unsent rows are gone, and the side-car (``requests.load.json``) names it in
``lost_workers``, which ``tfsbench sweep``/``capacity`` turn into an incomplete run naming it.
The side-car combines the workers' own (the worst worker's CPU and loop lag, counts added) and
keeps each one's figures in ``by_worker``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import ResultsError
from bench.scenario.relay import (
    CLOCK_MSG,
    DETACH_MSG,
    HELLO_MSG,
    PING_MSG,
    PONG_MSG,
    RECORDS_MSG,
    STOP_MSG,
    clock_offset,
    project_version,
    shift_rows,
    stats_from_message,
)
from bench.store.load_stats import LoadStats, combine_load_stats, write_load_stats
from bench.store.records import RecordWriter

log = logging.getLogger("tfsbench.load")

FINAL_WAIT_S = 15.0  # after the users' --stop-timeout: how long the master waits for final batches
VERSION_MISMATCH_EXIT_CODE = 3
# A worker flooding the master with batches has its heartbeats queued behind them, and Locust
# may call it missing; one whose batch came this recently is still alive.
STILL_SENDING_S = 3.0


@dataclass
class WorkerRecords:
    """What the master knows about one worker's records in this test."""

    name: str
    rows: int = 0
    sent: int | None = None  # the worker's own count, from its final batch
    final: bool = False
    stats: LoadStats | None = None
    offset_s: float = 0.0
    rtt_s: float = 0.0
    last_batch_s: float = 0.0  # time.monotonic() of its latest batch


class RecordCollector:
    """The master's records file, fed by worker batches; one per Locust master process."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.writer: RecordWriter | None = None
        self.workers: dict[str, WorkerRecords] = {}  # by Locust client id
        self.expected: set[str] = set()
        self.failure: str | None = None
        self.closed = False
        self.opened = False  # the file was written in an earlier test of this master

    def begin(self, client_ids: list[str]) -> None:
        """A test starts on these workers: each owes a final batch at its stop.

        A master that runs several tests (the web UI's start after a stop) appends each one's
        rows to the same file; the clock offsets measured at connect are kept.
        """
        self.closed = False
        self.failure = None
        self.expected = set(client_ids)
        for cid, worker in list(self.workers.items()):
            self.workers[cid] = replace(worker, rows=0, sent=None, final=False, stats=None)

    def on_pong(self, client_id: str, name: str, offset_s: float, rtt_s: float) -> None:
        worker = self.workers.setdefault(client_id, WorkerRecords(name))
        worker.name, worker.offset_s, worker.rtt_s = name, offset_s, rtt_s

    def on_batch(self, client_id: str, data: dict[str, Any]) -> None:
        worker = self.workers.setdefault(client_id, WorkerRecords(str(data.get("worker") or client_id)))
        self.expected.add(client_id)
        rows = data.get("rows") or []
        if rows and self.path is not None and self.failure is None:
            try:
                if self.writer is None:
                    self.writer = RecordWriter(self.path)
                self.writer.write_rows(shift_rows(rows, worker.offset_s))
            except ResultsError as exc:
                self.failure = str(exc)
                sys.stderr.write(f"tfsbench: {exc}; later rows are not written\n")
        worker.rows += len(rows)
        worker.last_batch_s = time.monotonic()
        if data.get("final"):
            worker.final = True
            worker.sent = int(data.get("sent") or 0)
            worker.stats = stats_from_message(data.get("stats"))

    def sending(self, within_s: float = STILL_SENDING_S) -> set[str]:
        """Workers whose batches still arrive: alive, whatever their heartbeats say."""
        now = time.monotonic()
        return {cid for cid, w in self.workers.items() if now - w.last_batch_s < within_s}

    def waiting_for(self, alive: set[str]) -> list[str]:
        """Expected workers still alive that have not sent their final batch."""
        return sorted(c for c in self.expected if c in alive and not self.workers.get(c, WorkerRecords(c)).final)

    def lost(self) -> list[str]:
        """Names of expected workers without a final batch, or whose rows fell short of their own count."""
        out = []
        for cid in sorted(self.expected):
            worker = self.workers.get(cid, WorkerRecords(cid))
            if not worker.final or (worker.sent is not None and worker.rows < worker.sent):
                out.append(worker.name)
        return out

    def load_stats(self) -> LoadStats:
        lost = self.lost()
        parts = [w.stats for w in self.workers.values() if w.stats is not None]
        combined = combine_load_stats(parts) if parts else LoadStats(processes=0)
        by_worker = {
            w.name: {
                "client_cpu_pct_max": w.stats.client_cpu_pct_max if w.stats else 0.0,
                "client_cpu_pct_mean": w.stats.client_cpu_pct_mean if w.stats else 0.0,
                "saturated": float(bool(w.stats and w.stats.saturated)),
                "loop_lag_ms_p99": w.stats.loop_lag_ms_p99 if w.stats else 0.0,
                "loop_lag_ms_max": w.stats.loop_lag_ms_max if w.stats else 0.0,
                "rows": float(w.rows),
                "clock_offset_ms": round(w.offset_s * 1000.0, 3),
                "clock_rtt_ms": round(w.rtt_s * 1000.0, 3),
            }
            for cid, w in sorted(self.workers.items())
            if cid in self.expected
        }
        warnings = list(combined.warnings)
        if lost:
            warnings.append(f"workers lost before their last records arrived: {', '.join(lost)}")
        if self.failure:
            warnings.append(self.failure)
        return replace(
            combined,
            processes=len(by_worker),
            by_worker=by_worker,
            lost_workers=tuple(lost),
            warnings=tuple(warnings),
            finished=not lost and self.failure is None,
        )

    def close(self) -> LoadStats:
        stats = self.load_stats()
        if not self.closed:
            self.closed = True
            if self.writer is not None:
                self.writer.close()
                self.writer = None
                self.opened = True
            if self.path is not None:
                try:
                    if not self.opened:  # no row arrived: an empty file still says the run recorded nothing
                        RecordWriter(self.path).close()
                    write_load_stats(self.path, stats)
                except ResultsError as exc:
                    sys.stderr.write(f"tfsbench: {exc}\n")
        return stats


# --- the Locust side of the master (called from bench.scenario.hooks) -------------------------

COLLECTOR_ATTR = "tfsbench_collector"


def register_master(environment: Any, records: Path | None, keep_workers: bool) -> RecordCollector:
    """Listen for batches and pongs; ping every worker as it connects (clock offset, version)."""
    runner = environment.runner
    collector = RecordCollector(records)
    setattr(environment, COLLECTOR_ATTR, collector)
    environment.tfsbench_keep_workers = keep_workers
    mine = project_version()

    def on_records(environment: Any, msg: Any, **_kwargs: Any) -> None:
        collector.on_batch(msg.node_id, msg.data or {})

    def on_pong(environment: Any, msg: Any, **_kwargs: Any) -> None:
        data = msg.data or {}
        offset, rtt = clock_offset(float(data.get("t_master", 0.0)), float(data.get("t_worker", 0.0)), time.time())
        name = str(data.get("worker") or msg.node_id)
        collector.on_pong(msg.node_id, name, offset, rtt)
        runner.send_message(CLOCK_MSG, {"offset_s": offset}, msg.node_id)
        theirs = str(data.get("version") or "?")
        if theirs != mine:
            refuse_worker(environment, msg.node_id, name, theirs, mine)
        elif abs(offset) > 0.05:
            log.warning(
                "tfsbench: worker %s's clock is %+.1f ms off this master's; its rows are shifted", name, offset * 1000
            )

    def on_connect(client_id: str, **_kwargs: Any) -> None:
        runner.send_message(PING_MSG, {"t_master": time.time()}, client_id)

    def on_hello(environment: Any, msg: Any, **_kwargs: Any) -> None:
        on_connect(msg.node_id)

    runner.register_message(HELLO_MSG, on_hello)
    runner.register_message(RECORDS_MSG, on_records)
    runner.register_message(PONG_MSG, on_pong)
    environment.events.worker_connect.add_listener(on_connect)
    return collector


def refuse_worker(environment: Any, client_id: str, name: str, theirs: str, mine: str) -> None:
    """A worker from another checkout would measure something else: say so in one line and end.

    The worker is told to quit; the master keeps what it has (rows are on disk as they arrive,
    the side-car is written now) and exits with VERSION_MISMATCH_EXIT_CODE at once: Locust's
    own quit cannot end a headless master still waiting for its --expect-workers.
    """
    if getattr(environment, "tfsbench_refused", False):
        return  # a second pong of the same worker (one ping per connect and per hello)
    environment.tfsbench_refused = True
    line = (
        f"tfsbench: worker {name} runs tfsbench {theirs}, this master {mine}: start every worker from the same checkout"
    )
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    log.error(line)
    # lazy: Locust and gevent only inside a Locust process (they patch the process on import)
    import gevent
    from locust.rpc import Message

    environment.runner.server.send_to_client(Message("quit", None, client_id))  # type: ignore[no-untyped-call]  # Locust's Message is unannotated
    collector: RecordCollector | None = getattr(environment, COLLECTOR_ATTR, None)
    if collector is not None and collector.path is not None and not collector.closed:
        collector.close()

    def leave() -> None:
        gevent.sleep(0.2)  # the quit message on its way out
        os._exit(VERSION_MISMATCH_EXIT_CODE)

    gevent.spawn(leave)


def finish_workers(environment: Any, wait_s: float = FINAL_WAIT_S) -> LoadStats | None:
    """Master: get every worker's final batch (bounded), write the side-car, name the lost ones.

    Each worker is told to stop (``tfsbench_stop``: its users stop with ``--stop-timeout``, its
    final stats and then its final batch go out on its one connection, so once the batch is here
    Locust has counted every recorded request). A worker that died is noticed by Locust's
    heartbeat (missing) or ends the wait at its bound. With ``--keep-workers`` the workers are
    then detached instead of quit: they join the next master on the same port.
    """
    # lazy: Locust and gevent only inside a Locust process (they patch the process on import)
    import gevent
    from locust.runners import STATE_MISSING

    collector: RecordCollector | None = getattr(environment, COLLECTOR_ATTR, None)
    if collector is None or collector.closed:
        return None
    runner = environment.runner
    for client in list(runner.clients.all):
        if client.state != STATE_MISSING:
            runner.send_message(STOP_MSG, None, client.id)
    if collector.path is None:  # no --records: the workers relay nothing, no batch to wait for
        collector.closed = True
        if environment.tfsbench_keep_workers:
            detach_workers(environment)
        return None
    deadline = time.monotonic() + wait_s + float(environment.stop_timeout or 0.0)

    def alive() -> set[str]:
        return {c.id for c in runner.clients.all if c.state != STATE_MISSING} | collector.sending()

    while collector.waiting_for(alive()) and time.monotonic() < deadline and len(runner.greenlet):
        gevent.sleep(0.05)
    stats = collector.close()
    if stats.lost_workers:
        line = (
            f"tfsbench: run incomplete: worker {', '.join(stats.lost_workers)} stopped before its last "
            "records arrived (every row received is kept)"
        )
        sys.stderr.write(line + "\n")
        log.error(line)
    if environment.tfsbench_keep_workers:
        detach_workers(environment)
    return stats


def detach_workers(environment: Any) -> None:
    """Tell the workers this master goes away without quitting them, and forget them (Locust's quit
    would send them ``quit``)."""
    runner = environment.runner
    for client in list(runner.clients.all):
        runner.send_message(DETACH_MSG, None, client.id)
    for cid in list(runner.clients.keys()):
        del runner.clients[cid]
