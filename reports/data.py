"""Load a run for reporting: raw records, the per-cell summary, and each cell's trust verdict.

Percentiles always come from the raw per-request rows (``bench.store.summary.summarize``: successful
requests, each percentile with its 95 % interval), never from Locust's rounded buckets. The sweep's
per-cell facts in meta.json (the generator's busiest process's CPU and event-loop lag, the CPU
monitor's flag, sends never answered, warm-up count, Locust's own request count, stability,
server-side Prometheus deltas) are joined onto the summary here, so the report and ``summary.csv``
show the same trust columns. The verdict (:func:`add_trust`) rests on the per-request lag causes
of the rows (bench.store.lateness): whose fault a late send was is decided where it was sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ResultsError
from bench.store.lateness import LATE_SHARE_LIMIT, late_tolerance_ms
from bench.store.record_parts import cell_record_files
from bench.store.records import ALL_COLUMNS, CHUNK_ROWS, iter_records, read_records
from bench.store.runs import Run, load_run
from bench.store.summary import SUMMARY_INPUT_COLUMNS, SummaryAccumulator, failed_mask
from reports.replicas_section import ReplicaAccumulator

# A Locust process (one gevent loop) above this CPU share of one core is the bottleneck itself:
# its latencies include its own queueing, so the cell measures the client, not the server.
SATURATED_CPU_PCT = 90.0
# An event loop that woke its 10 ms timer this late (p99) was queueing ready work: in a closed run,
# where no schedule says whether sends were late, that is the generator measuring itself.
LOOP_LAG_LIMIT_MS = 10.0
# The server did not answer this share of the sends due (open model): it was behind.
SERVER_BEHIND_SHARE = 0.95
# ``tfsbench capacity`` names each probe's cell ``b16-row-orjson@42.5rps`` (``#n`` on a repeat).
# Rows of one (encoding, batch, ok or failed) the latency-over-time figure draws before thinning:
# a scatter of millions of dots takes minutes to draw and shows no more than this.
TIMELINE_ROWS_PER_GROUP = 20_000
_TIMELINE_COLUMNS = ("t_start", "latency_ms", "status", "error", "batch", "encoding", "cell")
_PROBE_RATE = re.compile(r"@([0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?)rps")

# Trust and server-side columns written after the summary's own.
TRUST_COLUMNS = (
    "client_cpu_pct",
    "client_cpu_pct_max",
    "loop_lag_ms_p99",
    "late_sends",
    "late_busy",
    "late_idle",
    "unanswered",
    "warmup_excluded",
    "locust_requests",
    "cell_status",
    "stable",
    "windows",
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
    """Everything a report needs from one run.

    ``records`` holds every row of a run up to :data:`TIMELINE_ROWS_PER_GROUP` rows per
    (encoding, batch, ok or failed), beyond that an even thinning of them (for the
    latency-over-time figure); the summary always rests on every row, and ``recorded`` counts them.
    """

    run: Run
    records: pd.DataFrame
    summary: pd.DataFrame
    recorded: int = 0
    replicas: pd.DataFrame = field(default_factory=pd.DataFrame)  # reports.replicas_section's table

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


def _record_sources(run: Run) -> tuple[list[Path], list[Path]]:
    """(requests.csv if there is one, the record files of cells not merged into it yet)."""
    main = [run.requests_path] if run.requests_path.is_file() else []
    merged = {str(c.get("cell")) for c in run.cells if c.get("merged")}
    extras: list[Path] = []
    cells_dir = run.path / "cells"
    if cells_dir.is_dir():
        # A sweep killed between a cell's end and its merge leaves rows only in cells/<cell>/.
        for cell_dir in sorted(p for p in cells_dir.iterdir() if p.is_dir() and p.name not in merged):
            extras += cell_record_files(cell_dir)
    return main, extras


def iter_run_records(
    run: Run, columns: Sequence[str] = ALL_COLUMNS, chunk_rows: int | None = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The rows of requests.csv in chunks, then those of cells not merged yet that it lacks.

    A sweep killed between appending a cell's rows and noting it in meta.json leaves the rows
    in both places; a cell file's row identical (to the microsecond) to one of requests.csv is
    that, never a second request, and is left out. Cell files hold one cell each and are read
    whole; requests.csv, however long, one chunk at a time.
    """
    main, extras = _record_sources(run)
    wanted = list(columns)
    if not extras:
        yield from iter_records(main, wanted, chunk_rows)
        return
    extra = read_records(extras).drop_duplicates(ignore_index=True)
    labels = set(extra["cell"])
    seen = []
    for chunk in iter_records(main, ALL_COLUMNS, chunk_rows):
        overlap = chunk[chunk["cell"].isin(labels)]
        if not overlap.empty:
            seen.append(overlap)
        yield chunk[wanted]
    if seen:
        both = extra.merge(pd.concat(seen).drop_duplicates(), how="left", indicator=True)
        extra = extra[(both["_merge"] == "left_only").to_numpy()]
    yield extra[wanted].reset_index(drop=True)


def read_run_records(run: Run) -> pd.DataFrame:
    """All rows of requests.csv, plus cells' files not merged yet; an empty frame if none."""
    main, extras = _record_sources(run)
    if not main and not extras:
        return pd.DataFrame()
    return pd.concat(list(iter_run_records(run, chunk_rows=None)), ignore_index=True)


class _Timeline:
    """The rows the latency-over-time figure draws: all of them up to a bound per group, then
    every 2nd, 4th, ... row of each group (evenly over the run, decided as rows stream by)."""

    def __init__(self, per_group: int = 0) -> None:
        self.per_group = per_group or TIMELINE_ROWS_PER_GROUP
        self._kept: dict[tuple[object, ...], list[pd.DataFrame]] = {}
        self._seen: dict[tuple[object, ...], int] = {}
        self._stride: dict[tuple[object, ...], int] = {}

    def add(self, chunk: pd.DataFrame) -> None:
        frame = chunk[list(_TIMELINE_COLUMNS)].assign(_failed=failed_mask(chunk).to_numpy())
        for key, rows in frame.groupby(["encoding", "batch", "_failed"], sort=False).indices.items():
            seen, stride = self._seen.get(key, 0), self._stride.get(key, 1)
            order = seen + np.arange(rows.size)
            part = frame.iloc[rows[order % stride == 0]].assign(_order=order[order % stride == 0])
            self._seen[key] = seen + rows.size
            kept = self._kept.setdefault(key, [])
            kept.append(part)
            while sum(len(p) for p in kept) > self.per_group:
                stride *= 2
                kept[:] = [p[p["_order"].to_numpy() % stride == 0] for p in kept]
            self._stride[key] = stride

    def frame(self) -> pd.DataFrame:
        parts = [p for kept in self._kept.values() for p in kept]
        if not parts:
            return pd.DataFrame(columns=list(_TIMELINE_COLUMNS))
        whole = pd.concat(parts).sort_values("t_start", kind="stable")
        return whole.drop(columns=["_failed", "_order"]).reset_index(drop=True)


def _cell_facts(run: Run) -> pd.DataFrame:
    rows = []
    for c in run.cells:
        server = c.get("server") or {}
        rows.append(
            {
                "cell": c.get("cell"),
                "client_cpu_pct": c.get("client_cpu_pct"),
                "client_cpu_pct_max": c.get("client_cpu_pct_max"),
                "loop_lag_ms_p99": c.get("loop_lag_ms_p99"),
                "unanswered": c.get("unanswered"),
                "warmup_excluded": c.get("warmup_excluded"),
                "locust_requests": c.get("locust_requests"),
                "cell_status": c.get("status"),
                "stable": c.get("stable"),
                "windows": c.get("windows"),
                "monitor_saturated": c.get("saturated"),
                "processes": c.get("processes") or 1,
                "saturated_workers": ",".join(c.get("saturated_workers") or []),
                "lost_workers": ",".join(c.get("lost_workers") or []),
                "server_requests": server.get("requests"),
                "server_latency_mean_ms": server.get("latency_mean_ms"),
                "server_latency_p50_ms": server.get("latency_p50_ms"),
                "server_latency_p99_ms": server.get("latency_p99_ms"),
                "server_runtime_mean_ms": server.get("runtime_mean_ms"),
                "server_batch_size_mean": server.get("batch_size_mean"),
            }
        )
    return pd.DataFrame(rows)


def _number(row: pd.Series, key: str) -> float | None:
    value = row.get(key)
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pct(count: float, total: float) -> str:
    return f"{100.0 * count / total:.0f}%" if total else "0%"


def _names(row: pd.Series, key: str) -> list[str]:
    """The worker names of a comma-joined column (NaN where the cell's facts had none)."""
    value = row.get(key)
    return [w for w in value.split(",") if w] if isinstance(value, str) else []


def _verdict(row: pd.Series) -> tuple[bool, bool, str]:
    """(client saturated, server saturated, human-readable trust note) for one summary row.

    Open model: the per-request lag causes decide. Sends late while their user was free (the
    generator fell behind) beyond LATE_SHARE_LIMIT make the cell client-saturated, red, whatever
    the server did; sends late because their user still waited on a reply (or never answered)
    make it server-saturated, yellow. The busiest process's CPU and event-loop lag and the CPU
    monitor's flag are the evidence quoted; in a closed run (no schedule) they are the verdict.
    """
    notes: list[str] = []
    requests = _number(row, "requests") or 0.0
    cpu = _number(row, "client_cpu_pct")
    cpu_max = _number(row, "client_cpu_pct_max")
    loop_p99 = _number(row, "loop_lag_ms_p99")
    monitor = bool(row.get("monitor_saturated")) if not pd.isna(row.get("monitor_saturated")) else False
    late_idle = _number(row, "late_idle") or 0.0
    late_busy = _number(row, "late_busy") or 0.0
    late = _number(row, "late_sends") or 0.0
    unanswered = _number(row, "unanswered") or 0.0
    offered = _number(row, "offered_rps")
    limit = LATE_SHARE_LIMIT * requests
    cpu_seen = max((v for v in (cpu, cpu_max) if v is not None), default=None)
    cpu_hot = monitor or (cpu_seen is not None and cpu_seen >= SATURATED_CPU_PCT)
    evidence = ", ".join(
        part
        for part in (
            f"busiest generator process at {cpu_seen:.0f}% of a core" if cpu_seen is not None else "",
            f"event-loop lag p99 {loop_p99:.0f} ms" if loop_p99 is not None and loop_p99 > 0 else "",
        )
        if part
    )
    fix = "add --processes (one per core) or load machines"
    # Per worker: the ones behind on their own rows, or whose own CPU monitor tripped, by name.
    named = sorted({w for key in ("behind_workers", "saturated_workers") for w in _names(row, key)})
    if named:
        fix = f"worker {', '.join(named)} was behind; {fix}"
    client = server = False
    if late_idle > limit:
        client = True
        notes.append(
            f"client saturated: {_pct(late_idle, requests)} of sends started late with their user idle, "
            f"the load generator fell behind ({evidence or 'its CPU was not measured'}); {fix}"
        )
    elif offered is None and cpu_hot:
        client = True
        notes.append(f"client saturated: {evidence or 'CPU monitor tripped'}; {fix}")
    elif offered is None and loop_p99 is not None and loop_p99 > LOOP_LAG_LIMIT_MS:
        client = True
        notes.append(f"client saturated: its event loop lagged (p99 {loop_p99:.0f} ms); {fix}")
    elif cpu_hot:
        notes.append(f"generator busy ({evidence}) but on schedule")
    unknown = late - late_busy - late_idle
    if not client and (late_busy > limit or (requests and unanswered > (1 - SERVER_BEHIND_SHARE) * requests)):
        server = True
        achieved = _number(row, "rps")
        rate = f", {achieved:.4g} of {offered:.4g} req/s answered" if achieved is not None and offered else ""
        never = f", {int(unanswered)} due sends never answered" if unanswered else ""
        notes.append(
            f"server saturated: {_pct(late_busy, requests)} of sends late because their user still waited on "
            f"the previous reply{never}{rate}: the server (or network) is the limit at this load"
        )
    if not client and not server and unknown > limit:
        client = True  # records from before causes were kept: who was behind is not known
        notes.append(f"behind schedule: {int(unknown)} late sends, cause not recorded")
    rough = str(row.get("rough") or "")
    samples = int(_number(row, "samples") or 0)
    if requests and not samples:
        notes.append("no successful request: no percentile")
    elif rough:
        notes.append(f"{rough} rough: wide or open 95% interval ({samples} samples)")
    errors = int(_number(row, "errors") or 0)
    if errors:
        notes.append(f"{errors} errors (not in the percentiles)")
    stable = row.get("stable")
    if isinstance(stable, bool | np.bool_) and not stable:
        notes.append(f"not stable after {int(_number(row, 'windows') or 0)} windows")
    status = row.get("cell_status")
    if isinstance(status, str) and status not in ("done", ""):
        notes.append(f"cell {status}")
    lost = _names(row, "lost_workers")
    if lost:
        notes.append(f"worker {', '.join(lost)} lost mid-cell: its unsent rows are missing")
    if named and not client:
        notes.append(f"worker {', '.join(named)} behind (its own sends or CPU), the others on schedule")
    return client, server, "; ".join(notes) if notes else "ok"


def add_trust(summary: pd.DataFrame, run: Run) -> pd.DataFrame:
    """Join the sweep's per-cell facts onto ``summary`` and set ``saturated`` and ``trust``.

    The sweep measured each cell's generator (busiest process's CPU, loop lag, the CPU monitor's
    flag, unanswered sends) and warm-up count (meta.json ``cells``); those replace summarize()'s
    placeholders. Late sends stay as computed from the rows.
    """
    out = summary.copy()
    facts = _cell_facts(run)
    if not facts.empty:
        facts = facts.drop_duplicates("cell", keep="last").set_index("cell")
        for col in facts.columns:
            values = out["cell"].map(facts[col])
            out[col] = values.where(values.notna(), out[col]) if col in out else values
    for col in (*TRUST_COLUMNS, "processes", "monitor_saturated"):
        if col not in out:
            out[col] = "" if col in ("cell_status", "trust") else np.nan
    offered = [offered_rps(c, run) for c in out["cell"]]
    out["offered_rps"] = offered
    verdicts = [_verdict(row) for _, row in out.iterrows()]
    out["saturated"] = [v[0] for v in verdicts]
    out["server_saturated"] = [v[1] for v in verdicts]
    out["trust"] = [v[2] for v in verdicts]
    optional = ("offered_rps", "stable", "windows", *SERVER_COLUMNS)  # only where known
    server = [c for c in optional if c in out and out[c].notna().any()]
    hidden = {"processes", "monitor_saturated"}
    first = [c for c in out.columns if c not in TRUST_COLUMNS and c not in optional and c not in hidden]
    trust = [c for c in TRUST_COLUMNS if c not in optional]
    return out[first + trust + server + ["processes"]]


def summarize_run(run: Run, records: pd.DataFrame) -> pd.DataFrame:
    """The summary.csv frame: contract columns from the raw rows, then trust and server columns.

    Late sends are counted with the run's own lateness rule (bench.store.lateness): a capacity
    run's SLO sets it, as it did for its probes.
    """
    acc = SummaryAccumulator(late_tolerance_ms(run_limit_ms(run)))
    acc.add(records)
    return _summary_of(run, acc)


def _summary_of(run: Run, acc: SummaryAccumulator) -> pd.DataFrame:
    if not acc.rows:
        raise ResultsError(f"{run.path} has no recorded requests yet (requests.csv is empty or missing)")
    # Means add up where percentiles do not: the client/server split needs them.
    means = acc.latency_means().rename("latency_mean_ms")
    summary = acc.summary()
    summary = summary.merge(means, left_on="cell", right_index=True, how="left")
    summary = add_trust(summary, run)
    return sort_cells(summary)


def run_limit_ms(run: Run) -> float | None:
    """A capacity run's SLO limit (ms); None for a sweep."""
    slo = run.meta.get("slo") or {}
    value = slo.get("limit_ms")
    return float(value) if isinstance(value, int | float) and is_capacity_run(run) else None


def load_run_data(path: Path, chunk_rows: int | None = CHUNK_ROWS) -> RunData:
    """The run at ``path`` with its summary, its records read ``chunk_rows`` rows at a time.

    Memory is one chunk, three float64 per request (latencies and uncorrected latencies for exact
    percentiles, and per replica for its p50/p99) and the figure's bounded sample: a 20 M-row run
    reports in well under 2 GB.
    """
    run = load_run(path)
    acc = SummaryAccumulator(late_tolerance_ms(run_limit_ms(run)))
    timeline = _Timeline()
    replicas = ReplicaAccumulator()
    for chunk in iter_run_records(run, (*SUMMARY_INPUT_COLUMNS, "target"), chunk_rows):
        acc.add(chunk)
        timeline.add(chunk)
        replicas.add(chunk)
    return RunData(
        run=run,
        records=timeline.frame(),
        summary=_summary_of(run, acc),
        recorded=acc.rows,
        replicas=replicas.table(run),
    )


def ok_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Successful requests: HTTP 200 and no error text."""
    return records[~failed_mask(records)]


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
