"""The logic behind ``locustfiles/predict.py``: payloads, the predict request, records, Locust events.

The locustfile stays thin (a FastHttpUser, its task and a few listeners); everything it calls
lives here so it can be read and tested without Locust's gevent patching. The options are in
bench/scenario_options.py, the response check in bench/predict_response.py and the worker
records files in bench/record_parts.py. This module never
imports Locust or gevent at import time: only the functions that run inside a Locust process
do, lazily.

Per process (local runner, or each worker with ``--processes N`` / ``--worker``), one
:class:`Scenario` is built at test start from the options (the master's values, which Locust
ships to its workers with each spawn message): pre-encoded payload pools for every (batch size,
encoding) cell, the records writer, and a CPU monitor of the load generator itself.

Records: ``--records PATH`` gets one row per request (bench.store.records). A worker process writes
``PATH`` with its process id inserted (``requests.4711.csv``); the master merges those files
into ``PATH`` when it quits, once each worker has marked its file finished, so nothing is lost.
Workers on other machines keep their files; merge them with ``python -m bench.scenario.events merge PATH``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, ResultsError
from bench.scenario.options import ScenarioConfig, Step, config_from_options
from bench.scenario.schedule import Arrival, UserSchedule, WallClock, global_user_index, send_lag_ms
from bench.store.record_parts import merge_parts, records_path_for
from bench.store.records import LoadStats, RecordWriter, RequestRecord, write_load_stats
from bench.target.response_check import check_predict_response

if TYPE_CHECKING:
    import numpy as np

    from bench.payloads.encodings import Encoding
    from bench.payloads.pool import PayloadPool

log = logging.getLogger("tfsbench.load")

SCENARIO_ATTR = "tfsbench_scenario"  # where the process's Scenario hangs on Locust's Environment
RECORD_KEY = "tfsbench"  # the request context key that carries a record's fields
CPU_SAMPLE_S = 1.0
CPU_WINDOW_SAMPLES = 5  # saturation is judged on the mean over this many samples (5 s)
MERGE_WAIT_S = 15.0


# --------------------------------------------------------------------------------------------
# the per-process scenario


class CpuMonitor:
    """Samples this process's CPU use and flags saturation (mean over a window above a threshold).

    100 % is one core: a Locust process is single-threaded, so near 100 % it measures itself.
    """

    def __init__(self, threshold_pct: float, window: int = CPU_WINDOW_SAMPLES) -> None:
        import psutil  # a Locust dependency

        self.threshold_pct = threshold_pct
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # first call primes the counter
        self._window: deque[float] = deque(maxlen=window)
        self.samples: list[float] = []
        self.max_window_pct = 0.0
        self.saturated = False

    def sample(self) -> bool:
        """Take one sample; True exactly when this sample makes the process count as saturated."""
        value = self._process.cpu_percent(None)
        self.samples.append(value)
        self._window.append(value)
        if len(self._window) == self._window.maxlen:
            mean = sum(self._window) / len(self._window)
            self.max_window_pct = max(self.max_window_pct, mean)
            if mean > self.threshold_pct and not self.saturated:
                self.saturated = True
                return True
        return False

    def finish(self) -> bool:
        """At the end of a run shorter than one window, judge the samples there are.

        True exactly when that makes the process count as saturated.
        """
        if self.max_window_pct or len(self.samples) < 2 or self.saturated:
            return False
        self.max_window_pct = self.mean_pct
        if self.max_window_pct > self.threshold_pct:
            self.saturated = True
            return True
        return False

    @property
    def mean_pct(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0


@dataclass
class CellPayloads:
    """Pre-encoded bodies for one (batch, encoding), or raw images to encode inline."""

    batch: int
    encoding: Encoding
    pool: PayloadPool | None
    images: list[np.ndarray]
    input_name: str | None
    next_index: int = 0

    def body(self, inline: bool) -> tuple[bytes, float, dict[str, str]]:
        """``(body, encode_us, headers)``; inline encodes now (the caller's timer is running)."""
        if not inline:
            assert self.pool is not None
            payload = self.pool.next()
            return payload.body, payload.encode_us, payload.headers
        images = self.images[self.next_index % len(self.images)]
        self.next_index += 1
        start = time.perf_counter()
        body = self.encoding.encode(images, self.input_name)
        return body, (time.perf_counter() - start) * 1e6, self.encoding.headers()


class Scenario:
    """Everything one load-generating process shares between its users."""

    def __init__(
        self,
        config: ScenarioConfig,
        *,
        distributed: bool,
        users_total: int,
        t0_s: float,
        worker_index: int = 0,
        workers: int = 1,
    ) -> None:
        self.config = config
        self.users_total = max(users_total, 1)
        self.t0_s = t0_s  # unix seconds of the test start (the master's clock), for shape steps
        # This process's place among the load-generating processes: constant arrivals
        # interleave the users of every process on one slot grid (see user_index).
        self.workers = max(workers, 1)
        self.worker_index = max(worker_index, 0)
        self.wall = WallClock()
        self.epoch_perf_s = t0_s - self.wall.offset_s  # the shared start on this process's perf_counter
        self.warmup_by_cell: dict[str, int] = {}
        self.warnings: list[str] = []
        self.cells = self._build_payloads()
        self.records_path = records_path_for(config.records, distributed) if config.records else None
        self.writer = RecordWriter(self.records_path) if self.records_path else None
        self.cpu = CpuMonitor(config.cpu_warn_pct)
        self.user_seq = 0

    def _build_payloads(self) -> dict[tuple[int, str], CellPayloads]:
        from bench.payloads.encodings import get_encoding
        from bench.payloads.images import image_source
        from bench.payloads.pool import PayloadPool

        source = image_source(self.config.images_dir, 128, 128)
        cells = {}
        for name in self.config.encodings:
            encoding = get_encoding(name)
            if self.config.signature_name:
                encoding = encoding.with_signature(self.config.signature_name)
            input_name = None  # the encoding's own input key: examples, or image_bytes for b64-*
            for batch in self.config.batch_sizes:
                if self.config.encode_inline:
                    images = [source.batch(batch, i) for i in range(self.config.pool_size)]
                    cells[(batch, name)] = CellPayloads(batch, encoding, None, images, input_name)
                else:
                    pool = PayloadPool.build(encoding, source, batch, self.config.pool_size, input_name=input_name)
                    cells[(batch, name)] = CellPayloads(batch, encoding, pool, [], input_name)
        return cells

    def step(self, now_unix_s: float | None = None) -> Step | None:
        """The current ``--shape-steps`` step (from the test start), or None without steps."""
        if not self.config.steps:
            return None
        elapsed = (time.time() if now_unix_s is None else now_unix_s) - self.t0_s
        index = min(max(int(elapsed // self.config.step_time_s), 0), len(self.config.steps) - 1)
        return self.config.steps[index]

    def arrival_for(self, step: Step | None) -> Arrival:
        if step is not None and step.rate_per_s is not None:
            return replace(self.config.arrival, rate_per_s=step.rate_per_s)
        return self.config.arrival

    def batches_for(self, step: Step | None) -> tuple[tuple[int, int], ...]:
        return ((step.batch, 1),) if step is not None and step.batch is not None else self.config.batches

    def user_index(self, local_index: int) -> int:
        """A user's index among all users of all processes (its slot on the constant-rate grid)."""
        return global_user_index(local_index, self.worker_index, self.workers)

    def cell_for(self, step: Step | None) -> str:
        return step.label(self.config.cell) if step is not None else self.config.cell

    def record(self, record: RequestRecord) -> None:
        if self.writer is not None and not self.writer.closed:
            self.writer.write(record)

    def load_stats(self, finished: bool) -> LoadStats:
        return LoadStats(
            processes=1,
            warmup_by_cell=dict(self.warmup_by_cell),
            client_cpu_pct_max=self.cpu.max_window_pct,
            client_cpu_pct_mean=self.cpu.mean_pct,
            saturated=self.cpu.saturated,
            warnings=tuple(self.warnings),
            finished=finished,
        )

    def save_load_stats(self, finished: bool) -> None:
        if self.records_path is not None:
            write_load_stats(self.records_path, self.load_stats(finished))

    def on_cpu_sample(self, final: bool = False) -> None:
        if self.cpu.finish() if final else self.cpu.sample():
            window_s = min(len(self.cpu.samples), CPU_WINDOW_SAMPLES) * CPU_SAMPLE_S
            message = (
                f"tfsbench: load generator CPU saturated (pid {os.getpid()}: "
                f"{self.cpu.max_window_pct:.0f}% of a core over {window_s:g} s): "
                "results measure the client, not the server; use more --processes or fewer users"
            )
            self.warnings.append(message)
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
            self.save_load_stats(finished=False)

    def close(self) -> None:
        self.save_load_stats(finished=True)
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------------------------
# users: state per simulated user, the task, warm-up


@dataclass
class UserState:
    rng: random.Random
    index: int = 0  # this user's spawn order within its process (0, 1, ...)
    schedule: UserSchedule | None = None
    schedule_key: tuple[Any, ...] = ()


def new_user_state(scenario: Scenario) -> UserState:
    scenario.user_seq += 1
    return UserState(
        rng=random.Random(hash((os.getpid(), scenario.user_seq, time.time_ns()))), index=scenario.user_seq - 1
    )


def _choose(scenario: Scenario, state: UserState, step: Step | None) -> CellPayloads:
    batches = scenario.batches_for(step)
    if len(batches) == 1:
        batch = batches[0][0]
    else:
        batch = state.rng.choices([b for b, _ in batches], weights=[w for _, w in batches])[0]
    encodings = scenario.config.encodings
    encoding = encodings[0] if len(encodings) == 1 else state.rng.choice(encodings)
    return scenario.cells[(batch, encoding)]


def _intended_send(
    scenario: Scenario, state: UserState, step: Step | None, sleep: Callable[[float], None]
) -> float | None:
    """Sleep until this user's next intended send (open model) and return it; None when closed."""
    arrival = scenario.arrival_for(step)
    if not arrival.is_open:
        return None
    key = (arrival, scenario.users_total)
    if state.schedule is None or state.schedule_key != key:
        state.schedule = UserSchedule(
            arrival,
            scenario.users_total,
            seed=state.rng.getrandbits(64),
            user_index=scenario.user_index(state.index),
            epoch_s=scenario.epoch_perf_s,
        )
        state.schedule_key = key
    intended = state.schedule.next_send()
    wait = state.schedule.wait_s(intended)
    if wait > 0:
        sleep(wait)
    return intended


def stats_name(batch: int, encoding: str) -> str:
    """Locust's stats entry for a cell: ``predict b=16 row-orjson``."""
    return f"predict b={batch} {encoding}"


def predict_once(client: Any, scenario: Scenario, state: UserState, sleep: Callable[[float], None]) -> None:
    """One predict request through Locust's FastHttpSession ``client``, checked and recorded.

    Locust's response time is corrected to count from the intended send time (open model) and
    to include inline encoding; its "size" column shows the request body size, so the web UI
    compares cells by payload bytes. The record itself is written by :func:`on_request`.
    """
    step = scenario.step()
    cell = _choose(scenario, state, step)
    intended = _intended_send(scenario, state, step, sleep)
    started = time.perf_counter()
    body, encode_us, headers = cell.body(scenario.config.encode_inline)
    origin = intended if intended is not None else started
    lag_ms = send_lag_ms(origin, started)
    extra_ms = lag_ms + (encode_us / 1000.0 if scenario.config.encode_inline else 0.0)
    info = {
        "t_start": scenario.wall.unix_s(origin),
        "batch": cell.batch,
        "encoding": cell.encoding.name,
        "payload_bytes": len(body),
        "encode_us": encode_us,
        "cell": scenario.cell_for(step),
        "send_lag_ms": lag_ms,
    }
    with client.request(
        "POST",
        scenario.config.predict_path,
        name=stats_name(cell.batch, cell.encoding.name),
        data=body,
        headers=headers,
        catch_response=True,
        context={RECORD_KEY: info},
    ) as response:
        meta = response.request_meta
        content = _content(response)
        info["status"] = int(response.status_code or 0)
        info["response_bytes"] = len(content)
        error = getattr(response, "error", None)
        if info["status"] == 0 or (error is not None and not content):
            response.failure(f"no response: {error}")
        else:
            message = check_predict_response(info["status"], content, cell.batch)
            if message:
                response.failure(message)
            else:
                response.success()
        meta["response_time"] = meta["response_time"] + extra_ms
        meta["response_length"] = len(body)


def _content(response: Any) -> bytes:
    try:
        return bytes(response.content or b"")
    except Exception:  # a broken connection surfaces here; the request already failed
        return b""


def on_request(scenario: Scenario | None, response_time: float, exception: Any, context: Mapping[str, Any]) -> None:
    """Locust ``request`` listener body: turn one of our requests into a record row."""
    info = context.get(RECORD_KEY) if context else None
    if scenario is None or info is None:
        return
    error = "" if exception is None else _one_line(str(exception))
    scenario.record(
        RequestRecord(
            t_start=info["t_start"],
            latency_ms=float(response_time),
            status=info.get("status", 0),
            batch=info["batch"],
            encoding=info["encoding"],
            payload_bytes=info["payload_bytes"],
            encode_us=info["encode_us"],
            response_bytes=info.get("response_bytes", 0),
            error=error,
            cell=info["cell"],
            send_lag_ms=info["send_lag_ms"],
        )
    )


def _one_line(text: str) -> str:
    # Locust wraps failure messages ("CatchResponseError('...')" in some versions); keep the text.
    return " ".join(text.split())[:500]


def warm_up(base_url: str, scenario: Scenario, state: UserState) -> int:
    """Send ``--warmup`` requests outside Locust's stats and the records; returns how many succeeded."""
    if scenario.config.warmup <= 0:
        return 0
    from locust.contrib.fasthttp import FastHttpSession  # only inside Locust
    from locust.event import EventHook

    session = FastHttpSession(base_url, request_event=EventHook(), user=None)
    cell_label = scenario.cell_for(scenario.step())
    ok = 0
    for _ in range(scenario.config.warmup):
        cell = _choose(scenario, state, None)
        body, _, headers = cell.body(False) if cell.pool is not None else cell.body(True)
        response = session.request("POST", scenario.config.predict_path, data=body, headers=headers)
        scenario.warmup_by_cell[cell_label] = scenario.warmup_by_cell.get(cell_label, 0) + 1
        if response.status_code == 200:
            ok += 1
    if ok < scenario.config.warmup:
        log.warning("%d of %d warm-up requests failed", scenario.config.warmup - ok, scenario.config.warmup)
    return ok


# --------------------------------------------------------------------------------------------
# Locust event wiring (called from the locustfile's listeners)


def is_worker(runner: Any) -> bool:
    return type(runner).__name__ == "WorkerRunner"


def is_master(runner: Any) -> bool:
    return type(runner).__name__ == "MasterRunner"


def on_init(environment: Any) -> None:
    """Validate options early (one line and exit 2 on bad input), and remember the start time."""
    options = environment.parsed_options
    if options is None:
        return
    environment.tfsbench_started_s = time.time()
    if is_worker(environment.runner):
        return  # a worker runs with the master's options, which arrive with its spawn messages
    try:
        config = config_from_options(options)
    except BenchError as exc:
        sys.stderr.write(f"tfsbench: {exc}\n")
        raise SystemExit(exc.exit_code) from None
    if not config.steps:
        environment.shape_class = None  # the step shape runs only when --shape-steps asks for it


def on_test_start(environment: Any) -> None:
    """Master/local: publish total users and start time; local/worker: build the Scenario."""
    runner, options = environment.runner, environment.parsed_options
    if not is_worker(runner):
        # Custom option values travel to workers with every spawn message: total users (each
        # user's share of --rate) and the start time (shape steps advance on every worker alike).
        options.tfsbench_users = int(runner.target_user_count or getattr(options, "num_users", 1) or 1)
        options.tfsbench_t0 = time.time()
        options.tfsbench_workers = int(getattr(runner, "worker_count", 1) or 1) if is_master(runner) else 1
    if is_master(runner):
        return
    close_scenario(environment)
    try:
        config = config_from_options(options)
        scenario = Scenario(
            config,
            distributed=is_worker(runner),
            users_total=int(getattr(options, "tfsbench_users", 0) or runner.target_user_count or 1),
            t0_s=float(getattr(options, "tfsbench_t0", 0.0) or time.time()),
            worker_index=int(getattr(runner, "worker_index", 0) or 0) if is_worker(runner) else 0,
            workers=int(getattr(options, "tfsbench_workers", 1) or 1) if is_worker(runner) else 1,
        )
    except (BenchError, ResultsError) as exc:
        log.error("tfsbench: %s", exc)
        sys.stderr.write(f"tfsbench: {exc}\n")
        setattr(environment, SCENARIO_ATTR, None)
        return
    setattr(environment, SCENARIO_ATTR, scenario)
    log.info(
        "tfsbench: %s, cells %s, %s",
        config.arrival.describe(),
        ", ".join(stats_name(b, e) for b, e in scenario.cells),
        f"records -> {scenario.records_path}" if scenario.records_path else "no records",
    )
    _start_cpu_monitor(environment, scenario)


def _start_cpu_monitor(environment: Any, scenario: Scenario) -> None:
    import gevent  # only inside Locust

    def loop() -> None:
        while getattr(environment, SCENARIO_ATTR, None) is scenario:
            gevent.sleep(CPU_SAMPLE_S)
            scenario.on_cpu_sample()

    gevent.spawn(loop)


def close_scenario(environment: Any) -> None:
    scenario = getattr(environment, SCENARIO_ATTR, None)
    if scenario is not None:
        setattr(environment, SCENARIO_ATTR, None)
        scenario.close()


def on_test_stop(environment: Any) -> None:
    scenario = getattr(environment, SCENARIO_ATTR, None)
    if scenario is not None:
        scenario.on_cpu_sample(final=True)
        # A worker's file is finished only when it closes: after its final stats went to the
        # master, so the master never merges a part whose requests it has not counted yet.
        scenario.save_load_stats(finished=not is_worker(environment.runner))


def stop_users(environment: Any, wait_s: float = MERGE_WAIT_S) -> None:
    """Stop this process's users the way Locust's own stop does, if they still run.

    On SIGTERM or Ctrl-C Locust fires ``quitting`` while users still run and stops them only
    afterwards: with ``--stop-timeout`` the requests in flight then complete and Locust counts
    them. Stopping here first (``--stop-timeout`` applies: finish or be killed) lets those
    requests reach the records while the writer is still open, so rows equal Locust's count.
    A killed user's request fires no request event, so it is neither counted nor recorded.
    """
    import gevent
    from locust.runners import STATE_CLEANUP, STATE_RUNNING, STATE_SPAWNING, STATE_STOPPING

    runner = environment.runner
    if runner is None or is_master(runner):
        return
    if runner.state in (STATE_RUNNING, STATE_SPAWNING):
        runner.stop()
        if is_worker(runner):
            # Interrupted directly (Ctrl-C reaches every process of the group): send the final
            # stats now, before Locust's own quitting listener tells the master this worker quit.
            try:
                runner._send_stats()
            except Exception as exc:  # the master may be gone already; the records are kept anyway
                log.warning("tfsbench: final stats not sent to the master: %s", exc)
    deadline = time.monotonic() + wait_s
    while runner.state in (STATE_CLEANUP, STATE_STOPPING) and time.monotonic() < deadline:
        gevent.sleep(0.05)  # another greenlet is stopping the users; let it finish


def quit_workers(environment: Any, wait_s: float = MERGE_WAIT_S) -> None:
    """Master: tell the workers to quit, and wait until each has reported back.

    A worker answering ``quit`` stops its users (in-flight requests complete), sends its final
    stats, closes its records and then tells the master it quit, in that order on one
    connection; so once no worker is left, the master has counted every recorded request.
    Locust's own quit waits only 0.5 s for the final stats. The wait ends early when the
    master's message loop is gone (after a --run-time stop, Locust's quit already ran).
    """
    import gevent
    from locust.rpc import Message

    runner = environment.runner
    clients = list(runner.clients.all)
    for client in clients:
        runner.server.send_to_client(Message("quit", None, client.id))
    deadline = time.monotonic() + wait_s
    while clients and runner.clients.all and len(runner.greenlet) and time.monotonic() < deadline:
        gevent.sleep(0.1)


def on_quitting(environment: Any) -> None:
    """Stop users still running, close this process's records; the master merges its workers' files.

    Registered from the locustfile's init listener, so it runs before the runner's own
    ``quitting`` listener (Locust fires ``quitting`` in reverse order of registration).
    """
    stop_users(environment)
    close_scenario(environment)
    if not is_master(environment.runner):
        return
    quit_workers(environment)
    try:
        config = config_from_options(environment.parsed_options)
    except BenchError:
        return
    if config.records is None:
        return
    import gevent

    rows = merge_parts(
        config.records,
        since_s=getattr(environment, "tfsbench_started_s", 0.0) - 1.0,
        wait_s=MERGE_WAIT_S,
        sleep=gevent.sleep,
    )
    if rows:
        log.info("tfsbench: merged worker records into %s (%d rows)", config.records, rows)


def shape_tick(shape: Any) -> tuple[int, float] | None:
    """``LoadTestShape.tick`` for ``--shape-steps``: hold -u users for each step, then stop."""
    options = shape.runner.environment.parsed_options
    config = config_from_options(options)
    if shape.get_run_time() >= len(config.steps) * config.step_time_s:
        return None
    users = int(getattr(options, "num_users", None) or 1)
    return users, float(getattr(options, "spawn_rate", None) or users)


# --------------------------------------------------------------------------------------------
# python -m bench.scenario.events merge PATH


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenario.events",
        description="Merge worker records files (PATH with a process id inserted) into PATH.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge requests.<pid>.csv files into requests.csv")
    merge.add_argument("path", type=Path, metavar="PATH", help="the --records path, e.g. runs/x/requests.csv")
    merge.add_argument("--force", action="store_true", help="also merge files not marked finished (killed workers)")
    args = parser.parse_args(argv)
    try:
        rows = merge_parts(args.path, force=args.force)
    except BenchError as exc:
        sys.stderr.write(f"tfsbench: {exc}\n")
        return exc.exit_code
    print(f"{args.path}: merged {rows} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
