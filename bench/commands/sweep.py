"""``tfsbench sweep``: one headless Locust run per (batch size, encoding) cell, every request recorded.

For each cell, in order (encodings outer, batch sizes inner)::

    locust -f locustfiles/predict.py --headless --host URL -u USERS -t DURATION
           --batch-sizes B --encodings E --cell bB-E --records RUN/cells/bB-E/records.csv ...

then its rows are appended to ``RUN/requests.csv``, Locust's own counts and the load
generator's CPU share go into ``meta.json``'s ``cells``, and ``summary.csv`` is rewritten, so
the run on disk is consistent after every cell. Where the target serves tensorflow/serving's
Prometheus metrics, they are scraped before and after each cell (bench.target.prometheus).

Failure handling: a cell whose Locust process fails is marked ``failed`` and the grid goes on.
A target that stops answering is noticed by a status poll every 2 s; the cell is stopped, the
run marked incomplete, and later cells run only if the target answers again. Ctrl-C stops the
current cell, keeps every row written so far, marks the run incomplete and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import LOCUSTFILE
from bench.errors import BenchError, ConfigError, ResultsError, ServerError
from bench.ports import free_port
from bench.store import runs
from bench.target import prometheus

POLL_S = 0.5
HEALTH_EVERY_S = 2.0
HEALTH_FAILS_TO_STOP = 2
STOP_GRACE_S = 20.0
# --requests N without --duration: the cell still ends after this long (seconds).
REQUESTS_TIME_CAP_S = 600.0


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep; serialised into meta.json's ``config``."""

    host: str
    batch_sizes: tuple[int, ...]
    encodings: tuple[str, ...]
    users: int = 4
    arrival: str = "closed"
    rate_per_s: float | None = None
    duration_s: float | None = 30.0
    requests: int | None = None
    warmup: int = 0
    processes: int = 1
    model_name: str = "classifier"
    model_version: int | None = None
    signature_name: str = ""
    images: str | None = None
    pool_size: int | None = None
    metrics_path: str = prometheus.DEFAULT_PATH
    server_kind: str | None = None
    locustfile: str = str(LOCUSTFILE)

    @property
    def cell_time_s(self) -> float:
        if self.duration_s is not None:
            return self.duration_s
        return REQUESTS_TIME_CAP_S if self.requests else 30.0

    @property
    def load_text(self) -> str:
        if self.arrival == "closed":
            return f"closed, {self.users} users"
        return f"open {self.arrival} {self.rate_per_s:g} req/s, {self.users} users"


@dataclass
class CellResult:
    """One cell as it ran (a mutable record while it runs; stored in meta.json's ``cells``)."""

    cell: str
    batch: int
    encoding: str
    status: str = "pending"  # pending, running, done, failed, interrupted, server_down, skipped
    error: str | None = None
    wall_s: float | None = None
    records: int = 0
    merged: bool = False
    locust_requests: int | None = None
    locust_failures: int | None = None
    client_cpu_pct: float | None = None
    client_cpu_pct_max: float | None = None
    warmup_excluded: int | None = None
    saturated: bool | None = None
    processes: int = 1
    server: dict[str, float] = field(default_factory=dict)


# --- validation and pre-flight -----------------------------------------------------------------


def validate(config: SweepConfig) -> None:
    """ConfigError (one line, exit 2) for anything wrong before a single request is sent."""
    if not config.host.startswith(("http://", "https://")):
        raise ConfigError(f"--host '{config.host}' is not an http:// or https:// URL")
    if not config.batch_sizes or min(config.batch_sizes) <= 0:
        raise ConfigError("--batch-sizes needs positive integers, e.g. 1,4,16")
    try:
        from bench.payloads.encodings import get_encoding
    except ImportError:  # the payloads module is missing: check names against the contract
        from bench.cli import ENCODING_NAMES

        unknown = [e for e in config.encodings if e not in ENCODING_NAMES]
        if unknown:
            raise ConfigError(f"unknown encoding '{unknown[0]}' (valid: {', '.join(ENCODING_NAMES)})") from None
    else:
        for name in config.encodings:
            get_encoding(name)
    if config.arrival == "closed" and config.rate_per_s is not None:
        raise ConfigError("--rate sets an open-model rate: add --arrival poisson or --arrival constant")
    if config.arrival != "closed" and config.rate_per_s is None:
        raise ConfigError(f"--arrival {config.arrival} needs --rate REQ/S (total requests per second)")
    if not Path(config.locustfile).is_file():
        raise ConfigError(f"locustfile {config.locustfile} not found")


def _get(url: str, timeout_s: float) -> Any:
    import requests

    try:
        return requests.get(url, timeout=timeout_s)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.ConnectionError):
            reason = "connection refused or host unreachable"
        elif isinstance(exc, requests.Timeout):
            reason = f"no answer within {timeout_s:g} s"
        raise ServerError(f"cannot reach {url}: {reason}") from exc


def probe_target(config: SweepConfig, timeout_s: float = 5.0) -> dict[str, Any]:
    """Model status, metadata and server identity; ServerError if the model is not being served."""
    base = f"{config.host.rstrip('/')}/v1/models/{config.model_name}"
    if config.model_version is not None:
        base += f"/versions/{config.model_version}"
    status = _get(base, timeout_s)
    if status.status_code != 200:
        try:
            message = status.json().get("error", status.text)
        except ValueError:
            message = status.text[:200]
        raise ServerError(f"{base} answered HTTP {status.status_code}: {message}")
    versions = status.json().get("model_version_status", [])
    available = [v for v in versions if v.get("state") == "AVAILABLE"]
    if not available:
        raise ServerError(f"model '{config.model_name}' at {config.host} has no AVAILABLE version yet")
    target: dict[str, Any] = {
        "host": config.host,
        "model_name": config.model_name,
        "model_version": max(available, key=lambda v: int(v.get("version", 0))).get("version"),
        "model_version_status": versions,
        "server_header": status.headers.get("Server"),
    }
    try:
        meta = _get(base + "/metadata", timeout_s).json()
        sigs = meta.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        target["signatures"] = sorted(sigs)
    except (ServerError, ValueError, AttributeError) as exc:
        target["signatures_error"] = str(exc)
    kind, version = _server_identity(target["server_header"])
    target["server_kind"] = config.server_kind or kind
    target["server_version"] = version
    target["server_kind_source"] = "--server-kind" if config.server_kind else "Server header"
    metrics = prometheus.scrape(prometheus.metrics_url(config.host, config.metrics_path))
    target["prometheus"] = config.metrics_path if metrics else None
    return target


def _server_identity(header: str | None) -> tuple[str, str | None]:
    """(kind, version) from the HTTP Server header; tensorflow/serving sends none we can rely on."""
    if not header:
        return "unknown", None
    low = header.lower()
    name, _, version = header.partition("/")
    if "tfsbench" in low:
        return "embedded", version.split()[0] if version else None
    if "tensorflow" in low:
        return "tensorflow-serving", version.split()[0] if version else None
    return f"other ({name})", version.split()[0] if version else None


def target_alive(config: SweepConfig, timeout_s: float = 2.0) -> bool:
    try:
        r = _get(f"{config.host.rstrip('/')}/v1/models/{config.model_name}", timeout_s)
    except ServerError:
        return False
    return r.status_code == 200


# --- one cell ----------------------------------------------------------------------------------


def locust_command(config: SweepConfig, cell: CellResult, cell_dir: Path) -> list[str]:
    """The headless Locust command line for one cell."""
    cmd = [
        sys.executable, "-m", "locust", "-f", config.locustfile, "--headless", "--host", config.host,
        "--users", str(config.users), "--spawn-rate", str(config.users),
        "--run-time", f"{math.ceil(config.cell_time_s)}s",
        "--stop-timeout", "10", "--json-file", str(cell_dir / "locust"), "--exit-code-on-error", "0",
        "--loglevel", "WARNING", "--only-summary",
        "--batch-sizes", str(cell.batch), "--encodings", cell.encoding, "--cell", cell.cell,
        "--records", str(cell_dir / "records.csv"), "--warmup", str(config.warmup), "--arrival", config.arrival,
        "--model-name", config.model_name,
    ]  # fmt: skip
    if config.rate_per_s is not None:
        cmd += ["--rate", f"{config.rate_per_s:g}"]
    if config.model_version is not None:
        cmd += ["--model-version", str(config.model_version)]
    if config.signature_name:
        cmd += ["--signature-name", config.signature_name]
    if config.images:
        cmd += ["--images", config.images]
    if config.pool_size:
        cmd += ["--pool-size", str(config.pool_size)]
    if config.processes > 1:
        # Locust's default master port (5557) would join parallel sweeps' workers to one master.
        # The forked workers connect to --master-port, the master listens on --master-bind-port.
        port = str(free_port())
        cmd += ["--processes", str(config.processes), "--master-port", port, "--master-bind-port", port]
    return cmd


def _count_rows(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1)
    except OSError:
        return 0


def _records_files(records: Path) -> list[Path]:
    """The cell's records file and, with --processes, its workers' files (merged when Locust quits)."""
    from bench.store.record_parts import part_files

    return [p for p in (records, *part_files(records)) if p.is_file()]


def _locust_counts(cell_dir: Path) -> tuple[int | None, int | None]:
    """(requests, failures) of the predict entries in Locust's final stats (``--json-file``)."""
    path = cell_dir / "locust.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    predict = [e for e in entries if str(e.get("name", "")).startswith("predict")]
    return sum(int(e.get("num_requests", 0)) for e in predict), sum(int(e.get("num_failures", 0)) for e in predict)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Ask Locust to stop (it writes its stats and closes records on SIGTERM/SIGINT), then insist."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run_cell(config: SweepConfig, cell: CellResult, cell_dir: Path, log_file: Path) -> None:
    """Run one cell's Locust process to its end (or stop it early); fills ``cell`` in place."""
    import psutil

    cell_dir.mkdir(parents=True, exist_ok=True)
    records = cell_dir / "records.csv"
    start = time.monotonic()
    cell.status = "running"
    cell.processes = config.processes
    with log_file.open("ab") as log:
        proc = subprocess.Popen(locust_command(config, cell, cell_dir), stdout=log, stderr=subprocess.STDOUT)
    fails, next_health = 0, start + HEALTH_EVERY_S
    cpu_first: tuple[float, float] | None = None
    cpu_last: tuple[float, float] | None = None
    try:
        while proc.poll() is None:
            time.sleep(POLL_S)
            now = time.monotonic()
            cpu_s = _tree_cpu_s(psutil, proc.pid)
            files = _records_files(records)
            if cpu_s is not None and files:  # load has started: rows are arriving
                cpu_last = (now, cpu_s)
                cpu_first = cpu_first or cpu_last
            if config.requests and sum(_count_rows(f) for f in files) >= config.requests:
                _stop(proc)
                break
            if now >= next_health:
                next_health = now + HEALTH_EVERY_S
                fails = 0 if target_alive(config) else fails + 1
                if fails >= HEALTH_FAILS_TO_STOP:
                    _stop(proc)
                    cell.status = "server_down"
                    cell.error = f"{config.host} stopped answering during the cell"
                    break
    except KeyboardInterrupt:
        _stop(proc, signal.SIGINT)
        cell.status = "interrupted"
        raise
    finally:
        cell.wall_s = round(time.monotonic() - start, 3)
        if cpu_first and cpu_last and cpu_last[0] - cpu_first[0] > 0.5:
            cell.client_cpu_pct = round(100.0 * (cpu_last[1] - cpu_first[1]) / (cpu_last[0] - cpu_first[0]), 1)
        cell.locust_requests, cell.locust_failures = _locust_counts(cell_dir)
        _load_side_car(cell, records)
    if cell.status == "running":
        if proc.returncode == 0:
            cell.status = "done"
        else:
            cell.status = "failed"
            cell.error = f"locust exited with code {proc.returncode}: {_tail(log_file)}"


def _tree_cpu_s(psutil: Any, pid: int) -> float | None:
    """CPU seconds (user + system) of Locust and its forked workers so far."""
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except psutil.Error:
        return None


def _load_side_car(cell: CellResult, records: Path) -> None:
    """Warm-up count, CPU and saturation from the Locust process's own ``records.load.json``."""
    from bench.store.records import read_load_stats

    try:
        stats = read_load_stats(records)
    except ResultsError:
        return
    if stats is None:
        return
    cell.warmup_excluded = stats.warmup_by_cell.get(cell.cell, stats.warmup_excluded)
    if stats.client_cpu_pct_mean:
        cell.client_cpu_pct = round(stats.client_cpu_pct_mean, 1)
    cell.client_cpu_pct_max = round(stats.client_cpu_pct_max, 1)
    cell.saturated = stats.saturated


def _tail(log_file: Path, lines: int = 3) -> str:
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(t.strip() for t in text[-lines:])[-400:]


def merge_cell(run_dir: Path, cell: CellResult, cell_dir: Path) -> None:
    """Append the cell's rows to requests.csv, then drop its records file."""
    from bench.store.records import RecordWriter, RequestRecord, read_records
    from reports.data import cell_record_files

    files = cell_record_files(cell_dir)
    if not files:
        cell.merged = True
        return
    frame = read_records(files).sort_values("t_start", kind="stable")
    with RecordWriter(run_dir / runs.REQUESTS_FILE) as writer:
        for row in frame.itertuples(index=False):
            writer.write(RequestRecord(*row))
    cell.records = len(frame)
    cell.merged = True
    for f in files:
        f.unlink(missing_ok=True)


# --- the grid ----------------------------------------------------------------------------------


class Progress:
    """A one-line-per-cell progress bar on stderr."""

    def __init__(self, total: int, width: int = 24) -> None:
        self.total, self.width, self.t0 = total, width, time.monotonic()

    def bar(self, done: int) -> str:
        filled = round(self.width * done / max(self.total, 1))
        return "[" + "#" * filled + "." * (self.width - filled) + f"] {done}/{self.total}"

    def start(self, i: int, cell: CellResult) -> None:
        print(f"{self.bar(i)} {cell.cell} ...", file=sys.stderr, flush=True)

    def end(self, i: int, cell: CellResult) -> None:
        elapsed = time.monotonic() - self.t0
        cpu = f", client CPU {cell.client_cpu_pct:.0f}%" if cell.client_cpu_pct is not None else ""
        err = f" ({cell.error})" if cell.error else ""
        print(
            f"{self.bar(i + 1)} {cell.cell}: {cell.status}, {cell.records} requests recorded{cpu}, "
            f"{cell.wall_s or 0:.0f} s (total {elapsed:.0f} s){err}",
            file=sys.stderr,
            flush=True,
        )


def _write_state(run_dir: Path, cells: list[CellResult], **fields: Any) -> None:
    runs.update_meta(run_dir, cells=[asdict(c) for c in cells], **fields)
    try:
        from reports.data import load_run_data

        data = load_run_data(run_dir)
        data.summary.to_csv(run_dir / runs.SUMMARY_FILE, index=False, float_format="%.10g")
    except ResultsError:
        pass  # no rows yet: summary.csv appears with the first recorded request


def run_sweep_config(config: SweepConfig, out: Path, extra_meta: dict[str, Any] | None = None) -> Path:
    """Run the whole grid into a new run directory under ``out``; returns the run directory.

    Raises KeyboardInterrupt after saving everything when interrupted.
    """
    validate(config)
    target = probe_target(config)
    run_dir = runs.new_run_dir(out)
    cells = [CellResult(runs.cell_name(b, e), b, e) for e in config.encodings for b in config.batch_sizes]
    runs.update_meta(
        run_dir,
        command="sweep",
        argv=sys.argv[1:],
        config={**asdict(config), "load": config.load_text, "locustfile": os.path.relpath(config.locustfile)},
        target=target,
        **runs.collect_environment(),
        cells=[asdict(c) for c in cells],
        **(extra_meta or {}),
    )
    print(f"sweep: {len(cells)} cells -> {run_dir}", file=sys.stderr)
    progress = Progress(len(cells))
    metrics_url = prometheus.metrics_url(config.host, config.metrics_path) if target["prometheus"] else None
    problems: list[str] = []
    log_file = run_dir / "locust.log"
    for i, cell in enumerate(cells):
        if not target_alive(config):
            cell.status, cell.error = "skipped", f"{config.host} not answering before the cell"
            problems.append(f"{cell.cell} skipped (server not answering)")
            progress.end(i, cell)
            _write_state(run_dir, cells)
            continue
        progress.start(i, cell)
        before = prometheus.scrape(metrics_url) if metrics_url else None
        cell_dir = run_dir / runs.CELLS_DIR / cell.cell
        try:
            run_cell(config, cell, cell_dir, log_file)
        except KeyboardInterrupt:
            merge_cell(run_dir, cell, cell_dir)
            for rest in cells[i + 1 :]:
                rest.status = "skipped"
            _write_state(
                run_dir,
                cells,
                incomplete=True,
                incomplete_reason=f"interrupted (Ctrl-C) during cell {cell.cell}",
                finished_utc=runs.utc_now().isoformat(timespec="seconds"),
            )
            progress.end(i, cell)
            print(f"sweep: interrupted; {run_dir} keeps every recorded request", file=sys.stderr)
            raise
        after = prometheus.scrape(metrics_url) if metrics_url else None
        cell.server = prometheus.server_stats(before, after, config.model_name)
        merge_cell(run_dir, cell, cell_dir)
        if cell.status != "done":
            problems.append(f"{cell.cell} {cell.status}" + (f": {cell.error}" if cell.error else ""))
        progress.end(i, cell)
        _write_state(run_dir, cells)
    _write_state(
        run_dir,
        cells,
        incomplete=bool(problems),
        incomplete_reason="; ".join(problems)[:2000] if problems else None,
        finished_utc=runs.utc_now().isoformat(timespec="seconds"),
    )
    return run_dir


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    return SweepConfig(
        host=args.host,
        batch_sizes=tuple(args.batch_sizes),
        encodings=tuple(args.encodings),
        users=args.users,
        arrival=args.arrival,
        rate_per_s=args.rate,
        duration_s=args.duration,
        requests=args.requests,
        warmup=args.warmup,
        processes=args.processes,
        model_name=args.model_name,
        model_version=args.model_version,
        signature_name=args.signature_name or "",
        images=str(args.images) if args.images else None,
        pool_size=args.pool_size,
        metrics_path=args.metrics_path,
        server_kind=args.server_kind,
    )


def run_sweep(args: argparse.Namespace, extra_meta: dict[str, Any] | None = None) -> int:
    if getattr(args, "docker", None) and extra_meta is None:
        from bench.docker.launcher import sweep_in_container  # starts the container, calls back here, stops it

        return sweep_in_container(args, run_sweep)
    if not args.host:
        raise ConfigError("--host URL is required (or --docker IMAGE to start a container for the sweep)")
    config = config_from_args(args)
    run_dir = run_sweep_config(config, args.out, extra_meta)
    run = runs.load_run(run_dir)
    print(f"run: {run_dir}")
    recorded = any(c.get("records") for c in run.cells)
    if args.report and recorded:
        from reports.report import build_report

        result = build_report(run_dir)
        print(f"report: {result.html_path}")
    if not recorded:
        raise BenchError(f"no request was recorded in {run_dir} (see {run_dir / 'locust.log'})")
    if run.incomplete:
        # Every recorded row is kept and reported; the exit status still says not all went well.
        raise BenchError(f"incomplete run {run_dir}: {run.incomplete_reason}")
    return 0
