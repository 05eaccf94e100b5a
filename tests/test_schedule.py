"""bench.schedule: open-model send times at the target rate, shared across users."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.schedule import LATE_TOLERANCE_MS, Arrival, UserSchedule, is_late, parse_arrival, send_lag_ms


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


def test_constant_schedule_is_evenly_spaced_at_the_users_share() -> None:
    times = _times(Arrival("constant", 100.0), users=4, count=50, seed=1)
    gaps = np.diff(times)
    assert gaps == pytest.approx(np.full(49, 0.04))  # 100 req/s over 4 users = 25 req/s each
    assert 0 <= times[0] < 0.04  # random phase within one interval


def test_users_together_reach_the_total_rate() -> None:
    users, rate, horizon = 8, 400.0, 20.0
    sends = 0
    for seed in range(users):
        times = _times(Arrival("poisson", rate), users=users, count=5000, seed=seed)
        sends += int((times < horizon).sum())
    assert sends / horizon == pytest.approx(rate, rel=0.05)


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
