"""One cell of a sweep (or one capacity probe): a headless Locust run, watched, then its records merged.

::

    locust -f locustfiles/predict.py --headless --host URL -u USERS -t DURATION
           --batch-sizes B --encodings E --cell bB-E --records RUN/cells/bB-E/records.csv ...

:func:`run_cell` starts it, stops it early at ``--requests`` rows, once its measurement is
stable (``--stability PCT``: bench.store.stability), when the target stops answering (a status
poll every 2 s) or on Ctrl-C, and fills a :class:`CellResult` with Locust's own counts, the load
generator's view of itself (its busiest process's CPU, event-loop lag, saturation flag, sends
owed at the stop) and, where the target serves Prometheus metrics, the server's deltas from the
first recorded request (warm-up excluded) to the end; :func:`merge_cell` appends its rows to the
run's requests.csv.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from bench import LOCUSTFILE, argtypes
from bench.api_names import PROMETHEUS_PATH
from bench.errors import DISK_FULL_EXIT_CODE, ConfigError, DiskFullError, ResultsError, ServerError
from bench.payloads.encodings import get_encoding
from bench.payloads.input_plan import InputOptions
from bench.ports import free_port
from bench.scenario.collector import VERSION_MISMATCH_EXIT_CODE
from bench.scenario.parent_death import PARENT_PID_ENV
from bench.store import runs
from bench.store.load_stats import read_load_stats
from bench.store.record_parts import cell_record_files
from bench.store.records import RecordWriter, RequestRecord, read_records
from bench.store.stability import RecordTail, is_stable, measure_windows
from bench.target import prometheus
from bench.target.client import TFServingClient
from bench.target.grpc_client import TFServingGrpcClient
from bench.target.replicas import parse_hosts, replica_name

POLL_S = 0.5
FIRST_ROW_POLL_S = 0.05
HEALTH_EVERY_S = 2.0
HEALTH_FAILS_TO_STOP = 2
STOP_GRACE_S = 20.0
# A cell where more than this share of its requests failed measured errors, not the model: "failed".
MAX_FAILED_SHARE = 0.02
# --requests N without --duration: the cell still ends after this long (seconds).
REQUESTS_TIME_CAP_S = 600.0
# Before a sweep with grpc-* encodings: how long its gRPC target may take to answer its status.
GRPC_READY_S = 10.0


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep; serialised into meta.json's ``config``."""

    host: str
    batch_sizes: tuple[int, ...]
    encodings: tuple[str, ...]
    wait_ready_s: float = 0.0  # --wait-ready: how long to wait for every replica to serve the model
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
    metrics_path: str = PROMETHEUS_PATH
    server_kind: str | None = None
    stability_pct: float | None = None  # --stability: stop once the last 3 windows agree within this %
    grpc_target: str | None = None  # --grpc-target HOST:PORT; None: --host's host on port 8500
    stability_window_s: float = 5.0
    stability_skip_s: float = 0.0  # left out before the first window (capacity probes' warm-up)
    locustfile: str = str(LOCUSTFILE)
    inputs: InputOptions = field(default_factory=InputOptions)  # how the signature's inputs are filled
    input_plan: str | None = None  # RUN/input_plan.json, written once the plans are resolved
    # A cell with more failed requests than this share is "failed"; None: errors are a result
    # (capacity probes judge them against the SLO).
    max_failed_share: float | None = MAX_FAILED_SHARE
    # --expect-workers N: every cell runs on N workers started elsewhere, which connect to
    # --master-bind-host:--master-bind-port (bench.commands.workers).
    expect_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_bind_port: int = 5557
    workers_wait_s: float = 300.0

    @property
    def cell_time_s(self) -> float:
        if self.duration_s is not None:
            return self.duration_s
        return REQUESTS_TIME_CAP_S if self.requests else 30.0

    @property
    def grpc_address(self) -> str:
        """Where the grpc-* encodings go: ``--grpc-target``, else ``--host``'s host on port 8500."""
        return self.grpc_target or argtypes.default_grpc_target(self.host.split(",")[0])  # replicas: the first's

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(get_encoding(name).protocol for name in self.encodings))

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
    # The generator's CPU, % of one core: its busiest process's mean over the cell (its highest
    # 5 s window in _max), and all its processes together (_total: 200 = two cores).
    client_cpu_pct: float | None = None
    client_cpu_pct_max: float | None = None
    client_cpu_total_pct: float | None = None
    loop_lag_ms_p99: float | None = None  # the busiest process's event-loop lag
    loop_lag_ms_max: float | None = None
    warmup_excluded: int | None = None
    saturated: bool | None = None  # the CPU monitor's flag (any process)
    unanswered: int | None = None  # open model: sends due before the stop that got no answer
    stopping_unix_s: float | None = None
    stable: bool | None = None  # --stability: did the last windows agree (None: not asked)
    windows: int | None = None  # --stability: complete measurement windows
    processes: int = 1
    server: dict[str, float] = field(default_factory=dict)
    saturated_workers: list[str] = field(default_factory=list)  # by name, from their own CPU monitors
    lost_workers: list[str] = field(default_factory=list)  # died before their last records arrived
    # --host URL1,URL2: each replica's own Prometheus deltas (``server`` is all of them together).
    server_by_replica: dict[str, dict[str, float]] = field(default_factory=dict)


def validate(config: SweepConfig) -> None:
    """ConfigError (one line, exit 2) for anything wrong before a single request is sent."""
    parse_hosts(config.host)
    if not config.batch_sizes or min(config.batch_sizes) <= 0:
        raise ConfigError("--batch-sizes needs positive integers, e.g. 1,4,16")
    for name in config.encodings:
        get_encoding(name)
    if config.arrival == "closed" and config.rate_per_s is not None:
        raise ConfigError("--rate sets an open-model rate: add --arrival poisson or --arrival constant")
    if config.arrival != "closed" and config.rate_per_s is None:
        raise ConfigError(f"--arrival {config.arrival} needs --rate REQ/S (total requests per second)")
    if not Path(config.locustfile).is_file():
        raise ConfigError(f"locustfile {config.locustfile} not found")
    if config.grpc_target is not None:
        try:
            argtypes.grpc_target(config.grpc_target)
        except Exception as exc:
            raise ConfigError(f"--grpc-target: {exc}") from None
    if config.expect_workers and config.processes > 1:
        raise ConfigError("--expect-workers runs every cell on remote workers: leave out --processes")


def target_client(config: SweepConfig) -> TFServingClient:
    """The client for the sweep's target model (``--model-version`` included); the first replica's."""
    return replica_clients(config)[0]


def replica_clients(config: SweepConfig) -> list[TFServingClient]:
    """One client per replica of ``--host URL1,URL2,...`` (bench.target.replicas)."""
    return [TFServingClient(h, config.model_name, config.model_version) for h in parse_hosts(config.host)]


def replica_metrics_urls(config: SweepConfig) -> dict[str, str]:
    """``{replica name: its Prometheus URL}``, in --host order."""
    return {replica_name(h): prometheus.metrics_url(h, config.metrics_path) for h in parse_hosts(config.host)}


def check_grpc_target(config: SweepConfig) -> str | None:
    """With a grpc-* encoding: the gRPC target must serve the model (ServerError, one line, if not).

    Returns the address the gRPC cells go to, or None when no encoding speaks gRPC.
    """
    if "grpc" not in config.protocols:
        return None
    with TFServingGrpcClient(config.grpc_address, config.model_name, config.model_version) as client:
        try:
            if client.available_version(client.status(GRPC_READY_S)) is None:
                raise ServerError(f"model '{config.model_name}' at {client.base_url} has no AVAILABLE version")
        except ServerError as exc:
            raise ServerError(f"{exc} (the grpc-* encodings go to --grpc-target)") from None
    return config.grpc_address


def locust_command(config: SweepConfig, cell: CellResult, cell_dir: Path) -> list[str]:
    """The headless Locust command line for one cell."""
    cmd = [
        sys.executable, "-m", "locust", "-f", config.locustfile, "--headless", "--host", config.host,
        "--users", str(config.users), "--spawn-rate", str(config.users),
        "--run-time", f"{math.ceil(config.cell_time_s)}s",
        "--stop-timeout", "10", "--json-file", str(cell_dir / "locust"), "--exit-code-on-error", "0",
        "--loglevel", "INFO", "--only-summary",
        "--batch-sizes", str(cell.batch), "--encodings", cell.encoding, "--cell", cell.cell,
        "--records", str(cell_dir / "records.csv"), "--warmup", str(config.warmup), "--arrival", config.arrival,
        "--model-name", config.model_name,
    ]  # fmt: skip
    if config.requests and config.arrival == "closed":
        # Each process stops sending at its share. An open model's sends follow their schedule to
        # the stop (a slot left unsent would read as owed): the poll below stops those cells.
        cmd += ["--max-requests", str(config.requests)]
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
    if config.input_plan:
        cmd += ["--input-plan", _plan_for_workers(config) if config.expect_workers else config.input_plan]
    if get_encoding(cell.encoding).protocol == "grpc":
        cmd += ["--grpc-target", config.grpc_address]
    if config.expect_workers:
        # Workers elsewhere: they share no disk with this machine, so the plan travels inline with
        # the options and records come back over Locust's messages. --keep-workers detaches them at
        # the end instead of quitting them: the next cell's master binds the same port.
        cmd += ["--master", "--expect-workers", str(config.expect_workers), "--keep-workers"]
        cmd += ["--expect-workers-max-wait", f"{config.workers_wait_s:g}"]
        cmd += ["--master-bind-host", config.master_bind_host, "--master-bind-port", str(config.master_bind_port)]
    elif config.processes > 1:
        # Locust's default master port (5557) would join parallel sweeps' workers to one master.
        # The forked workers connect to --master-port, the master listens on --master-bind-port.
        port = str(free_port())
        cmd += ["--processes", str(config.processes), "--master-port", port, "--master-bind-port", port]
        cmd += ["--master-bind-host", "127.0.0.1"]  # the workers are forked here: nobody else may join
    return cmd


def _count_rows(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1)
    except OSError:
        return 0


def _plan_for_workers(config: SweepConfig) -> str:
    assert config.input_plan is not None
    try:
        return json.dumps(json.loads(Path(config.input_plan).read_text(encoding="utf-8")), separators=(",", ":"))
    except (OSError, ValueError):
        return config.input_plan  # the Locust process says what is wrong with it


def _records_files(records: Path) -> list[Path]:
    """The cell's records file (the master appends every process's rows to it as they arrive)."""
    return [records] if records.is_file() else []


def _locust_counts(cell_dir: Path) -> tuple[int | None, int | None]:
    """(requests, failures) of the predict entries in Locust's final stats (``--json-file``)."""
    path = cell_dir / "locust.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    predict = [e for e in entries if str(e.get("name", "")).startswith("predict")]
    return sum(int(e.get("num_requests", 0)) for e in predict), sum(int(e.get("num_failures", 0)) for e in predict)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Ask Locust to stop (it writes its stats and closes records on SIGTERM/SIGINT), then insist.

    The signal goes to its whole process group (its own session: the master and any workers it
    forked), as a terminal's Ctrl-C would; whatever is left of the group after the master exits
    is killed, so no worker outlives its cell.
    """
    if proc.poll() is None:
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
    _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _start_locust(config: SweepConfig, cell: CellResult, cell_dir: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Locust in a session of its own, told to die with this process (bench.scenario.parent_death)."""
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    return subprocess.Popen(
        locust_command(config, cell, cell_dir), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def run_cell(
    config: SweepConfig,
    cell: CellResult,
    cell_dir: Path,
    log_file: Path,
    metrics_url: str | dict[str, str] | None = None,
) -> None:
    """Run one cell's Locust process to its end (or stop it early); fills ``cell`` in place.

    With ``metrics_url`` the target's Prometheus metrics are scraped when the first request is
    recorded (every user has finished its warm-up by then: all spawn at once and warm up side
    by side) and again at the end, so ``cell.server`` counts the measured requests only. Given
    ``{replica: URL}`` (several replicas), each is scraped on its own (``cell.server_by_replica``)
    and ``cell.server`` adds them up.
    """
    cell_dir.mkdir(parents=True, exist_ok=True)
    clients = replica_clients(config)
    urls = {"": metrics_url} if isinstance(metrics_url, str) else dict(metrics_url or {})
    records = cell_dir / "records.csv"
    start = time.monotonic()
    cell.status = "running"
    cell.processes = config.processes
    with log_file.open("ab") as log:
        proc = _start_locust(config, cell, cell_dir, log)
    fails, next_health = 0, start + HEALTH_EVERY_S
    cpu_first: tuple[float, float] | None = None
    cpu_last: tuple[float, float] | None = None
    before: dict[str, prometheus.Samples | None] = {}
    tail = RecordTail() if config.stability_pct else None
    try:
        while proc.poll() is None:
            # Poll fast until the first row (the Prometheus baseline), then every POLL_S.
            time.sleep(POLL_S if cpu_first else FIRST_ROW_POLL_S)
            now = time.monotonic()
            cpu_s = _tree_cpu_s(proc.pid)
            rows = {f: _count_rows(f) for f in _records_files(records)}
            files = [f for f, n in rows.items() if n > 0]
            if cpu_s is not None and files:  # load has started: rows are arriving
                if cpu_first is None and urls:
                    # A replica that has answered nothing yet exposes no series: all its counts are 0.
                    before = {name: prometheus.scrape(url) or {} for name, url in urls.items()}
                cpu_last = (now, cpu_s)
                cpu_first = cpu_first or cpu_last
            if config.requests and sum(rows.values()) >= config.requests:
                _stop(proc)
                break
            if tail is not None and files and _stable(config, cell, tail, files):
                _stop(proc)
                break
            if now >= next_health:
                next_health = now + HEALTH_EVERY_S
                fails = 0 if all(c.is_serving() for c in clients) else fails + 1
                if fails >= HEALTH_FAILS_TO_STOP:
                    _stop(proc)
                    cell.status = "server_down"
                    cell.error = f"{config.host} stopped answering during the cell"
                    break
    except KeyboardInterrupt:
        # SIGTERM, not SIGINT: a sweep started in the background (`&`, nohup, some CI runners)
        # passes on an ignored SIGINT, and its Locust would then run the cell to its end.
        _stop(proc)
        cell.status = "interrupted"
        raise
    except BaseException:
        _stop(proc)  # whatever stops this loop stops the load with it
        raise
    finally:
        cell.wall_s = round(time.monotonic() - start, 3)
        if cpu_first and cpu_last and cpu_last[0] - cpu_first[0] > 0.5:
            cell.client_cpu_total_pct = round(100.0 * (cpu_last[1] - cpu_first[1]) / (cpu_last[0] - cpu_first[0]), 1)
        cell.locust_requests, cell.locust_failures = _locust_counts(cell_dir)
        _load_side_car(cell, records)
        if urls:
            after = {name: prometheus.scrape(url) for name, url in urls.items()}
            _server_deltas(config, cell, before, after)
        if tail is not None and cell.stable is None:
            cell.stable = False
            _stable(config, cell, tail, _records_files(records))  # the windows it got to
    if proc.returncode == VERSION_MISMATCH_EXIT_CODE:
        cell.status = "failed"
        cell.error = _refusal(log_file) or "a worker runs another tfsbench version"
        raise ConfigError(cell.error)
    if proc.returncode == DISK_FULL_EXIT_CODE:
        cell.status = "failed"
        cell.error = f"no space left on {cell_dir} for the records"
        raise DiskFullError(cell.error)
    if cell.status == "running":
        if proc.returncode == 0:
            cell.status = "done"
            failed = failed_requests(_records_files(records), config.max_failed_share)
            if failed:
                cell.status, cell.error = "failed", failed
            if cell.lost_workers:
                cell.status = "failed"
                cell.error = (
                    f"worker {', '.join(cell.lost_workers)} stopped mid-cell; its unsent rows are lost, "
                    "every row received is kept"
                )
        else:
            cell.status = "failed"
            cell.error = f"locust exited with code {proc.returncode}: {_tail(log_file)}"


def _server_deltas(
    config: SweepConfig,
    cell: CellResult,
    before: dict[str, prometheus.Samples | None],
    after: dict[str, prometheus.Samples | None],
) -> None:
    """``cell.server`` (all replicas: their counters and buckets add up) and, with several, each's own."""
    model = config.model_name
    cell.server = prometheus.server_stats(prometheus.add(before.values()), prometheus.add(after.values()), model)
    if len(after) > 1:
        cell.server_by_replica = {name: prometheus.server_stats(before.get(name), after[name], model) for name in after}


def failed_requests(files: list[Path], max_share: float | None) -> str | None:
    """Why a finished cell counts as failed (over ``max_share`` of its requests not 200), or None."""
    if not files or max_share is None:
        return None
    frame = read_records(files)
    if frame.empty:
        return None
    bad = frame[frame["status"] != 200]
    if len(bad) <= max_share * len(frame):
        return None
    errors = bad["error"].fillna("").astype(str)
    common = errors[errors != ""].mode()
    first = f": {common.iloc[0][:300]}" if len(common) else ""
    return f"{len(bad)} of {len(frame)} requests failed (more than {max_share:.0%}){first}"


def _tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of Locust and its forked workers so far."""
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except psutil.Error:
        return None


def _stable(config: SweepConfig, cell: CellResult, tail: RecordTail, files: list[Path]) -> bool:
    """Read the rows written since the last poll; True once the last windows agree (sets ``cell``)."""
    frame = tail.read(files)
    if frame.empty or config.stability_pct is None:
        return False
    origin = float(frame["t_start"].min()) + config.stability_skip_s
    windows = measure_windows(frame, origin, config.stability_window_s, time.time())
    cell.windows = len(windows)
    if is_stable(windows, config.stability_pct):
        cell.stable = True
    return bool(cell.stable)


def _load_side_car(cell: CellResult, records: Path) -> None:
    """Warm-up count and the generator's view of itself from the Locust process's ``records.load.json``.

    With several processes it holds the worst process's figures (bench.store.load_stats), never
    a mean over processes: one saturated process spoils its share of the rows.
    """
    try:
        stats = read_load_stats(records)
    except ResultsError:
        return
    if stats is None:
        return
    cell.warmup_excluded = stats.warmup_by_cell.get(cell.cell, stats.warmup_excluded)
    cell.client_cpu_pct = round(stats.client_cpu_pct_mean, 1)
    cell.client_cpu_pct_max = round(stats.client_cpu_pct_max, 1)
    cell.loop_lag_ms_p99 = round(stats.loop_lag_ms_p99, 2)
    cell.loop_lag_ms_max = round(stats.loop_lag_ms_max, 2)
    cell.saturated = stats.saturated
    cell.unanswered = stats.unanswered(cell.cell) if stats.unanswered_by_cell else 0
    cell.stopping_unix_s = stats.stopping_unix_s or None
    cell.saturated_workers = list(stats.saturated_workers)
    cell.lost_workers = list(stats.lost_workers)
    if stats.by_worker:
        cell.processes = len(stats.by_worker)


def _refusal(log_file: Path) -> str | None:
    """The master's one line refusing a worker of another version (bench.scenario.collector)."""
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = [line for line in lines if line.startswith("tfsbench: worker ") and " runs tfsbench " in line]
    return found[-1].removeprefix("tfsbench: ") if found else None


def _tail(log_file: Path, lines: int = 3) -> str:
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(t.strip() for t in text[-lines:])[-400:]


def merge_cell(run_dir: Path, cell: CellResult, cell_dir: Path) -> None:
    """Append the cell's rows to requests.csv, then drop its records file."""
    files = cell_record_files(cell_dir)
    if not files:
        cell.merged = True
        return
    frame = read_records(files).sort_values("t_start", kind="stable")
    target = run_dir / runs.REQUESTS_FILE
    before = target.stat().st_size if target.is_file() else 0
    try:
        with RecordWriter(target) as writer:
            for row in frame.itertuples(index=False):
                writer.write(RequestRecord(*row))
    except ResultsError:
        # All of the cell's rows or none in requests.csv: they stay in the cell's own file,
        # which reports read while the cell is not marked merged.
        with contextlib.suppress(OSError):
            os.truncate(target, before)
        raise
    cell.records = len(frame)
    cell.merged = True
    for f in files:
        f.unlink(missing_ok=True)
