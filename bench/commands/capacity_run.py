"""Running ``tfsbench capacity``: bounded Locust probes against a target, and the run directory.

Each probe is one sweep cell (bench.commands.cells.run_cell) at a fixed open-model rate; its rows are
judged from the raw records (:func:`probe_result`), appended to requests.csv, and the search
(bench.commands.capacity_search.search_capacity) picks the next rate. After every probe the run directory is
rewritten whole (probes.csv, capacity.csv, meta.json), so an interrupted search keeps
everything it measured::

    runs/<id>/capacity.csv   batch, encoding, max_rps, max_images_per_s, latency_ms_at_max, samples, replicas
    runs/<id>/probes.csv     every probe: target and achieved rate, users, samples, errors, late sends,
                             percentile, p50, verdict and reason
    runs/<id>/requests.csv   every request; cell ``b16-row-orjson@42.5rps``
    runs/<id>/meta.json      command capacity, config, SLO, target, probes, results
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.commands.capacity_search import (
    DEFAULT_TOLERANCE,
    CapacityResult,
    ProbeResult,
    SearchSettings,
    failure_reason,
    search_capacity,
)
from bench.commands.cells import CellResult, SweepConfig, merge_cell, run_cell, target_client
from bench.commands.cells import validate as validate_sweep
from bench.commands.sweep import describe_target
from bench.errors import ConfigError, ResultsError, ServerError
from bench.store import provenance, runs
from bench.store.lateness import LATE_SHARE_LIMIT, LATE_TOLERANCE_MS
from bench.store.record_parts import cell_record_files
from bench.store.records import read_records
from reports.data import load_run_data

MIN_USERS = 4
# Users per (rate x SLO): a user sends one request at a time, so a reply slower than twice the SLO
# makes its next send late; such a probe fails anyway.
USERS_PER_SLO = 2.0


@dataclass(frozen=True)
class CapacityConfig:
    """What ``tfsbench capacity`` searches; serialised into meta.json's ``config``."""

    host: str
    percentile: float = 99.0
    limit_ms: float = 100.0
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    encodings: tuple[str, ...] = ("row-orjson",)
    arrival: str = "constant"
    target_images_per_s: float | None = None
    headroom: float = 0.3
    start_rps: float = 10.0
    growth: float = 2.0
    tolerance: float = DEFAULT_TOLERANCE
    max_probes: int = 12
    max_rps: float = 5000.0
    min_samples: int = 300
    max_probe_s: float = 20.0
    min_measure_s: float = 3.0
    warmup_s: float = 1.0
    max_users: int = 256
    late_tolerance_ms: float | None = None  # None: max(10 ms, limit_ms / 4)
    model_name: str = "classifier"
    model_version: int | None = None
    signature_name: str = ""
    images: str | None = None
    pool_size: int | None = None

    @property
    def slo_text(self) -> str:
        return f"p{self.percentile:g}<{self.limit_ms:g}ms"

    @property
    def search(self) -> SearchSettings:
        return SearchSettings(self.start_rps, self.growth, self.tolerance, self.max_probes, self.max_rps)

    @property
    def late_ms(self) -> float:
        """How late a send may start before it counts as late."""
        if self.late_tolerance_ms is not None:
            return self.late_tolerance_ms
        return max(LATE_TOLERANCE_MS, self.limit_ms / 4.0)

    def users_for(self, rate_rps: float) -> int:
        """Enough users that rate x latency at the SLO never runs out of them (bounded)."""
        wanted = math.ceil(rate_rps * self.limit_ms / 1000.0 * USERS_PER_SLO)
        return int(min(max(wanted, MIN_USERS), self.max_users))

    def probe_requests(self, rate_rps: float) -> int:
        """Rows after which a probe stops: the warm-up's share, then ``min_samples`` and ``min_measure_s``."""
        measured = max(self.min_samples, math.ceil(rate_rps * self.min_measure_s))
        return measured + math.ceil(rate_rps * self.warmup_s)


def probe_result(
    frame: pd.DataFrame | None,
    rate_rps: float,
    percentile: float,
    warmup_s: float,
    late_tolerance_ms: float,
    duration_s: float,
) -> tuple[ProbeResult, int]:
    """One probe's verdict inputs from its raw records; also returns the warm-up rows left out.

    Rows whose intended send falls in the first ``warmup_s`` (users still spawning, caches
    cold) are left out. The latency percentile (numpy, linear) counts from the intended send
    time over every remaining row, failed ones included. The achieved rate is those rows over
    the time from the window's start to the last reply, so a server that falls behind (replies
    trailing after the schedule ends, or requests never answered) shows a rate below the target.
    """
    if frame is None or len(frame) == 0:
        return ProbeResult(rate_rps, 0, 0, 0, 0.0, math.nan, math.nan, duration_s), 0
    start = float(frame["t_start"].min()) + warmup_s
    window = frame[frame["t_start"] >= start]
    excluded = len(frame) - len(window)
    if window.empty:
        return ProbeResult(rate_rps, 0, 0, 0, 0.0, math.nan, math.nan, duration_s), excluded
    latencies = window["latency_ms"].to_numpy(dtype=float)
    ends = window["t_start"].to_numpy(dtype=float) + latencies / 1000.0
    span = float(ends.max()) - start
    failed = (window["status"] != 200) | (window["error"].astype(str) != "")
    lag = window["send_lag_ms"].to_numpy(dtype=float) if "send_lag_ms" in window else np.zeros(len(window))
    pct, p50 = np.percentile(latencies, [percentile, 50])
    result = ProbeResult(
        rate_rps=rate_rps,
        requests=len(window),
        errors=int(failed.sum()),
        late_sends=int((lag > late_tolerance_ms).sum()),
        achieved_rps=len(window) / span if span > 0 else 0.0,
        latency_pct_ms=float(pct),
        p50_ms=float(p50),
        duration_s=duration_s,
        late_allowed=int(len(window) * LATE_SHARE_LIMIT),
    )
    return result, excluded


# --- the command: every (batch, encoding) cell searched, results in a run directory ---------------

CAPACITY_COLUMNS = (
    "batch",
    "encoding",
    "max_rps",
    "max_images_per_s",
    "latency_ms_at_max",
    "samples",
    "replicas",
)
PROBE_COLUMNS = (
    "batch",
    "encoding",
    "cell",
    "probe",
    "rate_rps",
    "users",
    "duration_s",
    "requests",
    "errors",
    "late_sends",
    "late_allowed",
    "achieved_rps",
    "achieved_images_per_s",
    "latency_pct_ms",
    "p50_ms",
    "passed",
    "reason",
    "warmup_excluded",
    "client_cpu_pct",
    "client_saturated",
)


def probe_cell_name(batch: int, encoding: str, rate_rps: float) -> str:
    """The requests.csv ``cell`` label of one probe: ``b16-row-orjson@42.5rps``."""
    return f"b{batch}-{encoding}@{rate_rps:.4g}rps"


def _sweep_config(config: CapacityConfig, batch: int, encoding: str, rate_rps: float | None) -> SweepConfig:
    return SweepConfig(
        host=config.host,
        batch_sizes=(batch,),
        encodings=(encoding,),
        users=config.users_for(rate_rps or config.start_rps),
        arrival=config.arrival,
        rate_per_s=rate_rps or config.start_rps,
        duration_s=config.max_probe_s,
        requests=config.probe_requests(rate_rps or config.start_rps),
        model_name=config.model_name,
        model_version=config.model_version,
        signature_name=config.signature_name,
        images=config.images,
        pool_size=config.pool_size,
    )


class CapacityRun:
    """One ``tfsbench capacity`` run directory, rewritten after every probe so a stop loses nothing."""

    def __init__(self, config: CapacityConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.log_file = run_dir / "locust.log"
        self.cells: list[CellResult] = []  # one per probe, for meta.json and the report
        self.probe_rows: list[dict[str, Any]] = []
        self.results: list[CapacityResult] = []

    def probe(self, batch: int, encoding: str, rate_rps: float) -> ProbeResult:
        """Run one bounded fixed-rate Locust probe, merge its rows into requests.csv, judge it."""
        config = self.config
        label = probe_cell_name(batch, encoding, rate_rps)
        if any(c.cell == label for c in self.cells):
            label += f"#{len(self.cells) + 1}"
        sweep_config = _sweep_config(config, batch, encoding, rate_rps)
        cell = CellResult(label, batch, encoding)
        cell_dir = self.run_dir / runs.CELLS_DIR / label
        self.cells.append(cell)
        try:
            run_cell(sweep_config, cell, cell_dir, self.log_file)
        finally:
            files = cell_record_files(cell_dir)
            frame = read_records(files) if files else None
            merge_cell(self.run_dir, cell, cell_dir)
        result, excluded = probe_result(
            frame, rate_rps, config.percentile, config.warmup_s, config.late_ms, cell.wall_s or 0.0
        )
        self.probe_rows.append(
            {
                "batch": batch,
                "encoding": encoding,
                "cell": label,
                "probe": sum(1 for r in self.probe_rows if r["batch"] == batch and r["encoding"] == encoding) + 1,
                "rate_rps": rate_rps,
                "users": sweep_config.users,
                "duration_s": cell.wall_s,
                "requests": result.requests,
                "errors": result.errors,
                "late_sends": result.late_sends,
                "late_allowed": result.late_allowed,
                "achieved_rps": result.achieved_rps,
                "achieved_images_per_s": result.achieved_rps * batch,
                "latency_pct_ms": result.latency_pct_ms,
                "p50_ms": result.p50_ms,
                "passed": False,
                "reason": "",
                "warmup_excluded": excluded,
                "client_cpu_pct": cell.client_cpu_pct,
                "client_saturated": bool(cell.saturated),
            }
        )
        if cell.status not in ("done",):
            self.save()
            raise ServerError(f"probe {label} {cell.status}: {cell.error or 'see locust.log'}")
        return result

    def on_probe(self, result: ProbeResult, ok: bool) -> None:
        row = self.probe_rows[-1]
        row["passed"] = ok
        row["reason"] = "" if ok else failure_reason(result, self.config.limit_ms) or "no requests"
        self.save()
        pct = f"p{self.config.percentile:g} {result.latency_pct_ms:.1f} ms"
        verdict = "pass" if ok else f"FAIL ({row['reason']})"
        cpu = " [client CPU saturated]" if row["client_saturated"] else ""
        print(
            f"capacity {row['cell']}: {result.rate_rps:.4g} req/s x {row['duration_s'] or 0:.0f} s, "
            f"{row['users']} users -> {pct}, achieved {result.achieved_rps:.1f} req/s, "
            f"{result.requests} samples, {result.errors} errors, {result.late_sends} late "
            f"({result.late_allowed} allowed): {verdict}{cpu}",
            file=sys.stderr,
            flush=True,
        )

    def save(self, **meta_fields: Any) -> None:
        """probes.csv, capacity.csv (cells finished so far) and meta.json, each replaced whole."""
        pd.DataFrame(self.probe_rows, columns=list(PROBE_COLUMNS)).to_csv(
            self.run_dir / runs.PROBES_FILE, index=False, float_format="%.6g"
        )
        capacity_frame(self.results, self.config).to_csv(
            self.run_dir / runs.CAPACITY_FILE, index=False, float_format="%.6g"
        )
        runs.update_meta(
            self.run_dir,
            cells=[asdict(c) for c in self.cells],
            probes=self.probe_rows,
            capacity=[result_meta(r, self.config) for r in self.results],
            **meta_fields,
        )


def capacity_frame(results: list[CapacityResult], config: CapacityConfig) -> pd.DataFrame:
    """The capacity.csv table: one row per cell; replicas empty without a target or a capacity."""
    rows = [
        {
            "batch": r.batch,
            "encoding": r.encoding,
            "max_rps": r.max_rps,
            "max_images_per_s": r.max_images_per_s,
            "latency_ms_at_max": r.latency_ms_at_max,
            "samples": r.samples,
            "replicas": r.replicas(config.target_images_per_s, config.headroom),
        }
        for r in results
    ]
    frame = pd.DataFrame(rows, columns=list(CAPACITY_COLUMNS))
    frame["replicas"] = frame["replicas"].astype("Int64")
    return frame


def result_meta(result: CapacityResult, config: CapacityConfig) -> dict[str, Any]:
    return {
        "batch": result.batch,
        "encoding": result.encoding,
        "max_rps": result.max_rps,
        "max_images_per_s": result.max_images_per_s,
        "latency_ms_at_max": None if math.isnan(result.latency_ms_at_max) else result.latency_ms_at_max,
        "samples": result.samples,
        "replicas": result.replicas(config.target_images_per_s, config.headroom),
        "stopped_by": result.stopped_by,
        "probes": len(result.probes),
    }


def validate(config: CapacityConfig) -> None:
    """ConfigError (one line, exit 2) before any request; the sweep's checks cover host and encodings."""
    if config.arrival not in ("constant", "poisson"):
        raise ConfigError(f"--arrival {config.arrival}: capacity probes need an open model (constant or poisson)")
    if not 0 <= config.headroom < 1:
        raise ConfigError(f"--headroom {config.headroom:g} must be at least 0 and below 1")
    if not config.growth > 1:
        raise ConfigError(f"--growth {config.growth:g} must be above 1")
    if config.start_rps > config.max_rps:
        raise ConfigError(f"--start-rate {config.start_rps:g} is above --max-rate {config.max_rps:g}")
    if config.max_probe_s < config.warmup_s + config.min_measure_s:
        raise ConfigError(
            f"--max-probe-time {config.max_probe_s:g}s is shorter than --warmup-time {config.warmup_s:g}s "
            f"plus --min-measure-time {config.min_measure_s:g}s"
        )
    for batch in config.batch_sizes:
        validate_sweep(_sweep_config(config, batch, config.encodings[0] if config.encodings else "", None))


def run_capacity_config(config: CapacityConfig, out: Path) -> tuple[Path, list[CapacityResult]]:
    """Search every (encoding, batch) cell into a new run directory under ``out``.

    Returns (run directory, results). Raises KeyboardInterrupt after saving when interrupted,
    and ServerError (after saving) when a probe could not run.
    """
    validate(config)
    first = _sweep_config(config, config.batch_sizes[0], config.encodings[0], None)
    target = describe_target(target_client(first), first)
    run_dir = runs.new_run_dir(out)
    run = CapacityRun(config, run_dir)
    runs.update_meta(
        run_dir,
        command="capacity",
        argv=sys.argv[1:],
        config={
            **asdict(config),
            "load": f"open {config.arrival}, probes searched per cell",
            "locustfile": os.path.relpath(_sweep_config(config, 1, "row-orjson", None).locustfile),
        },
        slo={"text": config.slo_text, "percentile": config.percentile, "limit_ms": config.limit_ms},
        target=target,
        **provenance.collect_environment(),
    )
    cells = [(b, e) for e in config.encodings for b in config.batch_sizes]
    print(f"capacity: {len(cells)} cells at {config.slo_text} -> {run_dir}", file=sys.stderr, flush=True)
    try:
        for batch, encoding in cells:
            result = search_capacity(
                _probe_of(run, batch, encoding),
                config.limit_ms,
                batch,
                encoding,
                config.search,
                run.on_probe,
            )
            run.results.append(result)
            run.save()
    except BaseException as exc:
        reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        run.save(incomplete=True, incomplete_reason=reason, finished_utc=runs.utc_now().isoformat(timespec="seconds"))
        raise
    _write_summary(run_dir)
    run.save(incomplete=False, incomplete_reason=None, finished_utc=runs.utc_now().isoformat(timespec="seconds"))
    return run_dir, run.results


def _probe_of(run: CapacityRun, batch: int, encoding: str) -> Callable[[float], ProbeResult]:
    """The search's ``probe(rate)`` for one cell."""
    return lambda rate: run.probe(batch, encoding, rate)


def _write_summary(run_dir: Path) -> None:
    try:
        load_run_data(run_dir).summary.to_csv(run_dir / runs.SUMMARY_FILE, index=False, float_format="%.6g")
    except ResultsError:
        pass  # no probe recorded a request: there is nothing to summarise
