"""Load a run for reporting: raw records, the per-cell summary, and each cell's trust verdict.

Percentiles always come from the raw per-request rows (``bench.results.summarize``), never from
Locust's rounded buckets. The sweep's per-cell facts in meta.json (client CPU share, late sends,
warm-up count, Locust's own request count, server-side Prometheus deltas) are joined onto the
summary here, so the report and ``summary.csv`` show the same trust columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ResultsError
from bench.runs import Run, load_run

# A Locust process (one gevent loop) above this CPU share is the bottleneck itself: its
# latencies include its own queueing, so the cell measures the client, not the server.
SATURATED_CPU_PCT = 90.0
# Open model: more than this share of sends later than scheduled means the generator fell behind.
SATURATED_LATE_SHARE = 0.05
# Below this many successful samples a p99 is one or two requests: shown, but flagged.
MIN_SAMPLES_P99 = 100

# Trust and server-side columns written after the contract's summary columns.
TRUST_COLUMNS = (
    "client_cpu_pct",
    "late_sends",
    "warmup_excluded",
    "locust_requests",
    "cell_status",
    "saturated",
    "trust",
)
SERVER_COLUMNS = (
    "server_requests",
    "server_latency_mean_ms",
    "server_latency_p50_ms",
    "server_latency_p99_ms",
    "server_runtime_mean_ms",
    "server_batch_size_mean",
)


@dataclass(frozen=True)
class RunData:
    """Everything a report needs from one run."""

    run: Run
    records: pd.DataFrame
    summary: pd.DataFrame

    @property
    def has_server_metrics(self) -> bool:
        return "server_latency_mean_ms" in self.summary and self.summary["server_latency_mean_ms"].notna().any()


def cell_record_files(cell_dir: Path) -> list[Path]:
    """Records files one cell's Locust run wrote (``records*.csv``: one per worker process)."""
    return sorted(p for p in cell_dir.glob("records*.csv") if p.is_file())


def read_run_records(run: Run) -> pd.DataFrame:
    """All rows of requests.csv, plus cells' files not merged yet; an empty frame if none."""
    from bench.results import read_records

    paths = [run.requests_path] if run.requests_path.is_file() else []
    merged = {str(c.get("cell")) for c in run.cells if c.get("merged")}
    cells_dir = run.path / "cells"
    if cells_dir.is_dir():
        # A sweep killed between a cell's end and its merge leaves rows only in cells/<cell>/.
        for cell_dir in sorted(p for p in cells_dir.iterdir() if p.is_dir() and p.name not in merged):
            paths += cell_record_files(cell_dir)
    if not paths:
        return pd.DataFrame()
    # A sweep killed between appending a cell's rows and noting it in meta.json leaves the rows
    # in both places; identical rows (to the microsecond) are that, never two requests.
    return read_records(paths).drop_duplicates(ignore_index=True)


def _cell_facts(run: Run) -> pd.DataFrame:
    rows = []
    for c in run.cells:
        server = c.get("server") or {}
        rows.append(
            {
                "cell": c.get("cell"),
                "client_cpu_pct": c.get("client_cpu_pct"),
                "late_sends": c.get("late_sends"),
                "warmup_excluded": c.get("warmup_excluded"),
                "locust_requests": c.get("locust_requests"),
                "cell_status": c.get("status"),
                "processes": c.get("processes") or 1,
                "server_requests": server.get("requests"),
                "server_latency_mean_ms": server.get("latency_mean_ms"),
                "server_latency_p50_ms": server.get("latency_p50_ms"),
                "server_latency_p99_ms": server.get("latency_p99_ms"),
                "server_runtime_mean_ms": server.get("runtime_mean_ms"),
                "server_batch_size_mean": server.get("batch_size_mean"),
            }
        )
    return pd.DataFrame(rows)


def _verdict(row: pd.Series) -> tuple[bool, str]:
    """(saturated, human-readable trust note) for one summary row."""
    notes: list[str] = []
    saturated = False
    cpu = row.get("client_cpu_pct")
    procs = row.get("processes") or 1
    if cpu is not None and not pd.isna(cpu) and cpu / max(float(procs), 1.0) >= SATURATED_CPU_PCT:
        saturated = True
        notes.append(f"client saturated (CPU {cpu:.0f}%)")
    late = row.get("late_sends")
    requests = row.get("requests") or 0
    if late is not None and not pd.isna(late) and requests and late / requests > SATURATED_LATE_SHARE:
        saturated = True
        notes.append(f"client fell behind ({int(late)} late sends)")
    ok = int(requests) - int(row.get("errors") or 0)
    if ok < MIN_SAMPLES_P99:
        notes.append(f"few samples ({ok}): p99 is rough")
    if row.get("errors"):
        notes.append(f"{int(row['errors'])} errors")
    status = row.get("cell_status")
    if isinstance(status, str) and status not in ("done", ""):
        notes.append(f"cell {status}")
    return saturated, "; ".join(notes) if notes else "ok"


def add_trust(summary: pd.DataFrame, run: Run) -> pd.DataFrame:
    """Join the sweep's per-cell facts onto ``summary`` and set ``saturated`` and ``trust``.

    The sweep measured each cell's client CPU and warm-up count (meta.json ``cells``); those
    replace summarize()'s run-wide placeholders. ``late_sends`` stays as computed from the rows.
    """
    out = summary.copy()
    facts = _cell_facts(run)
    if not facts.empty:
        facts = facts.drop_duplicates("cell", keep="last").set_index("cell")
        for col in facts.columns:
            if col == "late_sends" and col in out:
                continue
            values = out["cell"].map(facts[col])
            out[col] = values.where(values.notna(), out[col]) if col in out else values
    for col in (*TRUST_COLUMNS, "processes"):
        if col not in out:
            out[col] = "" if col in ("cell_status", "trust") else np.nan
    verdicts = [_verdict(row) for _, row in out.iterrows()]
    prior = out["saturated"].fillna(False).astype(bool)
    out["saturated"] = [bool(p) or v[0] for p, v in zip(prior, verdicts, strict=True)]
    out["trust"] = [
        v[1] if not p or v[0] else f"client saturated; {v[1]}" for p, v in zip(prior, verdicts, strict=True)
    ]
    server = [c for c in SERVER_COLUMNS if c in out and out[c].notna().any()]
    first = [c for c in out.columns if c not in TRUST_COLUMNS and c not in SERVER_COLUMNS and c != "processes"]
    return out[first + list(TRUST_COLUMNS) + server + ["processes"]]


def summarize_run(run: Run, records: pd.DataFrame) -> pd.DataFrame:
    """The summary.csv frame: contract columns from the raw rows, then trust and server columns."""
    from bench.results import summarize

    if records.empty:
        raise ResultsError(f"{run.path} has no recorded requests yet (requests.csv is empty or missing)")
    summary = summarize(records)
    if "latency_mean_ms" not in summary:
        # Means add up where percentiles do not: the client/server split needs them.
        means = ok_rows(records).groupby("cell")["latency_ms"].mean().rename("latency_mean_ms")
        summary = summary.merge(means, left_on="cell", right_index=True, how="left")
    summary = add_trust(summary, run)
    return summary.sort_values(["encoding", "batch"], kind="stable").reset_index(drop=True)


def load_run_data(path: Path) -> RunData:
    run = load_run(path)
    records = read_run_records(run)
    return RunData(run=run, records=records, summary=summarize_run(run, records))


def ok_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Successful requests: HTTP 200 and no error text."""
    err = records["error"].fillna("").astype(str).str.len() > 0 if "error" in records else False
    return records[(records["status"] == 200) & ~err]


def meta_items(run: Run) -> list[tuple[str, Any]]:
    """Flat (key, value) pairs of meta.json for the report's metadata table."""
    items: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif prefix != "cells":
            items.append((prefix, value))

    walk("", {k: v for k, v in run.meta.items() if k != "cells"})
    return items
