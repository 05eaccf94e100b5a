"""The one lateness rule: when a send counts as late, who made it late, and how much lateness a cell may have.

An open-model send is late when it started more than :func:`late_tolerance_ms` after its
intended time (``send_lag_ms`` in the records). Each record also says why (``lag_cause``), from
what its user knew at the send (``bench.scenario.schedule.LagAccount``):

``busy``
    the user was still waiting on its previous reply when the slot came, and that reply was
    late because of the server or the network: the *target* is behind.
``idle``
    the user was free (or its previous reply had arrived and sat in the generator's own event
    loop), but the generator got to the send late: event-loop lag or CPU, the *load generator*
    is behind.
``""``
    closed model (no schedule), or a records file from before causes were recorded.

A cell whose late sends of one cause exceed :data:`LATE_SHARE_LIMIT` of its requests did not
hold its schedule for that reason: ``idle`` ones make the cell "client saturated" whatever the
server did (its numbers measure the load generator); ``busy`` ones mean the server is past
what it can answer at that load. The scheduler, the summaries, the reports and the capacity
probes all use this module, so they never disagree about a send.

Usage::

    tolerance = late_tolerance_ms(limit_ms=100.0)       # capacity probes at p99<100ms: 25 ms
    late = lateness(frame, tolerance)                   # frame: read_records(...) rows
    late.generator_behind, late.late_idle, late.share_idle
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Gevent's scheduling jitter on a busy machine is a few ms; a send later than this after its
# intended time fell behind (its user was still waiting for a reply, or the process ran late) ...
LATE_TOLERANCE_MS = 10.0
# ... and a cell with more than this share of late sends (of one cause) did not hold its schedule.
LATE_SHARE_LIMIT = 0.05

CAUSE_BUSY = "busy"  # the user waited on its previous reply: the server (or network) is behind
CAUSE_IDLE = "idle"  # the user was free, the generator sent late: the load generator is behind
LAG_CAUSES: tuple[str, ...] = (CAUSE_BUSY, CAUSE_IDLE)


def late_tolerance_ms(limit_ms: float | None = None) -> float:
    """How late a send may start before it counts as late: 10 ms, or a quarter of an SLO's limit.

    With an SLO (capacity runs) a send that starts a quarter of the limit late has used a
    quarter of its latency budget before it left; below that, lateness is jitter that the
    latency (counted from the intended send) already carries.
    """
    if limit_ms is None or not limit_ms > 0:
        return LATE_TOLERANCE_MS
    return max(LATE_TOLERANCE_MS, limit_ms / 4.0)


@dataclass(frozen=True)
class Lateness:
    """Late sends of one cell (or probe), by cause. ``requests`` is the rows they are a share of."""

    requests: int
    late: int
    late_busy: int
    late_idle: int
    tolerance_ms: float = LATE_TOLERANCE_MS

    @property
    def late_unknown(self) -> int:
        """Late sends without a recorded cause (records written before causes were)."""
        return self.late - self.late_busy - self.late_idle

    def share(self, count: int) -> float:
        return count / self.requests if self.requests else 0.0

    @property
    def allowed(self) -> int:
        """Late sends of one cause a cell may have and still count as on schedule."""
        return int(self.requests * LATE_SHARE_LIMIT)

    @property
    def generator_behind(self) -> bool:
        """More than the allowed share of sends were late because of the load generator."""
        return self.late_idle > self.allowed

    @property
    def server_behind(self) -> bool:
        """More than the allowed share of sends were late because their user waited on the server."""
        return self.late_busy > self.allowed

    @property
    def unknown_behind(self) -> bool:
        return self.late_unknown > self.allowed


def late_mask(send_lag_ms: np.ndarray, tolerance_ms: float = LATE_TOLERANCE_MS) -> np.ndarray:
    """True for the sends that count as late (the rule itself; summaries read it chunk by chunk)."""
    return np.asarray(send_lag_ms, dtype=float) > tolerance_ms


def lateness(frame: pd.DataFrame, tolerance_ms: float = LATE_TOLERANCE_MS) -> Lateness:
    """Count the late sends of ``frame`` (records rows) by cause; missing columns count as on time."""
    n = len(frame)
    if n == 0 or "send_lag_ms" not in frame:
        return Lateness(n, 0, 0, 0, tolerance_ms)
    late = late_mask(frame["send_lag_ms"].to_numpy(dtype=float), tolerance_ms)
    if "lag_cause" in frame:
        cause = frame["lag_cause"].fillna("").astype(str).to_numpy()
    else:
        cause = np.full(n, "", dtype=object)
    return Lateness(
        requests=n,
        late=int(late.sum()),
        late_busy=int((late & (cause == CAUSE_BUSY)).sum()),
        late_idle=int((late & (cause == CAUSE_IDLE)).sum()),
        tolerance_ms=tolerance_ms,
    )


def behind_workers(frame: pd.DataFrame, tolerance_ms: float = LATE_TOLERANCE_MS) -> tuple[str, ...]:
    """The workers (records' ``worker`` column) that fell behind on their own rows.

    Judged per worker, against that worker's share of the rows: one saturated worker among
    idle ones is named, instead of being diluted into a cell-wide share under the limit.
    """
    if frame.empty or "worker" not in frame:
        return ()
    tallies = {}
    for name, rows in frame.groupby("worker", sort=True):
        counted = lateness(rows, tolerance_ms)
        tallies[str(name)] = (counted.requests, counted.late_idle)
    return workers_behind(tallies)


def workers_behind(tallies: Mapping[str, tuple[int, int]]) -> tuple[str, ...]:
    """:func:`behind_workers` from counts kept per worker, ``name -> (rows, idle-caused late
    sends)`` (a summary read in chunks keeps these instead of the rows), sorted by name."""
    return tuple(
        name
        for name, (rows, late_idle) in sorted(tallies.items())
        if name and Lateness(rows, late_idle, 0, late_idle).generator_behind
    )
