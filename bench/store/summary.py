"""Per-cell summaries of the raw records: the ``summary.csv`` contract's columns, then trust columns.

Percentiles come from every raw row with numpy (never from bucketed latencies)::

    summary = summarize(read_records(path), load=read_load_stats(path))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.store.load_stats import LoadStats
from bench.store.records import LATE_TOLERANCE_MS

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
# Trust columns after the contract's: late sends (open model), the uncorrected p99 that a
# closed-loop tool would have shown, and (with LoadStats) warm-up and client CPU figures.
SUMMARY_EXTRA_COLUMNS: tuple[str, ...] = (
    "late_sends",
    "p99_uncorrected_ms",
    "warmup_excluded",
    "client_cpu_pct",
    "saturated",
)


def summarize(
    df: pd.DataFrame,
    load: LoadStats | None = None,
    late_tolerance_ms: float = LATE_TOLERANCE_MS,
) -> pd.DataFrame:
    """One row per (cell, batch, encoding) with :data:`SUMMARY_COLUMNS`, then the trust columns.

    Percentiles (numpy, linear interpolation) come from every raw row, failed requests
    included: a request that timed out after a stall is latency the user saw. ``rps`` counts
    all requests of the group over the *cell's* wall time (first intended send to last
    completion), so groups of one mixed-batch run add up to the run's rate; ``images_per_s``
    counts successful requests only. ``late_sends`` counts sends that started more than
    ``late_tolerance_ms`` after their intended time (open model).
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
        latencies = group["latency_ms"].to_numpy(dtype=float)
        uncorrected = latencies - group["send_lag_ms"].to_numpy(dtype=float)
        failed = (group["status"] != 200) | (group["error"] != "")
        ok_count = int((~failed).sum())
        seconds = max(float(cell_seconds[cell]), 1e-9)
        p50, p90, p95, p99 = np.percentile(latencies, [50, 90, 95, 99])
        rows.append(
            {
                "cell": cell,
                "batch": int(batch),
                "encoding": encoding,
                "requests": len(group),
                "errors": int(failed.sum()),
                "rps": len(group) / seconds,
                "images_per_s": ok_count * int(batch) / seconds,
                "p50_ms": float(p50),
                "p90_ms": float(p90),
                "p95_ms": float(p95),
                "p99_ms": float(p99),
                "max_ms": float(latencies.max()),
                "payload_bytes_mean": float(group["payload_bytes"].mean()),
                "encode_us_mean": float(group["encode_us"].mean()),
                "late_sends": int((group["send_lag_ms"] > late_tolerance_ms).sum()),
                "p99_uncorrected_ms": float(np.percentile(uncorrected, 99)),
                "warmup_excluded": load.warmup_by_cell.get(cell, 0) if load else 0,
                "client_cpu_pct": load.client_cpu_pct_max if load else float("nan"),
                "saturated": bool(load.saturated) if load else False,
            }
        )
    return pd.DataFrame(rows, columns=columns)
