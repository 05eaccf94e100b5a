"""Running ``tfsbench capacity``: a calibration, bounded Locust probes against a target, and the run directory.

Per (batch, encoding) cell: first a short closed-model run (``--calibration-time``, default 3 s,
``--calibration-users`` users) measures the throughput ceiling the target reaches with the
generator at hand; the search (bench.commands.capacity_search.search_capacity) starts there, so it
brackets the answer in a few probes. Each probe is one sweep cell (bench.commands.cells.run_cell)
at a fixed open-model rate, with ``--processes`` Locust processes; it is judged from its raw
records and load side-car (bench.commands.capacity_probe), its rows are appended to
requests.csv, and the search picks the next rate. After every probe the run directory is rewritten whole
(probes.csv, capacity.csv, meta.json), so an interrupted search keeps everything it measured::

    runs/<id>/capacity.csv   batch, encoding, max_rps, max_images_per_s, latency_ms_at_max, samples, replicas,
                             then latency_ci_low_ms/_high_ms (95 % interval of latency_ms_at_max), limited_by,
                             tolerance_met, fail_rps (the failing rate above the answer), probes, ceiling_rps
    runs/<id>/probes.csv     the calibration and every probe: target and achieved rate, sends due and the share
                             answered, users, samples, errors, late sends by cause, percentile with its interval,
                             p50, verdict and reason, the generator's CPU and loop lag
    runs/<id>/requests.csv   every request; cell ``b16-row-orjson@42.5rps`` (``@closed-8u``: the calibration)
    runs/<id>/meta.json      command capacity, config, SLO, target, probes, results
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench import LOCUSTFILE
from bench.commands.capacity_probe import calibration_result, probe_result
from bench.commands.capacity_search import (
    DEFAULT_TOLERANCE,
    CapacityResult,
    ProbeResult,
    SearchSettings,
    failure_reason,
    search_capacity,
)
from bench.commands.cells import CellResult, SweepConfig, check_grpc_target, merge_cell, run_cell, target_client
from bench.commands.cells import validate as validate_sweep
from bench.commands.preflight import prepare_inputs, save_plans
from bench.commands.sweep import describe_target
from bench.commands.workers import announce
from bench.errors import ConfigError, ResultsError, ServerError
from bench.payloads.input_plan import InputOptions
from bench.store import provenance, runs
from bench.store.lateness import late_tolerance_ms
from bench.store.load_stats import LoadStats, read_load_stats
from bench.store.record_parts import cell_record_files
from bench.store.records import read_records
from bench.target.replicas import parse_hosts
from reports.data import load_run_data

MIN_USERS = 4
# Requests per probe by default. 400: the fewest that bound a p99 from above at 95 %. Poisson
# arrivals queue in bursts, and a p99 from a few seconds of them wanders: in seeded M/D/1 searches
# at a p99 SLO, 400-request probes land within 10 % of the analytic capacity in 50-70 % of searches
# (median +5 %), 1000-request probes in about 90 % (tests/commands/test_capacity_search.py).
MIN_SAMPLES = {"constant": 400, "poisson": 1000}
# Users per (rate x SLO): a user sends one request at a time, so a reply slower than the gap to its
# next slot makes that send late. Constant slots are users/rate apart: twice the SLO is enough (a
# reply that slow fails the probe anyway). Poisson gaps are exponential, often far shorter than the
# mean, so more users keep the stream Poisson instead of held behind its own users.
USERS_PER_SLO = {"constant": 2.0, "poisson": 6.0}


@dataclass(frozen=True)
class CapacityConfig:
    """What ``tfsbench capacity`` searches; serialised into meta.json's ``config``."""

    host: str
    wait_ready_s: float = 0.0  # --wait-ready: how long to wait for every replica to serve the model
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
    min_samples: int | None = None  # None: MIN_SAMPLES[arrival]
    max_probe_s: float = 20.0
    min_measure_s: float = 3.0
    warmup_s: float = 1.0
    max_users: int = 256
    processes: int = 1
    calibration_s: float = 3.0  # 0: no calibration, step up from start_rps
    calibration_users: int = 8
    stability_pct: float | None = None
    stability_window_s: float = 2.0
    late_tolerance_ms: float | None = None  # None: max(10 ms, limit_ms / 4)
    model_name: str = "classifier"
    model_version: int | None = None
    signature_name: str = ""
    images: str | None = None
    pool_size: int | None = None
    inputs: InputOptions = field(default_factory=InputOptions)
    input_plan: str | None = None  # RUN/input_plan.json (bench.commands.preflight)
    grpc_target: str | None = None  # --grpc-target (bench.commands.cells.SweepConfig)
    expect_workers: int = 0  # remote workers (bench.commands.workers); 0: --processes local ones
    master_bind_host: str = "127.0.0.1"
    master_bind_port: int = 5557
    workers_wait_s: float = 300.0

    @property
    def generators(self) -> int:
        """Load-generating processes per probe: local ones, or the remote workers."""
        return max(self.processes, self.expect_workers)

    @property
    def slo_text(self) -> str:
        return f"p{self.percentile:g}<{self.limit_ms:g}ms"

    @property
    def search(self) -> SearchSettings:
        return SearchSettings(self.start_rps, self.growth, self.tolerance, self.max_probes, self.max_rps)

    @property
    def late_ms(self) -> float:
        """How late a send may start before it counts as late (bench.store.lateness)."""
        if self.late_tolerance_ms is not None:
            return self.late_tolerance_ms
        return late_tolerance_ms(self.limit_ms)

    def users_for(self, rate_rps: float) -> int:
        """Enough users that rate x latency at the SLO never runs out of them (bounded)."""
        wanted = math.ceil(rate_rps * self.limit_ms / 1000.0 * USERS_PER_SLO.get(self.arrival, 2.0))
        return int(min(max(wanted, MIN_USERS, self.generators), self.max_users))

    @property
    def samples(self) -> int:
        """Requests a probe measures (``--min-samples``, or the arrival model's default)."""
        return self.min_samples if self.min_samples is not None else MIN_SAMPLES.get(self.arrival, 400)

    def probe_requests(self, rate_rps: float) -> int:
        """Rows after which a probe stops: the warm-up's share, then ``min_samples`` and ``min_measure_s``."""
        measured = max(self.samples, math.ceil(rate_rps * self.min_measure_s))
        return measured + math.ceil(rate_rps * self.warmup_s)


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
CAPACITY_EXTRA_COLUMNS = (
    "latency_ci_low_ms",
    "latency_ci_high_ms",
    "limited_by",
    "tolerance_met",
    "fail_rps",
    "probes",
    "ceiling_rps",
)
PROBE_COLUMNS = (
    "batch",
    "encoding",
    "cell",
    "kind",
    "probe",
    "rate_rps",
    "users",
    "processes",
    "duration_s",
    "due",
    "requests",
    "answered_share",
    "errors",
    "late_sends",
    "late_busy",
    "late_idle",
    "late_allowed",
    "achieved_rps",
    "achieved_images_per_s",
    "latency_pct_ms",
    "latency_ci_low_ms",
    "latency_ci_high_ms",
    "p50_ms",
    "passed",
    "reason",
    "warmup_excluded",
    "client_cpu_pct",
    "loop_lag_ms_p99",
    "client_saturated",
    "stable",
    "windows",
)
CALIBRATION = "calibration"


def probe_cell_name(batch: int, encoding: str, rate_rps: float) -> str:
    """The requests.csv ``cell`` label of one probe: ``b16-row-orjson@42.5rps``."""
    return f"b{batch}-{encoding}@{rate_rps:.4g}rps"


def calibration_cell_name(batch: int, encoding: str, users: int) -> str:
    """The requests.csv ``cell`` label of a calibration run: ``b16-row-orjson@closed-8u`` (no offered rate)."""
    return f"b{batch}-{encoding}@closed-{users}u"


def _sweep_config(config: CapacityConfig, batch: int, encoding: str, rate_rps: float | None) -> SweepConfig:
    """A probe at ``rate_rps``; ``None``: the closed-model calibration run."""
    common: dict[str, Any] = {
        "host": config.host,
        "batch_sizes": (batch,),
        "encodings": (encoding,),
        "processes": config.processes,
        "model_name": config.model_name,
        "model_version": config.model_version,
        "signature_name": config.signature_name,
        "images": config.images,
        "pool_size": config.pool_size,
        "inputs": config.inputs,
        "input_plan": config.input_plan,
        "grpc_target": config.grpc_target,
        "expect_workers": config.expect_workers,
        "master_bind_host": config.master_bind_host,
        "master_bind_port": config.master_bind_port,
        "workers_wait_s": config.workers_wait_s,
        "max_failed_share": None,  # a probe's errors are its result, judged against the SLO
        "wait_ready_s": config.wait_ready_s,
    }
    if rate_rps is None:
        users = max(config.calibration_users, config.generators)
        return SweepConfig(users=users, duration_s=config.warmup_s + config.calibration_s, **common)
    stable = config.stability_pct is not None
    return SweepConfig(
        users=config.users_for(rate_rps),
        arrival=config.arrival,
        rate_per_s=rate_rps,
        duration_s=config.max_probe_s,
        # With --stability a probe measures until its windows agree (or its time cap), not to a count.
        requests=None if stable else config.probe_requests(rate_rps),
        stability_pct=config.stability_pct,
        stability_window_s=config.stability_window_s,
        stability_skip_s=config.warmup_s,
        **common,
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

    def _run(self, sweep_config: SweepConfig, cell: CellResult) -> tuple[pd.DataFrame | None, LoadStats | None]:
        """Run one Locust cell, merge its rows into requests.csv; its rows and side-car."""
        cell_dir = self.run_dir / runs.CELLS_DIR / cell.cell
        self.cells.append(cell)
        try:
            run_cell(sweep_config, cell, cell_dir, self.log_file)
        finally:
            files = cell_record_files(cell_dir)
            frame = read_records(files) if files else None
            merge_cell(self.run_dir, cell, cell_dir)
        try:
            load = read_load_stats(cell_dir / "records.csv")
        except ResultsError:
            load = None
        if cell.status != "done":
            self.save()
            raise ServerError(f"probe {cell.cell} {cell.status}: {cell.error or 'see locust.log'}")
        return frame, load

    def calibrate(self, batch: int, encoding: str) -> float | None:
        """A short closed run: the throughput ceiling (req/s) the target reaches with this generator."""
        config = self.config
        if config.calibration_s <= 0:
            return None
        sweep_config = _sweep_config(config, batch, encoding, None)
        cell = CellResult(calibration_cell_name(batch, encoding, sweep_config.users), batch, encoding)
        frame, _ = self._run(sweep_config, cell)
        calibration = calibration_result(frame, config.warmup_s, config.percentile)
        ceiling = calibration.ceiling_rps
        self.probe_rows.append(
            {
                **self._row_base(batch, encoding, cell, sweep_config, CALIBRATION),
                "rate_rps": math.nan,
                "requests": calibration.requests,
                "errors": calibration.errors,
                "achieved_rps": ceiling,
                "achieved_images_per_s": ceiling * batch if ceiling else None,
                "latency_pct_ms": calibration.latency_pct_ms,
                "latency_ci_low_ms": calibration.latency_ci_low_ms,
                "latency_ci_high_ms": calibration.latency_ci_high_ms,
                "p50_ms": calibration.p50_ms,
            }
        )
        self.save()
        saturated = " [client CPU saturated: the ceiling is the generator's]" if cell.saturated else ""
        text = f"{ceiling:.1f} req/s" if ceiling else "no successful request"
        print(
            f"capacity {cell.cell}: calibration, {sweep_config.users} users closed x {cell.wall_s or 0:.0f} s "
            f"-> ceiling {text}{saturated}",
            file=sys.stderr,
            flush=True,
        )
        return ceiling

    def _row_base(
        self, batch: int, encoding: str, cell: CellResult, sweep_config: SweepConfig, kind: str
    ) -> dict[str, Any]:
        same = [r for r in self.probe_rows if r["batch"] == batch and r["encoding"] == encoding and r["kind"] == kind]
        return {
            "batch": batch,
            "encoding": encoding,
            "cell": cell.cell,
            "kind": kind,
            "probe": len(same) + 1,
            "users": sweep_config.users,
            "processes": cell.processes,
            "duration_s": cell.wall_s,
            "warmup_excluded": None,
            "client_cpu_pct": cell.client_cpu_pct,
            "loop_lag_ms_p99": cell.loop_lag_ms_p99,
            "client_saturated": bool(cell.saturated),
            "stable": cell.stable,
            "windows": cell.windows,
        }

    def probe(self, batch: int, encoding: str, rate_rps: float) -> ProbeResult:
        """Run one bounded fixed-rate Locust probe, merge its rows into requests.csv, judge it."""
        config = self.config
        label = probe_cell_name(batch, encoding, rate_rps)
        if any(c.cell == label for c in self.cells):
            label += f"#{len(self.cells) + 1}"
        sweep_config = _sweep_config(config, batch, encoding, rate_rps)
        cell = CellResult(label, batch, encoding)
        frame, load = self._run(sweep_config, cell)
        result, excluded = probe_result(
            frame, rate_rps, config.percentile, config.warmup_s, config.late_ms, cell.wall_s or 0.0, load, label
        )
        self.probe_rows.append(
            {
                **self._row_base(batch, encoding, cell, sweep_config, "probe"),
                "rate_rps": rate_rps,
                "due": result.due,
                "requests": result.requests,
                "answered_share": result.answered_share,
                "errors": result.errors,
                "late_sends": result.late_sends,
                "late_busy": result.late_busy,
                "late_idle": result.late_idle,
                "late_allowed": result.late_allowed,
                "achieved_rps": result.achieved_rps,
                "achieved_images_per_s": result.achieved_rps * batch,
                "latency_pct_ms": result.latency_pct_ms,
                "latency_ci_low_ms": result.latency_ci_low_ms,
                "latency_ci_high_ms": result.latency_ci_high_ms,
                "p50_ms": result.p50_ms,
                "passed": False,
                "reason": "",
                "warmup_excluded": excluded,
            }
        )
        return result

    def on_probe(self, result: ProbeResult, ok: bool) -> None:
        row = self.probe_rows[-1]
        row["passed"] = ok
        row["reason"] = "" if ok else failure_reason(result, self.config.limit_ms)
        self.save()
        pct = f"p{self.config.percentile:g} {result.latency_pct_ms:.1f} ms"
        verdict = "pass" if ok else f"FAIL ({row['reason']})"
        cpu = " [client CPU saturated]" if row["client_saturated"] else ""
        print(
            f"capacity {row['cell']}: {result.rate_rps:.4g} req/s x {row['duration_s'] or 0:.0f} s, "
            f"{row['users']} users -> {pct}, {result.requests} of {result.due} due answered "
            f"({result.achieved_rps:.1f} req/s), {result.errors} errors, late {result.late_busy} waiting on "
            f"the server + {result.late_idle} on the generator ({result.late_allowed} allowed each): "
            f"{verdict}{cpu}",
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
    rows = [_result_row(r, config) for r in results]
    frame = pd.DataFrame(rows, columns=[*CAPACITY_COLUMNS, *CAPACITY_EXTRA_COLUMNS])
    frame["replicas"] = frame["replicas"].astype("Int64")
    return frame


def _result_row(result: CapacityResult, config: CapacityConfig) -> dict[str, Any]:
    return {
        "batch": result.batch,
        "encoding": result.encoding,
        "max_rps": result.max_rps,
        "max_images_per_s": result.max_images_per_s,
        "latency_ms_at_max": result.latency_ms_at_max,
        "samples": result.samples,
        "replicas": result.replicas(config.target_images_per_s, config.headroom, len(parse_hosts(config.host))),
        "latency_ci_low_ms": result.latency_ci_low_ms,
        "latency_ci_high_ms": result.latency_ci_high_ms,
        "limited_by": result.limited_by,
        "tolerance_met": result.tolerance_met,
        "fail_rps": result.fail_rps,
        "probes": len(result.probes),
        "ceiling_rps": result.ceiling_rps,
    }


def result_meta(result: CapacityResult, config: CapacityConfig) -> dict[str, Any]:
    """meta.json's ``capacity`` entry: capacity.csv's row with NaN as null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in _result_row(result, config).items()}


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
    if config.stability_pct is not None and config.max_probe_s < config.warmup_s + 3 * config.stability_window_s:
        raise ConfigError(
            f"--max-probe-time {config.max_probe_s:g}s has no room for three --stability-window "
            f"{config.stability_window_s:g}s windows after --warmup-time {config.warmup_s:g}s"
        )
    for batch in config.batch_sizes:
        validate_sweep(_sweep_config(config, batch, config.encodings[0] if config.encodings else "", 1.0))


def run_capacity_config(config: CapacityConfig, out: Path) -> tuple[Path, list[CapacityResult]]:
    """Search every (encoding, batch) cell into a new run directory under ``out``.

    Returns (run directory, results). Raises KeyboardInterrupt after saving when interrupted,
    and ServerError (after saving) when a probe could not run.
    """
    validate(config)
    first = _sweep_config(config, config.batch_sizes[0], config.encodings[0], 1.0)
    client = target_client(first)
    target = describe_target(client, first)
    grpc_target = check_grpc_target(replace(first, encodings=config.encodings))
    if grpc_target:
        target["grpc_target"] = grpc_target
    inputs = replace(config.inputs, images=config.images)
    plans, signature = prepare_inputs(
        client, config.encodings, config.batch_sizes, inputs, config.signature_name, grpc_target
    )
    run_dir = runs.new_run_dir(out)
    config = replace(config, input_plan=save_plans(run_dir, plans))
    run = CapacityRun(config, run_dir)
    runs.update_meta(
        run_dir,
        command="capacity",
        argv=sys.argv[1:],
        config={
            **asdict(config),
            "load": f"open {config.arrival}, probes searched per cell",
            "locustfile": os.path.relpath(first.locustfile),
        },
        slo={"text": config.slo_text, "percentile": config.percentile, "limit_ms": config.limit_ms},
        target=target,
        signature=signature,
        **provenance.collect_environment(),
    )
    cells = [(b, e) for e in config.encodings for b in config.batch_sizes]
    print(f"capacity: {len(cells)} cells at {config.slo_text} -> {run_dir}", file=sys.stderr, flush=True)
    announce(
        "capacity", config.expect_workers, str(LOCUSTFILE), config.master_bind_host, config.master_bind_port,
        config.workers_wait_s,
    )  # fmt: skip
    try:
        for batch, encoding in cells:
            ceiling = run.calibrate(batch, encoding)
            result = search_capacity(
                _probe_of(run, batch, encoding),
                config.limit_ms,
                batch,
                encoding,
                config.search,
                run.on_probe,
                ceiling_rps=ceiling,
            )
            run.results.append(result)
            run.save()
    except BaseException as exc:
        reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        finished = runs.utc_now().isoformat(timespec="seconds")
        with contextlib.suppress(ResultsError):  # a full disk: the error being raised says so already
            run.save(incomplete=True, incomplete_reason=reason, finished_utc=finished)
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
