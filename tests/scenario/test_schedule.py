"""bench.scenario.schedule: open-model send times at the target rate, shared across users."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.scenario.loop_lag import LoopLag, LoopWatch
from bench.scenario.schedule import (
    Arrival,
    LagAccount,
    UserSchedule,
    global_user_index,
    is_late,
    parse_arrival,
    send_lag_ms,
)
from bench.store.lateness import LATE_TOLERANCE_MS


def _times(arrival: Arrival, users: int, count: int, seed: int) -> np.ndarray:
    schedule = UserSchedule(arrival, users=users, seed=seed, start_s=0.0)
    return np.array([schedule.next_send() for _ in range(count)])


def test_parse_arrival_accepts_the_three_models() -> None:
    assert parse_arrival("closed", None, "0.5") == Arrival("closed", None, 0.5)
    assert parse_arrival("poisson", "200") == Arrival("poisson", 200.0, 0.0)
    assert parse_arrival("CONSTANT", 5) == Arrival("constant", 5.0, 0.0)


@pytest.mark.parametrize(
    ("model", "rate", "think", "message"),
    [
        pytest.param("burst", None, 0, "unknown arrival model 'burst'", id="unknown"),
        pytest.param("poisson", None, 0, "needs a positive --rate", id="open-without-rate"),
        pytest.param("constant", "-3", 0, "needs a positive --rate", id="negative-rate"),
        pytest.param("constant", "fast", 0, "--rate must be a number", id="text-rate"),
        pytest.param("closed", "10", 0, "--rate needs an open arrival model", id="rate-with-closed"),
        pytest.param("closed", None, "-1", "--think-time must be zero or positive", id="negative-think"),
        pytest.param("poisson", "10", "1", "closed model only", id="think-with-open"),
    ],
)
def test_parse_arrival_rejects_bad_values(model: str, rate: str | None, think: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_arrival(model, rate, think)


def _merged(
    arrival: Arrival, users: int, horizon_s: float, starts_s: list[float], indexes: Sequence[int | None], seed: int = 0
) -> np.ndarray:
    """Intended sends of ``users`` schedules on one timeline (epoch 0), sorted, up to ``horizon_s``."""
    sends = []
    for user, (start, index) in enumerate(zip(starts_s, indexes, strict=True)):
        schedule = UserSchedule(arrival, users=users, seed=seed + user, start_s=start, user_index=index, epoch_s=0.0)
        while (t := schedule.next_send()) < horizon_s:
            sends.append(t)
    return np.sort(np.array(sends))


def test_constant_schedule_is_evenly_spaced_at_the_users_share() -> None:
    times = _times(Arrival("constant", 100.0), users=4, count=50, seed=1)
    gaps = np.diff(times)
    assert gaps == pytest.approx(np.full(49, 0.04))  # 100 req/s over 4 users = 25 req/s each
    assert 0 <= times[0] < 0.04  # no index known: random phase within one interval


@pytest.mark.parametrize(("users", "rate"), [(1, 10.0), (8, 40.0), (7, 123.0), (64, 1000.0)])
def test_constant_users_merge_into_one_evenly_spaced_stream(users: int, rate: float) -> None:
    # Users start during a spawn ramp (each within the first second, in spawn order), on one grid.
    starts = [i * 0.9 / users for i in range(users)]
    times = _merged(Arrival("constant", rate), users, 30.0, starts, list(range(users)))
    steady = times[times >= 1.0]  # every user has started
    gaps = np.diff(steady)
    assert len(steady) == pytest.approx(29.0 * rate, abs=2)
    assert gaps == pytest.approx(np.full(len(gaps), 1.0 / rate), rel=1e-6)


def test_constant_user_that_starts_late_takes_its_next_slot() -> None:
    arrival = Arrival("constant", 10.0)  # 4 users: 2.5 req/s each, user 1 on 0.1 + 0.4 j
    schedule = UserSchedule(arrival, users=4, start_s=1.05, user_index=1, epoch_s=0.0)
    assert [schedule.next_send() for _ in range(3)] == pytest.approx([1.3, 1.7, 2.1])
    on_slot = UserSchedule(arrival, users=4, start_s=0.5, user_index=5, epoch_s=0.0)  # index wraps to 1
    assert on_slot.next_send() == pytest.approx(0.5)


def test_constant_random_phases_bunch_sends_together() -> None:
    # What the user index fixes: 8 users with random phases leave some sends much closer than 1/rate.
    times = _merged(Arrival("constant", 40.0), 8, 10.0, [0.0] * 8, [None] * 8, seed=11)
    assert np.diff(times).min() < 0.5 / 40.0


@pytest.mark.parametrize(("users", "workers"), [(8, 2), (12, 3), (5, 1)])
def test_constant_users_across_processes_interleave(users: int, workers: int) -> None:
    # Locust deals users to workers in turn; each worker numbers its own users 0, 1, ...
    per_worker = [list(range(users))[w::workers] for w in range(workers)]
    indexes = [global_user_index(local, w, workers) for w, mine in enumerate(per_worker) for local in range(len(mine))]
    assert sorted(indexes) == list(range(users))
    rate = 50.0
    times = _merged(Arrival("constant", rate), users, 20.0, [0.0] * users, indexes)
    assert np.diff(times) == pytest.approx(np.full(len(times) - 1, 1.0 / rate), rel=1e-6)


def test_users_together_reach_the_total_rate() -> None:
    users, rate, horizon = 8, 400.0, 20.0
    sends = 0
    for seed in range(users):
        times = _times(Arrival("poisson", rate), users=users, count=5000, seed=seed)
        sends += int((times < horizon).sum())
    assert sends / horizon == pytest.approx(rate, rel=0.05)


def test_poisson_users_merge_into_a_poisson_stream_at_the_total_rate() -> None:
    users, rate, horizon = 16, 200.0, 100.0
    times = _merged(Arrival("poisson", rate), users, horizon, [0.0] * users, list(range(users)), seed=5)
    gaps = np.diff(times)
    assert len(times) / horizon == pytest.approx(rate, rel=0.03)
    # Merged independent Poisson streams are Poisson: exponential gaps, std = mean = 1/rate.
    assert gaps.mean() == pytest.approx(1.0 / rate, rel=0.03)
    assert gaps.std() == pytest.approx(1.0 / rate, rel=0.05)
    counts = np.histogram(times, bins=int(horizon))[0]  # sends per second: Poisson, variance = mean
    assert counts.var() == pytest.approx(rate, rel=0.3)


def test_poisson_gaps_are_exponential() -> None:
    gaps = np.diff(_times(Arrival("poisson", 50.0), users=1, count=20001, seed=3))
    assert gaps.mean() == pytest.approx(0.02, rel=0.05)
    # Exponential: standard deviation equals the mean (a constant schedule would give 0).
    assert gaps.std() == pytest.approx(0.02, rel=0.05)
    assert (gaps > 0).all()


def test_same_seed_same_schedule() -> None:
    a = _times(Arrival("poisson", 10.0), users=2, count=10, seed=9)
    b = _times(Arrival("poisson", 10.0), users=2, count=10, seed=9)
    assert (a == b).all()


def test_schedule_needs_an_open_model() -> None:
    with pytest.raises(ConfigError, match="open arrival model"):
        UserSchedule(Arrival("closed"), users=1)


def test_lag_and_lateness() -> None:
    assert send_lag_ms(10.0, 10.5) == pytest.approx(500.0)
    assert send_lag_ms(10.0, 9.0) == 0.0
    assert not is_late(LATE_TOLERANCE_MS)
    assert is_late(LATE_TOLERANCE_MS + 0.1)


def test_unanswered_slots_are_the_open_one_and_those_never_handed_out() -> None:
    # 10 req/s over 2 users: each user's slots are 0.2 s apart, user 1 at 0.1, 0.3, 0.5, ...
    schedule = UserSchedule(Arrival("constant", 10.0), users=2, user_index=1, start_s=0.0, epoch_s=0.0)
    assert schedule.next_send() == pytest.approx(0.1)
    schedule.finished()  # answered and recorded
    assert schedule.next_send() == pytest.approx(0.3)  # handed out, never finished: owed
    owed = schedule.unanswered_until(1.0)
    np.testing.assert_allclose(owed, [0.3, 0.5, 0.7, 0.9])
    assert schedule.unanswered_until(5.0).size == 0  # counted once: the schedule has ended


def test_poisson_unanswered_slots_continue_the_stream_at_its_rate() -> None:
    schedule = UserSchedule(Arrival("poisson", 1000.0), users=1, seed=4, start_s=0.0)
    first = schedule.next_send()
    schedule.finished()
    owed = schedule.unanswered_until(20.0)  # 20 s at 1000/s: the user sent one and fell behind for good
    assert owed.size == pytest.approx(20_000, rel=0.03)
    assert owed.min() > first
    assert owed.max() <= 20.0
    assert np.all(np.diff(owed) >= 0)


def test_lag_of_a_free_user_is_the_generators() -> None:
    account = LagAccount()
    assert account.on_send(1.000, 1.000) == (0.0, "idle")
    account.on_done(1.000, 1.005, generator_ms=0.2)
    lag, cause = account.on_send(1.100, 1.130)  # free since 1.005, woke 30 ms late
    assert lag == pytest.approx(30.0)
    assert cause == "idle"


def test_lag_of_a_user_held_by_a_slow_reply_is_the_servers() -> None:
    account = LagAccount()
    account.on_send(1.000, 1.000)
    account.on_done(1.000, 1.250, generator_ms=0.5)  # 250 ms, the loop idled until the reply came
    lag, cause = account.on_send(1.100, 1.251)  # the slot came while the user still waited
    assert lag == pytest.approx(151.0)
    assert cause == "busy"


def test_a_user_behind_because_of_the_generator_stays_the_generators() -> None:
    # The process is overloaded: each request takes 60 ms, all of it waiting for the loop, and
    # slots are 20 ms apart. The user falls further behind each time and is always busy at its
    # slot, but the lateness it carries is the generator's.
    account = LagAccount()
    started = 0.0
    causes = []
    for k in range(20):
        intended = k * 0.020
        lag, cause = account.on_send(intended, max(intended, started))
        causes.append(cause)
        done = max(intended, started) + 0.060
        account.on_done(max(intended, started), done, generator_ms=60.0)
        started = done + 0.0005
    assert set(causes) == {"idle"}
    assert lag == pytest.approx(19 * 40.0 + 19 * 0.5, rel=0.01)


def test_loop_watch_bounds_the_generators_part_by_its_last_idle_moment() -> None:
    watch = LoopWatch()
    watch.before_poll(1.000, 7)
    watch.after_poll(1.00002, 8)  # returned at once: work was pending, not an idle moment
    watch.before_poll(1.001, 8)
    watch.after_poll(1.009, 8)  # 8 ms, but preempted by the kernel (no voluntary switch): not idle
    assert watch.last_idle_end_s == float("-inf")
    assert watch.generator_ms(1.0, 1.1) == pytest.approx(100.0)  # never idled: all of it ours
    watch.before_poll(1.010, 8)
    watch.after_poll(1.095, 9)  # blocked 85 ms: nothing was ready, the reply had not come
    assert watch.idle_s == pytest.approx(0.085)
    assert watch.generator_ms(1.0, 1.1) == pytest.approx(5.0)
    assert watch.generator_ms(1.097, 1.1) == pytest.approx(3.0)  # sent after the idle moment


def test_loop_lag_keeps_p99_and_max() -> None:
    lag = LoopLag()
    for value in [0.1] * 98 + [5.0, 50.0]:
        lag.record(value)
    lag.record(-1.0)  # a timer that woke early is on time
    assert lag.max_ms == 50.0
    assert lag.samples == 101
    assert 0.1 <= lag.p99_ms <= 50.0
