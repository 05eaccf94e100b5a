"""One capacity probe judged from its raw records and load side-car, and the calibration run's ceiling.

:func:`probe_result` is what ``tfsbench capacity`` decides a probe from (bench.commands.capacity_run
runs the probes, bench.commands.capacity_search picks the rates): the measured window, the sends due
in it (answered rows plus the sends the users still owed at the stop, from their own schedules),
late sends by cause, and the SLO percentile of the successful requests with its 95 % interval.
:func:`calibration_result` turns the short closed run before a search into its throughput ceiling.

Usage::

    result, warmup_rows = probe_result(read_records(files), 120.0, 99.0, 1.0, 25.0, 8.0, load, cell)
    result.passes(limit_ms=100.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.commands.capacity_search import ProbeResult
from bench.store.lateness import lateness
from bench.store.load_stats import LoadStats
from bench.store.percentiles import percentile_ci
from bench.store.summary import failed_mask


def probe_result(
    frame: pd.DataFrame | None,
    rate_rps: float,
    percentile: float,
    warmup_s: float,
    late_tolerance_ms: float,
    duration_s: float,
    load: LoadStats | None = None,
    cell: str = "",
) -> tuple[ProbeResult, int]:
    """One probe's verdict inputs from its raw records and side-car; also returns the warm-up rows left out.

    The measured window runs, in intended send time, from ``warmup_s`` after the first send
    (users still spawning, caches cold) to the moment the run began to stop (``load``'s
    ``stopping_unix_s``; the last intended send without one), less the lateness tolerance:
    a send due just before the stop may be in its user's last sleep. The sends *due* in the
    window are the rows intended in it (answered, failed ones included) plus the side-car's
    unanswered sends of ``cell`` intended in it (their user was behind, or was stopped
    mid-request): an exact count of the schedule, Poisson or constant, so a server that
    falls behind shows as unanswered sends, and a slow last reply does not. The latency
    percentile (numpy, linear) and its 95 % interval come from the successful rows of the
    window, counted from the intended send; late sends are split by cause.
    """
    empty = ProbeResult(rate_rps, 0, 0, 0, 0.0, math.nan, math.nan, duration_s)
    if frame is None or len(frame) == 0:
        due = round(load.unanswered(cell)) if load is not None else 0
        return ProbeResult(rate_rps, 0, 0, 0, 0.0, math.nan, math.nan, duration_s, due=due), 0
    intended = frame["t_start"].to_numpy(dtype=float)
    start = float(intended.min()) + warmup_s
    stop = load.stopping_unix_s if load is not None and load.stopping_unix_s > 0 else float(intended.max())
    end = max(start, stop - late_tolerance_ms / 1000.0)
    excluded = int((intended < start).sum())
    window = frame[(intended >= start) & (intended < end)]
    if window.empty:
        return empty, excluded
    failed = failed_mask(window).to_numpy()
    ok_latencies = window["latency_ms"].to_numpy(dtype=float)[~failed]
    ci = percentile_ci(ok_latencies, percentile)
    p50 = float(np.percentile(ok_latencies, 50)) if ok_latencies.size else math.nan
    late = lateness(window, late_tolerance_ms)
    unanswered = load.unanswered_between(cell, start, end) if load is not None else 0.0
    result = ProbeResult(
        rate_rps=rate_rps,
        requests=len(window),
        errors=int(failed.sum()),
        late_sends=late.late,
        achieved_rps=len(window) / (end - start) if end > start else 0.0,
        latency_pct_ms=ci.value,
        p50_ms=p50,
        duration_s=duration_s,
        late_allowed=late.allowed,
        due=len(window) + round(unanswered),
        late_busy=late.late_busy,
        late_idle=late.late_idle,
        client_saturated=bool(load.saturated) if load is not None else False,
        latency_ci_low_ms=ci.low,
        latency_ci_high_ms=ci.high,
    )
    return result, excluded


@dataclass(frozen=True)
class Calibration:
    """A closed run's numbers after its warm-up: the throughput ceiling the search starts from."""

    requests: int
    errors: int
    ceiling_rps: float | None  # successful requests over the time they took; None without any
    latency_pct_ms: float
    latency_ci_low_ms: float
    latency_ci_high_ms: float
    p50_ms: float


def calibration_result(frame: pd.DataFrame | None, warmup_s: float, percentile: float) -> Calibration:
    """The closed run's throughput ceiling and latency, from the rows after its first ``warmup_s``."""
    if frame is None or frame.empty:
        return Calibration(0, 0, None, math.nan, math.nan, math.nan, math.nan)
    start = float(frame["t_start"].min()) + warmup_s
    window = frame[frame["t_start"] >= start]
    failed = failed_mask(window).to_numpy()
    ok = window[~failed]
    latencies = ok["latency_ms"].to_numpy(dtype=float)
    ci = percentile_ci(latencies, percentile)
    span = float((ok["t_start"] + ok["latency_ms"] / 1000.0).max()) - start if len(ok) else 0.0
    return Calibration(
        requests=len(window),
        errors=int(failed.sum()),
        ceiling_rps=len(ok) / span if span > 0 else None,
        latency_pct_ms=ci.value,
        latency_ci_low_ms=ci.low,
        latency_ci_high_ms=ci.high,
        p50_ms=float(np.percentile(latencies, 50)) if latencies.size else math.nan,
    )
