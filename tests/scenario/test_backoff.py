"""A dead server gets a few refused connections per user and second, not a storm of error rows.

The back-off rule itself (doubling to a cap, reset by any answer, open-model slots dropped
rather than burst) on a fake clock, then real Locust against a loopback port nobody listens on,
and the web UI's default bind address.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from bench.ports import free_port
from bench.scenario.predict_user import BACKOFF_FIRST_S, BACKOFF_MAX_S, UserState, back_off
from bench.scenario.schedule import UserSchedule, parse_arrival
from bench.store.records import read_records
from bench.store.summary import summarize
from tests.helpers.paths import REPO
from tests.scenario.test_locust import run_locust


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_refusals_double_the_wait_up_to_the_cap_and_an_answer_resets_it() -> None:
    import random

    clock = FakeClock()
    state = UserState(rng=random.Random(1))
    refused = ConnectionRefusedError(111, "Connection refused")
    waits = [back_off(state, refused, clock.sleep) for _ in range(8)]
    assert waits[0] == BACKOFF_FIRST_S
    assert waits[1] == 2 * BACKOFF_FIRST_S
    assert max(waits) == waits[-1] == BACKOFF_MAX_S
    assert clock.now == 100.0 + sum(waits)
    assert back_off(state, None, clock.sleep) == 0.0  # an answer (any status) resets
    assert back_off(state, refused, clock.sleep) == BACKOFF_FIRST_S
    assert back_off(state, TimeoutError("timed out"), clock.sleep) == 0.0  # a timeout is latency, not a refusal


def test_open_model_slots_due_during_a_back_off_are_dropped_not_burst() -> None:
    for model in ("constant", "poisson"):
        clock = FakeClock()
        schedule = UserSchedule(parse_arrival(model, 100.0), users=1, seed=7, clock=clock)
        first = schedule.next_send()
        clock.now = first + 1.0  # a one-second back-off: ~100 slots came due
        skipped = schedule.skip_until(clock.now)
        assert 60 < skipped < 140
        assert schedule.next_send() >= clock.now


def test_locust_against_a_dead_port_backs_off(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = run_locust(dead, tmp_path, "--batch-sizes", "1", "--encodings", "row-orjson", run_time="3s", users=4)
    rows = read_records(result["records"])
    assert len(rows) > 0
    assert (rows["status"] == 0).all()
    assert rows["error"].str.contains("refused").all()
    # Doubling from 50 ms to 1 s: at most ~7 attempts per user in 3 s (hundreds without a back-off).
    assert len(rows) <= 4 * 8
    summary = summarize(rows).iloc[0]
    assert summary["errors"] == len(rows)  # errors, counted apart from the latency samples
    assert summary["samples"] == 0
    assert np.isnan(summary["p99_ms"])


def test_the_web_ui_listens_on_loopback_unless_asked(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "locust", "-f", "locustfiles/predict.py", "--web-port", str(port),
               "--host", "http://127.0.0.1:9"]  # fmt: skip
    locust = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        addresses: list[str] = []
        while time.monotonic() < deadline and not addresses:
            time.sleep(0.3)
            addresses = [
                c.laddr.ip
                for c in psutil.Process(locust.pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
        assert addresses == ["127.0.0.1"]
    finally:
        locust.terminate()
        locust.wait(timeout=30)
