"""Per-cell summaries of the raw records: the ``summary.csv`` contract's columns, then trust columns.

Percentiles come from every successful raw row with numpy (never from bucketed latencies), each
with its 95 % confidence interval from order statistics (bench.store.percentiles)::

    summary = summarize(read_records(path), load=read_load_stats(path))
    acc = SummaryAccumulator()                    # the same, chunk by chunk, for runs of any size
    for chunk in iter_records(path, SUMMARY_INPUT_COLUMNS):
        acc.add(chunk)
    summary = acc.summary(load=read_load_stats(path))

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

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.store.lateness import CAUSE_BUSY, CAUSE_IDLE, LATE_TOLERANCE_MS, late_mask, workers_behind
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
    "behind_workers",
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
    intended time (open model; bench.store.lateness), split by cause. The same as
    :class:`SummaryAccumulator` fed ``df`` in one chunk.
    """
    acc = SummaryAccumulator(late_tolerance_ms)
    acc.add(df)
    return acc.summary(load)


# The records columns a summary reads (bench.store.records.iter_records ``columns``).
SUMMARY_INPUT_COLUMNS: tuple[str, ...] = (
    "t_start",
    "latency_ms",
    "status",
    "batch",
    "encoding",
    "payload_bytes",
    "encode_us",
    "error",
    "cell",
    "send_lag_ms",
    "lag_cause",
    "protocol",
    "worker",
)


@dataclass
class _Group:
    """What one (cell, batch, encoding) keeps between chunks: counts, sums, and the latencies
    percentiles need (one float64 per row: exact percentiles, no sketch)."""

    requests: int = 0
    errors: int = 0
    payload_sums: list[float] = field(default_factory=list)
    encode_sums: list[float] = field(default_factory=list)
    ok_latency: list[np.ndarray] = field(default_factory=list)
    ok_uncorrected: list[np.ndarray] = field(default_factory=list)
    failed_latency: list[np.ndarray] = field(default_factory=list)
    late: int = 0
    late_busy: int = 0
    late_idle: int = 0
    protocol: str | None = None  # its first row's (an encoding is one protocol)
    by_worker: dict[str, tuple[int, int]] = field(default_factory=dict)  # worker -> (rows, late idle-caused)

    def behind_workers(self) -> str:
        """The workers that fell behind on their own rows (bench.store.lateness), named only
        where the cell ran on several: one among idle ones is not diluted away."""
        return ",".join(workers_behind(self.by_worker)) if len(self.by_worker) > 1 else ""


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """One array of the parts, the list emptied (so the parts and the whole are not both kept)."""
    whole = np.concatenate(parts) if parts else np.empty(0, dtype=float)
    parts.clear()
    return whole


class SummaryAccumulator:
    """:func:`summarize` over records fed in chunks, in memory bounded by one float per row.

    Counts and sums are kept per group; the successful latencies (and their uncorrected
    counterparts) are kept as float64 arrays, so every percentile and its interval is the
    exact one numpy gives on the whole sample, whatever the chunking. Means are exact sums
    (``math.fsum``) divided once; chunked and whole-file reads agree to the last ulp or so::

        acc = SummaryAccumulator(late_tolerance_ms)
        for chunk in iter_records(path, SUMMARY_INPUT_COLUMNS):
            acc.add(chunk)
        summary = acc.summary(load)
    """

    def __init__(self, late_tolerance_ms: float = LATE_TOLERANCE_MS) -> None:
        self.late_tolerance_ms = late_tolerance_ms
        self.rows = 0
        self._groups: dict[tuple[str, int, str], _Group] = {}
        self._spans: dict[str, tuple[float, float]] = {}  # cell -> (first start, last end), unix s

    def add(self, chunk: pd.DataFrame) -> None:
        """Count one chunk of records rows (a missing ``send_lag_ms``/``lag_cause`` counts as on time)."""
        if chunk.empty:
            return
        n = len(chunk)
        self.rows += n
        cells = chunk["cell"].fillna("").astype(str)
        start = chunk["t_start"].to_numpy(dtype=float)
        latency = chunk["latency_ms"].to_numpy(dtype=float)
        lag = chunk["send_lag_ms"].to_numpy(dtype=float) if "send_lag_ms" in chunk else np.zeros(n)
        cause = chunk["lag_cause"].fillna("").astype(str).to_numpy() if "lag_cause" in chunk else np.full(n, "")
        protocol = chunk["protocol"].fillna("").astype(str).to_numpy() if "protocol" in chunk else None
        worker = chunk["worker"].fillna("").astype(str).to_numpy() if "worker" in chunk else None
        failed = failed_mask(chunk).to_numpy()
        payload = chunk["payload_bytes"].to_numpy(dtype=float)
        encode = chunk["encode_us"].to_numpy(dtype=float)
        late = late_mask(lag, self.late_tolerance_ms)
        end = start + latency / 1000.0
        keys = pd.DataFrame(
            {"cell": cells.to_numpy(), "batch": chunk["batch"].to_numpy(), "encoding": chunk["encoding"].to_numpy()}
        )
        for cell, rows in keys.groupby("cell", sort=False).indices.items():
            first, last = float(start[rows].min()), float(end[rows].max())
            if cell in self._spans:
                first, last = min(first, self._spans[cell][0]), max(last, self._spans[cell][1])
            self._spans[str(cell)] = (first, last)
        for (cell, batch, encoding), rows in keys.groupby(["cell", "batch", "encoding"], sort=False).indices.items():
            group = self._groups.setdefault((str(cell), int(batch), str(encoding)), _Group())
            bad = failed[rows]
            good = rows[~bad]
            if not group.requests and protocol is not None:
                group.protocol = str(protocol[rows[0]])
            group.requests += rows.size
            group.errors += int(bad.sum())
            group.payload_sums.append(math.fsum(payload[rows]))
            group.encode_sums.append(math.fsum(encode[rows]))
            group.ok_latency.append(latency[good])
            group.ok_uncorrected.append(latency[good] - lag[good])
            if bad.any():
                group.failed_latency.append(latency[rows[bad]])
            late_rows = rows[late[rows]]
            group.late += late_rows.size
            group.late_busy += int((cause[late_rows] == CAUSE_BUSY).sum())
            group.late_idle += int((cause[late_rows] == CAUSE_IDLE).sum())
            if worker is not None:
                idle_late = late[rows] & (cause[rows] == CAUSE_IDLE)
                names, counts = np.unique(worker[rows], return_counts=True)
                late_names, late_counts = np.unique(worker[rows][idle_late], return_counts=True)
                late_by_name = dict(zip(late_names.tolist(), late_counts.tolist(), strict=True))
                for name, count in zip(names.tolist(), counts.tolist(), strict=True):
                    if name:
                        seen, idle = group.by_worker.get(name, (0, 0))
                        group.by_worker[name] = (seen + count, idle + late_by_name.get(name, 0))

    def latency_means(self) -> pd.Series:
        """Mean latency (ms) of each cell's successful requests; cells without one left out."""
        totals: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for (cell, _, _), group in self._groups.items():
            for part in group.ok_latency:
                if part.size:
                    totals.setdefault(cell, []).append(math.fsum(part))
                    counts[cell] = counts.get(cell, 0) + part.size
        return pd.Series({cell: math.fsum(parts) / counts[cell] for cell, parts in totals.items()}, dtype=float)

    def summary(self, load: LoadStats | None = None) -> pd.DataFrame:
        """The :func:`summarize` frame of every row added so far (the latency arrays are consumed)."""
        columns = [*SUMMARY_COLUMNS, *SUMMARY_EXTRA_COLUMNS]
        if not self._groups:
            return pd.DataFrame({c: [] for c in columns})
        rows = [self._row(key, self._groups[key], load) for key in sorted(self._groups)]
        return pd.DataFrame(rows, columns=columns)

    def _row(self, key: tuple[str, int, str], group: _Group, load: LoadStats | None) -> dict[str, object]:
        cell, batch, encoding = key
        latencies = _joined(group.ok_latency)
        uncorrected = _joined(group.ok_uncorrected)
        failed = _joined(group.failed_latency)
        first, last = self._spans[cell]
        seconds = max(last - first, 1e-9)
        cis = percentiles_ci(latencies, PERCENTILES)
        samples = int(latencies.size)
        row: dict[str, object] = {
            "cell": cell,
            "batch": batch,
            "encoding": encoding,
            "requests": group.requests,
            "errors": group.errors,
            "rps": group.requests / seconds,
            "images_per_s": samples * batch / seconds,
        }
        row.update({f"p{ci.q:g}_ms": ci.value for ci in cis})
        row.update(
            {
                "max_ms": float(latencies.max()) if samples else np.nan,
                "payload_bytes_mean": math.fsum(group.payload_sums) / group.requests,
                "encode_us_mean": math.fsum(group.encode_sums) / group.requests,
                "samples": samples,
            }
        )
        for ci in cis:
            row[f"p{ci.q:g}_ci_low_ms"] = ci.low
            row[f"p{ci.q:g}_ci_high_ms"] = ci.high
        row.update(
            {
                "rough": ",".join(f"p{ci.q:g}" for ci in cis if ci.rough),
                "error_p50_ms": float(np.median(failed)) if failed.size else np.nan,
                "late_sends": group.late,
                "late_busy": group.late_busy,
                "late_idle": group.late_idle,
                "p99_uncorrected_ms": float(np.percentile(uncorrected, 99)) if uncorrected.size else np.nan,
                "warmup_excluded": load.warmup_by_cell.get(cell, 0) if load else 0,
                "client_cpu_pct": load.client_cpu_pct_max if load else float("nan"),
                "saturated": bool(load.saturated) if load else False,
                # An encoding is one protocol, so each group is (rows from before the column: rest).
                "protocol": group.protocol if group.protocol is not None else "rest",
                "behind_workers": group.behind_workers(),
            }
        )
        return row
