"""bench.store.percentiles: distribution-free 95 % intervals for percentiles, from order statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.store.percentiles import ROUGH_WIDTH_SHARE, order_statistic_ranks, percentile_ci, percentiles_ci


def test_ranks_match_the_binomial_tables() -> None:
    # The classic median interval for n = 1000 (ranks 469 and 532), and the smallest samples that
    # bound a p99 from above at 95 %: 1 - 0.99^n >= 0.975 first holds at n = 368 (the maximum).
    assert order_statistic_ranks(1000, 50) == (469, 532)
    assert order_statistic_ranks(367, 99)[1] is None
    assert order_statistic_ranks(368, 99) == (360, 368)
    assert order_statistic_ranks(100, 99) == (97, None)
    assert order_statistic_ranks(10, 50) == (2, 9)
    assert order_statistic_ranks(0, 50) == (None, None)
    # Large n: close to the normal approximation n q +- 1.96 sqrt(n q (1 - q)).
    low, high = order_statistic_ranks(1_000_000, 99)
    assert low is not None
    assert high is not None
    half = 1.96 * math.sqrt(1e6 * 0.99 * 0.01)
    assert low == pytest.approx(990_000 - half, abs=3)
    assert high == pytest.approx(990_000 + half, abs=3)


@pytest.mark.parametrize("q", [50, 90, 99])
@pytest.mark.parametrize("n", [50, 400, 2000])
def test_intervals_cover_the_true_percentile_95_percent_of_the_time(q: int, n: int) -> None:
    # Seeded lognormal latencies (skewed, like real ones): the true quantile is known exactly.
    rng = np.random.default_rng(q * 10_000 + n)
    sigma = 0.8
    true = math.exp(sigma * _normal_quantile(q / 100))
    trials = 600
    covered = bounded = 0
    for _ in range(trials):
        ci = percentile_ci(rng.lognormal(0.0, sigma, size=n), q)
        if ci.bounded:
            bounded += 1
            covered += ci.low <= true <= ci.high
    if n * (1 - q / 100) < 3.7:  # too few samples above the p99 to bound it (n < 368)
        assert bounded == 0
        return
    assert bounded == trials
    # At least 95 % by construction (discrete ranks make it a little more); 600 trials: +-2 %.
    assert 0.93 <= covered / trials <= 0.995


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF by bisection on math.erf (enough for a test)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def test_value_is_numpys_percentile_and_the_ends_are_samples() -> None:
    values = np.random.default_rng(3).exponential(10.0, size=5000)
    cis = percentiles_ci(values, (50, 99))
    for ci, q in zip(cis, (50, 99), strict=True):
        assert ci.value == pytest.approx(np.percentile(values, q))
        assert ci.low in values
        assert ci.high in values
        assert ci.low <= ci.value <= ci.high
        assert ci.samples == 5000
    assert not cis[0].rough
    assert percentile_ci(values, 50) == cis[0]


def test_rough_means_open_or_wider_than_half_the_value() -> None:
    assert percentile_ci(np.arange(1.0, 101.0), 99).rough  # no upper end from 100 samples
    assert percentile_ci(np.array([]), 50).rough
    tight = percentile_ci(np.random.default_rng(1).normal(100.0, 1.0, size=1000), 50)
    assert not tight.rough
    spread = percentile_ci(np.random.default_rng(1).exponential(1.0, size=60), 90)
    assert spread.bounded
    assert spread.rough == ((spread.high - spread.low) > ROUGH_WIDTH_SHARE * spread.value)
