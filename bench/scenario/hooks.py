"""Locust's events wired to the scenario: options checked at init, the per-process Scenario, clean stops.

The locustfile (``locustfiles/predict.py``) registers these listeners and nothing else. Records:
``--records PATH`` gets one row per request (bench.store.records). A process on its own writes
``PATH``; a worker (``--processes N``, or ``--worker`` on any machine) writes no file: its rows
travel to the master over Locust's messages (bench.scenario.relay), and the master appends them
to ``PATH`` in its own cwd and, at the stop, waits for every worker's last batch
(bench.scenario.collector).

Locust and gevent are imported inside the functions that run in a Locust process only: importing
Locust patches the process with gevent, which the rest of the suite must not get.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import signal
import sys
import time
from typing import Any

from bench.errors import DISK_FULL_EXIT_CODE, BenchError, DiskFullError, ResultsError
from bench.payloads import grpc_bodies
from bench.scenario import collector, relay
from bench.scenario.cpu_monitor import CPU_SAMPLE_S
from bench.scenario.loop_lag import LOOP_TICK_S
from bench.scenario.options import config_from_options
from bench.scenario.parent_death import PARENT_PID_ENV, die_with_parent
from bench.scenario.predict_user import stats_name
from bench.scenario.process import Scenario

log = logging.getLogger("tfsbench.load")

SCENARIO_ATTR = "tfsbench_scenario"  # where the process's Scenario hangs on Locust's Environment
STOP_WAIT_S = 15.0
# The calling thread's counters where the OS has them (Linux), else the process's.
_RUSAGE = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


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
    die_with_parent(forked_worker=is_worker(environment.runner))
    if is_worker(environment.runner):
        _load_grpc_protos(options)
        # A worker runs with the master's options, which arrive with its spawn messages.
        relay.register_worker(environment, lambda: stop_worker(environment), lambda: _send_late(environment))
        return
    try:
        config = config_from_options(options)
    except BenchError as exc:
        sys.stderr.write(f"tfsbench: {exc}\n")
        raise SystemExit(exc.exit_code) from None
    _load_grpc_protos(options)
    if is_master(environment.runner):
        collector.register_master(environment, config.records, config.keep_workers)
        register_sends_done(environment)
    if not config.steps:
        environment.shape_class = None  # the step shape runs only when --shape-steps asks for it


def _load_grpc_protos(options: Any) -> None:
    """With grpc-* encodings, load the protos now, before ``--run-time`` starts counting, instead of
    inside the test start that builds the payload pools; without TensorFlow, which a load
    generator never runs (``bench.payloads.grpc_bodies``)."""
    try:
        protocols = config_from_options(options).protocols
    except BenchError:
        return  # reported where the options are checked
    if "grpc" in protocols:
        grpc_bodies.load_protos_without_tensorflow()


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
        try:
            config_from_options(options)
        except BenchError as exc:
            show_bad_options(environment, exc)
        sink = getattr(environment, collector.COLLECTOR_ATTR, None)
        if sink is not None:
            sink.begin([c.id for c in runner.clients.all])
        return
    close_scenario(environment, send_late=False)
    try:
        config = config_from_options(options)
        # The master's start time on this worker's clock (its ping told how far ahead this clock is).
        ahead_s = float(getattr(environment, "tfsbench_clock_ahead_s", 0.0)) if is_worker(runner) else 0.0
        scenario = Scenario(
            config,
            users_total=int(getattr(options, "tfsbench_users", 0) or runner.target_user_count or 1),
            t0_s=float(getattr(options, "tfsbench_t0", 0.0) or time.time()) + ahead_s,
            worker_index=int(getattr(runner, "worker_index", 0) or 0) if is_worker(runner) else 0,
            workers=int(getattr(options, "tfsbench_workers", 1) or 1) if is_worker(runner) else 1,
            relay=_worker_relay(environment, config) if is_worker(runner) else None,
        )
    except (BenchError, ResultsError) as exc:
        setattr(environment, SCENARIO_ATTR, None)
        show_bad_options(environment, exc)
        return
    setattr(environment, SCENARIO_ATTR, scenario)
    scenario.on_write_failure = lambda exc: stop_on_write_failure(environment, exc)
    log.info(
        "tfsbench: %s, cells %s, %s",
        config.arrival.describe(),
        ", ".join(stats_name(b, e) for b, e in scenario.cells),
        _records_text(scenario),
    )
    # Everything imported and built so far (Locust, numpy, pandas, the payload pools) lives as
    # long as the process: out of the collector's generations, a full collection during the run
    # scans only what the run allocates, instead of stalling every user for tens of ms.
    gc.collect()
    gc.freeze()
    _start_cpu_monitor(environment, scenario)


def _worker_relay(environment: Any, config: Any) -> relay.RecordRelay:
    runner = environment.runner

    def send(data: dict[str, Any]) -> None:
        runner.send_message(relay.RECORDS_MSG, data)

    return relay.RecordRelay(send, relay.process_name(), config.records_batch_rows, config.records_batch_s)


def _records_text(scenario: Scenario) -> str:
    if scenario.relay is not None:
        return f"records -> the master, {scenario.relay.batch_rows} rows or {scenario.relay.batch_s:g} s per message"
    return f"records -> {scenario.records_path}" if scenario.records_path else "no records"


def stop_worker(environment: Any) -> None:
    """The master's ``tfsbench_stop``: stop the users as Locust's stop does, staying connected.

    The final stats and then the final batch of records go out from ``on_test_stop``; the worker
    is ready for the next test (a master after a detach sends a new spawn).
    """
    runner = environment.runner
    runner.stop()
    runner.worker_state = "ready"  # Locust's STATE_INIT: the next spawn starts a new test


def stop_on_write_failure(environment: Any, exc: ResultsError) -> None:
    """Records cannot be written (disk full): end this Locust process, saying why in its exit code.

    Through Locust's own SIGTERM path, so its stats are written and the records closed whole. A
    worker forked by ``--processes`` for a sweep stops its master too: the run cannot go on.
    """
    environment.process_exit_code = DISK_FULL_EXIT_CODE if isinstance(exc, DiskFullError) else 1
    if is_worker(environment.runner) and os.environ.get(PARENT_PID_ENV):
        os.kill(os.getppid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)


BAD_OPTIONS_NAME = "tfsbench options"  # the Failures tab's entry for options the run cannot start with


def show_bad_options(environment: Any, exc: Exception) -> None:
    """Options changed in the web UI that cannot run: say why where the user looks, and stop the run.

    Headless runs never get here (``on_init`` exits 2 first). The reason goes into the Failures
    tab (and Locust's log); the run stops instead of staying RUNNING with users that do nothing.
    """
    log.error("tfsbench: %s", exc)
    sys.stderr.write(f"tfsbench: {exc}\n")
    environment.events.request.fire(
        request_type="OPTIONS",
        name=BAD_OPTIONS_NAME,
        response_time=0,
        response_length=0,
        exception=exc,
        context={},
    )
    runner = environment.runner
    if runner is not None and not is_worker(runner):
        import gevent  # lazy: only inside a Locust process (it patches the process on import)

        gevent.spawn(runner.stop)  # after the start that fired this returns


def _start_cpu_monitor(environment: Any, scenario: Scenario) -> None:
    """The generator watching itself: CPU share every second, event-loop lag every 10 ms, and
    libev's prepare/check watchers around every I/O poll (when the loop last idled)."""
    import gevent  # lazy: only inside a Locust process (it patches the process on import)

    loop = gevent.get_hub().loop
    watch = scenario.loop_watch
    # Lowest priority before the poll and highest after it: nothing of ours runs inside the gap.
    prepare, check = loop.prepare(ref=False, priority=-2), loop.check(ref=False, priority=2)
    prepare.start(lambda: watch.before_poll(time.perf_counter(), _voluntary_switches()))
    check.start(lambda: watch.after_poll(time.perf_counter(), _voluntary_switches()))
    scenario.loop_watchers = [prepare, check]

    def cpu_loop() -> None:
        while getattr(environment, SCENARIO_ATTR, None) is scenario:
            gevent.sleep(CPU_SAMPLE_S)
            scenario.on_cpu_sample()

    def relay_loop() -> None:
        assert scenario.relay is not None
        while getattr(environment, SCENARIO_ATTR, None) is scenario and not scenario.relay.finished:
            gevent.sleep(scenario.relay.batch_s / 2)
            scenario.relay.flush_if_due()

    def lag_loop() -> None:
        while getattr(environment, SCENARIO_ATTR, None) is scenario:
            asked = time.perf_counter()
            gevent.sleep(LOOP_TICK_S)
            scenario.loop_lag.record((time.perf_counter() - asked - LOOP_TICK_S) * 1000.0)

    gevent.spawn(cpu_loop)
    gevent.spawn(lag_loop)
    if scenario.relay is not None:
        gevent.spawn(relay_loop)


def _voluntary_switches() -> int:
    """This thread's voluntary context switches: it blocked (in a poll: nothing was ready)."""
    return resource.getrusage(_RUSAGE).ru_nvcsw


def close_scenario(environment: Any, send_late: bool = True) -> None:
    scenario = getattr(environment, SCENARIO_ATTR, None)
    if scenario is not None:
        setattr(environment, SCENARIO_ATTR, None)
        for watcher in scenario.loop_watchers:
            watcher.stop()
        scenario.close(send_late)


def _send_late(environment: Any) -> None:
    scenario = getattr(environment, SCENARIO_ATTR, None)
    if scenario is not None and scenario.relay is not None:
        scenario.relay.send_late()


def on_test_stopping(environment: Any) -> None:
    """Before Locust stops the users: sends due after this moment are not owed."""
    scenario = getattr(environment, SCENARIO_ATTR, None)
    if scenario is not None:
        scenario.on_stopping()


def on_test_stop(environment: Any) -> None:
    scenario = getattr(environment, SCENARIO_ATTR, None)
    if scenario is not None:
        scenario.on_stopping()  # a stop without test_stopping (a shape that ended) stops now
        scenario.count_unanswered()
        scenario.on_cpu_sample(final=True)
        if is_worker(environment.runner):
            # Final stats first, then the final batch, on one connection: once the master has
            # the batch, Locust's count there includes every request recorded.
            try:
                environment.runner._send_stats()
            except Exception as exc:  # the master may be gone; the batch below says what it can
                log.warning("tfsbench: final stats not sent to the master: %s", exc)
            scenario.finish_relay()
        else:
            scenario.save_load_stats(finished=True)
    elif is_master(environment.runner):
        collector.finish_workers(environment)


def stop_users(environment: Any, wait_s: float = STOP_WAIT_S) -> None:
    """Stop this process's users the way Locust's own stop does, if they still run.

    On SIGTERM or Ctrl-C Locust fires ``quitting`` while users still run and stops them only
    afterwards: with ``--stop-timeout`` the requests in flight then complete and Locust counts
    them. Stopping here first (``--stop-timeout`` applies: finish or be killed) lets those
    requests reach the records while the writer is still open, so rows equal Locust's count.
    A killed user's request fires no request event, so it is neither counted nor recorded.
    """
    # lazy: Locust and gevent only inside a Locust process (they patch the process on import)
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


def quit_workers(environment: Any, wait_s: float = STOP_WAIT_S) -> None:
    """Master: tell the workers to quit, and wait until each has reported back.

    A worker answering ``quit`` stops its users (in-flight requests complete), sends its final
    stats and its last batch of records, then tells the master it quit, in that order on one
    connection; so once no worker is left, the master has counted every recorded request.
    Locust's own quit waits only 0.5 s for the final stats. The wait ends early when the
    master's message loop is gone (after a --run-time stop, Locust's quit already ran).
    """
    # lazy: Locust and gevent only inside a Locust process (they patch the process on import)
    import gevent
    from locust.rpc import Message

    runner = environment.runner
    clients = list(runner.clients.all)
    for client in clients:
        # Locust's Message.__init__ is unannotated.
        runner.server.send_to_client(Message("quit", None, client.id))  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + wait_s
    while clients and runner.clients.all and len(runner.greenlet) and time.monotonic() < deadline:
        gevent.sleep(0.1)


def on_quitting(environment: Any) -> None:
    """Stop users still running and close this process's records; the master collects its workers'.

    Registered from the locustfile's init listener, so it runs before the runner's own
    ``quitting`` listener (Locust fires ``quitting`` in reverse order of registration).
    """
    stop_users(environment)
    close_scenario(environment)
    if not is_master(environment.runner):
        return
    collector.finish_workers(environment)  # every worker's last batch, bounded; names the lost
    if not getattr(environment, "tfsbench_keep_workers", False):
        quit_workers(environment)


def on_sends_done(environment: Any) -> None:
    """``--max-requests`` reached in this process: quit once the requests in flight are answered.

    Locust's quit stops the users with ``--stop-timeout``, so each request in flight completes
    and is recorded; a headless run then ends as after ``--run-time``. A worker only stops
    sending and tells its master, which quits once every worker of the test has said so.
    """
    runner = environment.runner
    if runner is None:
        return
    if is_worker(runner):
        scenario: Scenario | None = getattr(environment, SCENARIO_ATTR, None)
        if scenario is not None and not scenario.sends_done_told:
            scenario.sends_done_told = True
            try:
                runner.send_message(relay.SENDS_DONE_MSG, None)
            except Exception as exc:  # the master is gone: it ends the test itself, or never will
                log.warning("tfsbench: could not tell the master this worker's requests are sent: %s", exc)
        return
    _quit_at_max_requests(environment)


def _quit_at_max_requests(environment: Any) -> None:
    if getattr(environment, "tfsbench_quitting", False):
        return
    environment.tfsbench_quitting = True
    import gevent  # lazy: only inside a Locust process (it patches the process on import)

    log.info("tfsbench: --max-requests reached, stopping")
    gevent.spawn(environment.runner.quit)


def register_sends_done(environment: Any) -> None:
    """Master: quit once every worker that the test started on has sent its share of ``--max-requests``."""
    sink: collector.RecordCollector = getattr(environment, collector.COLLECTOR_ATTR)  # registered just before
    done: set[str] = set()

    def on_test_start(**_kwargs: Any) -> None:
        done.clear()

    def on_worker_done(environment: Any, msg: Any, **_kwargs: Any) -> None:
        done.add(msg.node_id)
        if sink.expected <= done:  # every worker the test started on
            _quit_at_max_requests(environment)

    environment.events.test_start.add_listener(on_test_start)
    environment.runner.register_message(relay.SENDS_DONE_MSG, on_worker_done)


def shape_tick(shape: Any) -> tuple[int, float] | None:
    """``LoadTestShape.tick`` for ``--shape-steps``: hold -u users for each step, then stop."""
    options = shape.runner.environment.parsed_options
    config = config_from_options(options)
    if shape.get_run_time() >= len(config.steps) * config.step_time_s:
        return None
    users = int(getattr(options, "num_users", None) or 1)
    return users, float(getattr(options, "spawn_rate", None) or users)
