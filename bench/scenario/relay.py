"""Records over Locust's own messages: a worker's side (buffer, send in batches, clock exchange, rejoin).

A Locust worker never writes records: it may run on another machine with no disk shared with
the master. :class:`RecordRelay` buffers its rows and sends them to the master with
``runner.send_message`` in batches bounded by rows (``--records-batch-rows``) and by time
(``--records-batch-s``); the master (bench.scenario.collector) appends them to ``--records``
as they arrive. The last batch of a test (``final``) carries the worker's load side-car and
how many rows it sent in all, so the master knows it has every row. A worker that dies loses at
most its unsent buffer. Local ``--processes N`` are workers too: one mechanism.

Messages, all dicts (msgpack)::

    worker -> master  tfsbench_records  {worker, seq, rows: [[str, ...]], final, sent, stats}
    worker -> master  tfsbench_hello    once its handlers are registered (Locust's own
                                        connect happens before, so a ping then would be lost)
    worker -> master  tfsbench_sends_done  its share of --max-requests is sent (the master ends
                                        the test once every worker said so)
    master -> worker  tfsbench_ping     {t_master}              on each hello and each connect
    worker -> master  tfsbench_pong     {t_master, t_worker, worker, version}
    master -> worker  tfsbench_clock    {offset_s}: how far the worker's clock is ahead (0 within
                                        the round trip's error), for the master's start time
    master -> worker  tfsbench_stop     stop the users and send the final batch (stay connected)
    master -> worker  tfsbench_detach   this master goes away: stay, and join the next one

Clocks: intended send times and latencies are measured on the worker that sent the request.
The master turns each row's ``t_start`` into its own clock with the worker's offset from the
ping (:func:`clock_offset`), so window starts and achieved rates across workers share one clock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from bench import __version__
from bench.store.load_stats import LoadStats
from bench.store.provenance import git_info

RECORDS_MSG = "tfsbench_records"
HELLO_MSG = "tfsbench_hello"
PING_MSG = "tfsbench_ping"
PONG_MSG = "tfsbench_pong"
CLOCK_MSG = "tfsbench_clock"
STOP_MSG = "tfsbench_stop"
DETACH_MSG = "tfsbench_detach"
SENDS_DONE_MSG = "tfsbench_sends_done"

BATCH_ROWS = 200  # rows per message: a few tens of KB, one msgpack frame
BATCH_S = 0.25  # a row waits at most this long on its worker (sweeps poll the master's file)
# A detached worker looks for a master this often once the last one stopped answering, and
# quits after REJOIN_GIVE_UP_S without one (a sweep's cells follow each other within seconds).
REJOIN_EVERY_S = 1.0
MASTER_GONE_S = 2.5
REJOIN_GIVE_UP_S = 600.0


def process_name() -> str:
    """``host:pid``: what the records' ``worker`` column says about the process that sent a row."""
    return f"{socket.gethostname()}:{os.getpid()}"


_VERSION: str | None = None


def project_version() -> str:
    """tfsbench's version and git revision (``-dirty`` with local changes): what master and workers must share."""
    global _VERSION
    if _VERSION is None:
        git = git_info()
        revision = str(git.get("revision") or "no-git")[:12]
        _VERSION = f"{__version__}+{revision}{'-dirty' if git.get('dirty') else ''}"
    return _VERSION


def clock_offset(t_master_sent: float, t_worker: float, t_master_received: float) -> tuple[float, float]:
    """``(offset_s, rtt_s)``: how far the worker's clock is ahead of the master's, and the round trip.

    The worker read its clock somewhere inside the round trip; taking the middle errs by at most
    half of it. An offset within that error is indistinguishable from none (processes on one
    machine share a clock), so it is reported as 0.
    """
    rtt = max(t_master_received - t_master_sent, 0.0)
    offset = t_worker - (t_master_sent + t_master_received) / 2.0
    return (0.0 if abs(offset) <= rtt / 2.0 else offset), rtt


class RecordRelay:
    """A worker's records on their way to the master: buffered, sent in bounded batches.

    ``send(data)`` is ``runner.send_message(RECORDS_MSG, data)``; a failed send (the master is
    gone) keeps the rows for the next try, so a short outage loses nothing and a dead master
    costs only this process's buffer.
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        worker: str,
        batch_rows: int = BATCH_ROWS,
        batch_s: float = BATCH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.worker = worker
        self.batch_rows = max(int(batch_rows), 1)
        self.batch_s = batch_s
        self.clock = clock
        self.rows: list[list[str]] = []
        self.first_s = 0.0
        self.seq = 0
        self.sent = 0
        self.finished = False
        self.send_error: str | None = None
        self.late: list[list[str]] = []

    def add(self, row: list[str]) -> None:
        if self.finished:
            # A request that completed after the final batch (Locust counts it too): it goes
            # out with send_late() when this process closes its scenario.
            self.late.append(row)
            return
        if not self.rows:
            self.first_s = self.clock()
        self.rows.append(row)
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def flush_if_due(self) -> None:
        """Send what waited ``batch_s`` (called on a timer)."""
        if self.rows and self.clock() - self.first_s >= self.batch_s:
            self.flush()

    def flush(self, final: bool = False, stats: LoadStats | None = None) -> bool:
        if self.finished or (not self.rows and not final):
            return True
        # Swapped out before sending: the send can yield to another greenlet, whose row then
        # goes into the new buffer instead of a list this batch already serialized.
        rows, self.rows = self.rows, []
        data: dict[str, Any] = {"worker": self.worker, "seq": self.seq, "rows": rows, "final": final}
        if final:
            data["sent"] = self.sent + len(rows)
            data["stats"] = stats_message(stats) if stats is not None else None
        try:
            self.send(data)
        except Exception as exc:  # Locust's RPCError; keep the rows (oldest first) for the next flush
            self.send_error = str(exc)
            self.rows = rows + self.rows
            return False
        self.seq += 1
        self.sent += len(rows)
        if final:
            self.finished = True
            self.late, self.rows = self.rows + self.late, []  # recorded while the final batch went out
        return True

    def send_late(self) -> None:
        """Rows recorded after the final batch, in one more batch (the master appends what it gets)."""
        if not self.late:
            return
        rows, self.late = self.late, []
        try:
            self.send({"worker": self.worker, "seq": self.seq, "rows": rows, "final": False, "late": True})
        except Exception as exc:  # Locust's RPCError: the master is gone
            self.send_error = str(exc)
            return
        self.seq += 1
        self.sent += len(rows)

    def finish(self, stats: LoadStats | None) -> bool:
        """The last batch of this test, with the side-car; True once it went out."""
        return self.flush(final=True, stats=stats)


def stats_message(stats: LoadStats) -> dict[str, Any]:
    data = asdict(stats)
    data["warnings"] = list(stats.warnings)
    data["lost_workers"] = list(stats.lost_workers)
    return data


def stats_from_message(data: dict[str, Any] | None) -> LoadStats | None:
    if not data:
        return None
    return LoadStats.from_json(json.dumps(data))


def pong(data: dict[str, Any], worker: str) -> dict[str, Any]:
    """The worker's answer to a ping: its clock now, its name and project version."""
    return {
        "t_master": data.get("t_master", 0.0),
        "t_worker": time.time(),
        "worker": worker,
        "version": project_version(),
    }


def shift_rows(rows: Sequence[list[str]], offset_s: float) -> Sequence[list[str]]:
    """Rows with ``t_start`` moved from the worker's clock onto the master's (``offset_s``: worker ahead)."""
    if offset_s == 0.0:
        return rows
    for row in rows:
        row[0] = f"{float(row[0]) - offset_s:.6f}"
    return rows


# --- the Locust side of a worker (called from bench.scenario.hooks) ---------------------------


def register_worker(environment: Any, on_stop: Callable[[], None], on_detach_late: Callable[[], None]) -> None:
    """A worker answers pings, stops on the master's ``tfsbench_stop`` and rejoins after a detach."""
    runner = environment.runner
    name = process_name()
    project_version()  # git runs now, not between a ping and its pong
    environment.tfsbench_master_seen_s = time.monotonic()

    def on_ping(environment: Any, msg: Any, **_kwargs: Any) -> None:
        environment.tfsbench_master_seen_s = time.monotonic()
        try:
            runner.send_message(PONG_MSG, pong(msg.data or {}, name))
        except Exception:  # the master is gone; it pings again on the next connect
            pass

    def on_clock(environment: Any, msg: Any, **_kwargs: Any) -> None:
        # The master's start time (shape steps, the constant-rate slot grid) on this clock.
        environment.tfsbench_clock_ahead_s = float((msg.data or {}).get("offset_s", 0.0))

    def on_stop_msg(environment: Any, msg: Any, **_kwargs: Any) -> None:
        on_stop()

    def on_detach(environment: Any, msg: Any, **_kwargs: Any) -> None:
        on_detach_late()  # rows after the final batch belong to this master's cell, not the next
        if not getattr(environment, "tfsbench_rejoining", False):
            environment.tfsbench_rejoining = True
            import gevent  # lazy: only inside a Locust process (it patches the process on import)

            gevent.spawn(_rejoin_loop, environment)

    def on_heartbeat(**_kwargs: Any) -> None:
        environment.tfsbench_master_seen_s = time.monotonic()

    runner.register_message(PING_MSG, on_ping)
    runner.register_message(CLOCK_MSG, on_clock)
    runner.register_message(STOP_MSG, on_stop_msg)
    runner.register_message(DETACH_MSG, on_detach)
    environment.events.heartbeat_received.add_listener(on_heartbeat)
    try:
        runner.send_message(HELLO_MSG, None)
    except Exception as exc:  # Locust's RPCError: the master pings again when this worker reconnects
        environment.tfsbench_hello_error = str(exc)


def _rejoin_loop(environment: Any) -> None:
    """After a detach: while no master answers, say ``client_ready`` every second (the next cell's
    master binds the same port and adds this worker); quit after REJOIN_GIVE_UP_S without one.

    A master that knows this worker answers its heartbeats; one that stopped answering for
    MASTER_GONE_S is gone (or never knew us), so we announce ourselves again.
    """
    # lazy: Locust and gevent only inside a Locust process (they patch the process on import)
    import gevent
    from locust import __version__ as locust_version
    from locust.exception import RPCError
    from locust.rpc import Message

    runner = environment.runner
    while True:
        gevent.sleep(REJOIN_EVERY_S)
        silent_s = time.monotonic() - environment.tfsbench_master_seen_s
        if silent_s < MASTER_GONE_S:
            continue
        if silent_s > REJOIN_GIVE_UP_S:
            runner.quit()
            return
        runner.last_heartbeat_timestamp = time.time()  # Locust's own check would quit this worker
        runner.worker_state = "ready"
        try:
            runner.client.send(Message("client_ready", locust_version, runner.client_id))  # type: ignore[no-untyped-call]  # Locust's Message is unannotated
        except RPCError:
            runner.reset_connection()
