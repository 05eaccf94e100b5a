"""Load a run for reporting: raw records, the per-cell summary, and each cell's trust verdict.

Percentiles always come from the raw per-request rows (``bench.store.records.summarize``), never from
Locust's rounded buckets. The sweep's per-cell facts in meta.json (client CPU share, late sends,
warm-up count, Locust's own request count, server-side Prometheus deltas) are joined onto the
summary here, so the report and ``summary.csv`` show the same trust columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ResultsError
from bench.store.lateness import LATE_SHARE_LIMIT
from bench.store.record_parts import cell_record_files
from bench.store.records import read_records
from bench.store.runs import Run, load_run
from bench.store.summary import summarize

# A Locust process (one gevent loop) above this CPU share is the bottleneck itself: its
# latencies include its own queueing, so the cell measures the client, not the server.
SATURATED_CPU_PCT = 90.0
# Open model: more than LATE_SHARE_LIMIT of sends later than scheduled means the generator fell behind.
# Below this many successful samples a p99 is one or two requests: shown, but flagged.
MIN_SAMPLES_P99 = 100
# Late sends with the client this far below a core per process and the achieved rate this far
# below the offered one: the users were all waiting on replies, i.e. the server was past its
# capacity (what capacity probes do on purpose), not the load generator out of CPU.
LOW_CLIENT_CPU_PCT = 50.0
SERVER_BEHIND_SHARE = 0.95
# ``tfsbench capacity`` names each probe's cell ``b16-row-orjson@42.5rps`` (``#n`` on a repeat).
_PROBE_RATE = re.compile(r"@([0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?)rps")

# Trust and server-side columns written after the contract's summary columns.
TRUST_COLUMNS = (
    "client_cpu_pct",
    "late_sends",
    "warmup_excluded",
    "locust_requests",
    "cell_status",
    "saturated",
    "server_saturated",
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
    def is_capacity(self) -> bool:
        """A ``tfsbench capacity`` run: many probes (rates) per (batch, encoding) cell."""
        return is_capacity_run(self.run)

    @property
    def has_server_metrics(self) -> bool:
        return "server_latency_mean_ms" in self.summary and self.summary["server_latency_mean_ms"].notna().any()


def is_capacity_run(run: Run) -> bool:
    return run.meta.get("command") == "capacity" or (run.path / "capacity.csv").is_file()


def offered_rps(cell: str, run: Run) -> float:
    """The open-model rate a cell was offered (req/s): a capacity probe's from its name, a sweep
    cell's from ``--rate``; NaN for closed-model cells."""
    match = _PROBE_RATE.search(str(cell))
    if match:
        return float(match.group(1))
    config = run.meta.get("config") or {}
    rate = config.get("rate_per_s")
    if config.get("arrival", "closed") != "closed" and isinstance(rate, int | float):
        return float(rate)
    return float("nan")


def sort_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` ordered naturally: batch, encoding, then offered rate as a number (10 < 20 < 160)."""
    order = summary.assign(_rate=summary["cell"].map(lambda c: _rate_or_inf(str(c))), _name=summary["cell"])
    order = order.sort_values(["batch", "encoding", "_rate", "_name"], kind="stable")
    return order.drop(columns=["_rate", "_name"]).reset_index(drop=True)


def _rate_or_inf(cell: str) -> float:
    match = _PROBE_RATE.search(cell)
    return float(match.group(1)) if match else float("inf")


def read_run_records(run: Run) -> pd.DataFrame:
    """All rows of requests.csv, plus cells' files not merged yet; an empty frame if none."""
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


def _verdict(row: pd.Series) -> tuple[bool, bool, str]:
    """(client saturated, server saturated, human-readable trust note) for one summary row."""
    notes: list[str] = []
    saturated = server_saturated = False
    cpu = row.get("client_cpu_pct")
    procs = max(float(row.get("processes") or 1), 1.0)
    cpu_known = cpu is not None and not pd.isna(cpu)
    if cpu_known and cpu / procs >= SATURATED_CPU_PCT:
        saturated = True
        notes.append(f"client saturated (CPU {cpu:.0f}%)")
    late = row.get("late_sends")
    requests = row.get("requests") or 0
    if late is not None and not pd.isna(late) and requests and late / requests > LATE_SHARE_LIMIT:
        offered = row.get("offered_rps")
        achieved = row.get("rps")
        cpu_low = cpu_known and cpu / procs < LOW_CLIENT_CPU_PCT
        if saturated or not cpu_low:
            saturated = True
            notes.append(f"client fell behind ({int(late)} late sends)")
        elif offered is not None and not pd.isna(offered) and achieved < SERVER_BEHIND_SHARE * offered:
            # Every user was waiting on a reply: the server's rate, not the client's, was the limit.
            server_saturated = True
            notes.append(f"server saturated ({achieved:.4g} of {offered:.4g} req/s, client CPU {cpu:.0f}%)")
        else:
            saturated = True
            # Not the client's CPU: its users were held by slow replies or the machine was busy.
            notes.append(f"behind schedule ({int(late)} late sends, client CPU {cpu:.0f}%)")
    ok = int(requests) - int(row.get("errors") or 0)
    if ok < MIN_SAMPLES_P99:
        notes.append(f"few samples ({ok}): p99 is rough")
    if row.get("errors"):
        notes.append(f"{int(row['errors'])} errors")
    status = row.get("cell_status")
    if isinstance(status, str) and status not in ("done", ""):
        notes.append(f"cell {status}")
    return saturated, server_saturated, "; ".join(notes) if notes else "ok"


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
    out["offered_rps"] = [offered_rps(c, run) for c in out["cell"]]
    verdicts = [_verdict(row) for _, row in out.iterrows()]
    prior = out["saturated"].fillna(False).astype(bool)
    out["saturated"] = [bool(p) or v[0] for p, v in zip(prior, verdicts, strict=True)]
    out["server_saturated"] = [v[1] for v in verdicts]
    out["trust"] = [
        v[2] if not p or v[0] else f"client saturated; {v[2]}" for p, v in zip(prior, verdicts, strict=True)
    ]
    optional = ("offered_rps", *SERVER_COLUMNS)  # only where known (open model; server metrics)
    server = [c for c in optional if c in out and out[c].notna().any()]
    first = [c for c in out.columns if c not in TRUST_COLUMNS and c not in optional and c != "processes"]
    return out[first + list(TRUST_COLUMNS) + server + ["processes"]]


def summarize_run(run: Run, records: pd.DataFrame) -> pd.DataFrame:
    """The summary.csv frame: contract columns from the raw rows, then trust and server columns."""
    if records.empty:
        raise ResultsError(f"{run.path} has no recorded requests yet (requests.csv is empty or missing)")
    summary = summarize(records)
    if "latency_mean_ms" not in summary:
        # Means add up where percentiles do not: the client/server split needs them.
        means = ok_rows(records).groupby("cell")["latency_ms"].mean().rename("latency_mean_ms")
        summary = summary.merge(means, left_on="cell", right_index=True, how="left")
    summary = add_trust(summary, run)
    return sort_cells(summary)


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
