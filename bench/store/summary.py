"""Per-cell summaries of the raw records: the ``summary.csv`` contract's columns, then trust columns.

Percentiles come from every successful raw row with numpy (never from bucketed latencies), each
with its 95 % confidence interval from order statistics (bench.store.percentiles)::

    summary = summarize(read_records(path), load=read_load_stats(path))

Columns after the contract's (units in the names; ``*_ms`` are latencies from the intended send):

    samples                  successful requests: what the percentiles rest on
    p50_ci_low_ms ... p99_ci_high_ms   95 % interval of each percentile (empty: too few samples to bound it)
    rough                    percentiles whose interval is missing an end or wider than half their value ("p99")
    error_p50_ms             median latency of the failed requests (a fast 503 or a refused connection
                             would pull the percentiles down if it were counted with them)
    late_sends, late_busy, late_idle   sends later than the tolerance, and how many of them because their user
                             waited on the server (busy) or because the generator fell behind (idle)
    p99_uncorrected_ms       p99 from the actual send (what a closed-loop tool would show)
    warmup_excluded, client_cpu_pct, saturated   from the load side-car, when given
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.store.lateness import LATE_TOLERANCE_MS, lateness
from bench.store.load_stats import LoadStats
from bench.store.percentiles import percentiles_ci

SUMMARY_COLUMNS: tuple[str, ...] = (
    "cell",
    "batch",
    "encoding",
    "requests",
    "errors",
    "rps",
    "images_per_s",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "payload_bytes_mean",
    "encode_us_mean",
)
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
CI_COLUMNS: tuple[str, ...] = tuple(f"p{q}_ci_{end}_ms" for q in PERCENTILES for end in ("low", "high"))
# Trust columns after the contract's: the intervals, late sends by cause (open model), the
# uncorrected p99 that a closed-loop tool would have shown, and (with LoadStats) warm-up and CPU.
SUMMARY_EXTRA_COLUMNS: tuple[str, ...] = (
    "samples",
    *CI_COLUMNS,
    "rough",
    "error_p50_ms",
    "late_sends",
    "late_busy",
    "late_idle",
    "p99_uncorrected_ms",
    "warmup_excluded",
    "client_cpu_pct",
    "saturated",
    "protocol",
)


def failed_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the rows of requests that failed (status not 200, or an error message)."""
    error = frame["error"].fillna("").astype(str) if "error" in frame else pd.Series("", index=frame.index)
    return (frame["status"] != 200) | (error != "")


def summarize(
    df: pd.DataFrame,
    load: LoadStats | None = None,
    late_tolerance_ms: float = LATE_TOLERANCE_MS,
) -> pd.DataFrame:
    """One row per (cell, batch, encoding) with :data:`SUMMARY_COLUMNS`, then the trust columns.

    Latency percentiles, ``max_ms`` and ``p99_uncorrected_ms`` come from the *successful*
    requests (numpy, linear interpolation); failed ones are counted in ``errors`` and their
    median latency is ``error_p50_ms``. ``rps`` counts all requests of the group over the
    *cell's* wall time (first intended send to last completion), so groups of one mixed-batch
    run add up to the run's rate; ``images_per_s`` counts successful requests only.
    ``late_sends`` counts sends that started more than ``late_tolerance_ms`` after their
    intended time (open model; bench.store.lateness), split by cause.
    """
    columns = [*SUMMARY_COLUMNS, *SUMMARY_EXTRA_COLUMNS]
    if df.empty:
        return pd.DataFrame({c: [] for c in columns})
    frame = df.copy()
    if "send_lag_ms" not in frame.columns:
        frame["send_lag_ms"] = 0.0
    frame["error"] = frame["error"].fillna("").astype(str)
    frame["cell"] = frame["cell"].fillna("").astype(str)
    frame["_end"] = frame["t_start"] + frame["latency_ms"] / 1000.0
    spans = frame.groupby("cell").agg(first=("t_start", "min"), last=("_end", "max"))
    cell_seconds = (spans["last"] - spans["first"]).to_dict()
    rows = []
    for (cell, batch, encoding), group in frame.groupby(["cell", "batch", "encoding"], sort=True):
        failed = failed_mask(group).to_numpy()
        ok = group[~failed]
        latencies = ok["latency_ms"].to_numpy(dtype=float)
        uncorrected = latencies - ok["send_lag_ms"].to_numpy(dtype=float)
        seconds = max(float(cell_seconds[cell]), 1e-9)
        cis = percentiles_ci(latencies, PERCENTILES)
        late = lateness(group, late_tolerance_ms)
        row: dict[str, object] = {
            "cell": cell,
            "batch": int(batch),
            "encoding": encoding,
            "requests": len(group),
            "errors": int(failed.sum()),
            "rps": len(group) / seconds,
            "images_per_s": len(ok) * int(batch) / seconds,
        }
        row.update({f"p{ci.q:g}_ms": ci.value for ci in cis})
        row.update(
            {
                "max_ms": float(latencies.max()) if latencies.size else np.nan,
                "payload_bytes_mean": float(group["payload_bytes"].mean()),
                "encode_us_mean": float(group["encode_us"].mean()),
                "samples": len(ok),
            }
        )
        for ci in cis:
            row[f"p{ci.q:g}_ci_low_ms"] = ci.low
            row[f"p{ci.q:g}_ci_high_ms"] = ci.high
        row.update(
            {
                "rough": ",".join(f"p{ci.q:g}" for ci in cis if ci.rough),
                "error_p50_ms": float(np.median(group.loc[failed, "latency_ms"])) if failed.any() else np.nan,
                "late_sends": late.late,
                "late_busy": late.late_busy,
                "late_idle": late.late_idle,
                "p99_uncorrected_ms": float(np.percentile(uncorrected, 99)) if uncorrected.size else np.nan,
                "warmup_excluded": load.warmup_by_cell.get(cell, 0) if load else 0,
                "client_cpu_pct": load.client_cpu_pct_max if load else float("nan"),
                "saturated": bool(load.saturated) if load else False,
                # An encoding is one protocol, so each group is (rows from before the column: rest).
                "protocol": str(group["protocol"].iloc[0]) if "protocol" in group else "rest",
            }
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
